"""Which encoder a store's model runs on here, and what makes it: the int8 ONNX towers on
a CPU (exported once per model and machine, see ``onnx_int8.py``), else open_clip on torch.

The Engine asks this module for an encoder and for a description of how it encodes; it
decides nothing about models itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ModelError
from .base import Encoder
from .onnx_backend.export_records import (
    Agreement,
    TextExport,
    TowerExport,
    current_export,
    export_directory,
    mark_text_not_exported,
    text_not_exported,
    this_machine,
)
from .onnx_backend.export_status import refused_export
from .onnx_backend.onnx_int8 import Int8Encoder, onnxruntime_available
from .profiles import ModelProfile

if TYPE_CHECKING:
    from pathlib import Path

    from .model_files import HubOptions, ModelFiles
    from .torch_backend.openclip import OpenClipEncoder

__all__ = ["EncoderAssembly"]

_NOT_A_CLIP_TEXT_TOWER = (
    "only causal CLIP text towers and Hugging Face text towers are exported to int8; "
    "this one stays on torch"
)


class EncoderAssembly:
    """Builds the encoder that ``settings`` ask for. ``notices`` collects what a user should
    hear (a one-time export, a tower that stays on torch); ``on_prepare`` is called when a
    one-time export starts, so that an indexing run can show it as its own stage."""

    def __init__(
        self,
        settings: Settings,
        *,
        notices: list[str],
        on_prepare: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self._notices = notices
        self._on_prepare = on_prepare

    def encoder(self, profile: ModelProfile) -> Encoder:
        """The int8 image path where it applies, else torch's."""
        if not self._int8_wanted():
            return self.torch_encoder(profile)
        directory = export_directory(
            self.settings.resolved_cache_dir, profile.name, self.settings.checkpoint
        )
        built: list[Encoder] = []

        def torch_encoder() -> Encoder:
            if not built:
                built.append(self.torch_encoder(profile))
            return built[0]

        # Where a GPU may be there, torch is asked where it would run (not the CPU: no int8).
        ask_torch = self.settings.device == "auto" and self.settings.precision == "auto"
        first = torch_encoder() if ask_torch and _accelerator_likely() else None
        if first is not None and getattr(getattr(first, "device", None), "type", "cpu") != "cpu":
            return first
        files: list[ModelFiles] = []

        def model_files() -> ModelFiles:
            """The model's files, found once (without torch) when first needed."""
            if not files:
                files.append(self.model_files(profile))
            return files[0]

        cached = current_export(directory)
        if cached is not None:
            # Everything an indexing run needs is in the record: torch is never imported.
            identity = (cached.profile, cached.fingerprint, cached.dim, cached.preprocess.size)
        elif first is not None:
            identity = (first.profile_name, first.fingerprint, first.dim, _input_size(first))
        else:
            # Found without torch: a first run exports without it where it can (below).
            found = model_files()
            identity = (profile.name, found.fingerprint, found.dim, found.image_size)

        def prepare(again: bool) -> TowerExport:
            export = None if again else current_export(directory)
            text_settled = TextExport.load(directory) or text_not_exported(directory)
            # (Re-making the image export replaces the folder, text graphs included.)
            if export is None or not text_settled:
                self._on_prepare()
                if export is None:
                    export = self._prepare_image(profile, model_files(), torch_encoder, directory)
                self._prepare_text(model_files(), torch_encoder, directory)
            return export

        name, fingerprint, dim, size = identity
        return Int8Encoder(
            profile_name=name,
            fingerprint=fingerprint,
            dim=dim,
            input_size=size,
            prepare=prepare,
            torch_encoder=torch_encoder,
            export_dir=directory,
            forced=self.settings.precision == "int8",
        )

    def _prepare_image(
        self,
        profile: ModelProfile,
        files: ModelFiles,
        torch_encoder: Callable[[], Encoder],
        directory: Path,
    ) -> TowerExport:
        refused = refused_export(
            self.settings.resolved_cache_dir, profile.name, self.settings.checkpoint
        )
        export = _export_image(files, torch_encoder, directory)
        self._notices.append(
            f"Prepared the int8 image tower of {export.profile} for this CPU in "
            f"{export.export_seconds:.0f} s ({export.agreement.describe()}); it "
            f"is cached in {directory}."
            + (f" It was made anew because {refused}." if refused else "")
        )
        return export

    def _prepare_text(
        self, files: ModelFiles, torch_encoder: Callable[[], Encoder], directory: Path
    ) -> None:
        # Made while indexing, so that no query ever waits for an export. If it fails,
        # queries stay on torch; indexing goes on.
        try:
            text = self._export_text(files, torch_encoder, directory)
            if text is None:
                mark_text_not_exported(directory, _NOT_A_CLIP_TEXT_TOWER)
        except ModelError as exc:
            text = None
            mark_text_not_exported(directory, str(exc))
            self._notices.append(f"{exc} Texts stay on torch.")
        if text is not None:
            self._notices.append(
                f"Prepared its int8 text tower too ({text.agreement.describe('texts')})."
            )

    def _export_text(
        self, files: ModelFiles, torch_encoder: Callable[[], Encoder], directory: Path
    ) -> TextExport | None:
        """The same for the text tower; None for towers that have no int8 form here. A
        Hugging Face tower (XLM-R, ...) is traced in a child process (hf_text_export.py)."""
        from .onnx_backend import direct_export, onnx_export

        if files.text_cfg.get("hf_model_name"):
            from .onnx_backend.hf_text_export import HFTextJob, make_int8_hf_text_export

            job = HFTextJob(files.profile.name, self.settings.checkpoint, self.hub(), directory)
            return make_int8_hf_text_export(job)
        spec = direct_export.direct_text_spec(files)
        if spec is not None:
            return direct_export.make_int8_text_export_direct(files, spec, directory)
        return onnx_export.make_int8_text_export(_open_clip(torch_encoder), directory)

    def hub(self) -> HubOptions:
        from .model_files import HubOptions

        return HubOptions(
            cache_dir=self.settings.model_cache_dir,
            endpoint=self.settings.hub_endpoint,
            probe_timeout=self.settings.hub_probe_timeout,
        )

    def model_files(self, profile: ModelProfile) -> ModelFiles:
        from .model_files import resolve_files

        return resolve_files(profile, self.settings.checkpoint, self.hub())

    def _int8_wanted(self) -> bool:
        precision, device = self.settings.precision, self.settings.device
        if precision == "int8":
            if not onnxruntime_available():
                raise ModelError(
                    "--precision int8 needs ONNX Runtime, which is not installed: "
                    "pip install onnxruntime onnx."
                )
            return True
        return precision == "auto" and device in ("auto", "cpu") and onnxruntime_available()

    def torch_encoder(self, profile: ModelProfile) -> Encoder:
        # Imported here: torch and open_clip take seconds to import, and most commands
        # (a re-run with nothing new, info, a query answered from the cache) need no model.
        from .torch_backend.openclip import OpenClipEncoder

        return OpenClipEncoder(
            profile,
            checkpoint=self.settings.checkpoint,
            device=self.settings.device,
            precision=self.settings.precision,
            hub=self.hub(),
        )

    def encodings(self, profile: str | None) -> dict[str, str]:
        """What encodes images and texts, read from the cached export (no model is loaded)."""
        precision = self.settings.precision
        if profile is None:
            return {}
        if precision in ("fp32", "bf16"):
            return {"image_encoding": f"torch {precision}", "text_encoding": f"torch {precision}"}
        if self.settings.device not in ("auto", "cpu") or not onnxruntime_available():
            return {"image_encoding": "torch", "text_encoding": "torch"}
        cache, checkpoint = self.settings.resolved_cache_dir, self.settings.checkpoint
        directory = export_directory(cache, profile, checkpoint)
        image, text = current_export(directory), TextExport.load(directory)
        if image is None:
            why = refused_export(cache, profile, checkpoint)
            pending = (
                "torch until an indexing run exports the int8 tower ("
                + (why or f"none is cached in {directory.parent} for this CPU yet")
                + ")"
            )
            return {"image_encoding": pending, "text_encoding": pending}
        forced = precision == "int8"

        def verdict(agreement: Agreement, what: str, made_by: str) -> str:
            measured = agreement.describe(what)
            if agreement.holds or forced:
                return f"int8 ({measured}; {made_by})"
            return (
                f"torch: the int8 tower cached at {directory} misses the agreement gate on "
                f"this CPU, {this_machine()} ({agreement.shortfall()}; {measured}); "
                "--precision int8 uses it anyway"
            )

        return {
            "image_encoding": verdict(image.agreement, "pictures", image.made_by),
            "text_encoding": (
                verdict(text.agreement, "texts", text.made_by)
                if text is not None
                else f"torch ({text_not_exported(directory) or 'no int8 text export yet'})"
            ),
        }


def _export_image(
    files: ModelFiles, torch_encoder: Callable[[], Encoder], directory: Path
) -> TowerExport:
    """The int8 image tower, written from the checkpoint where the graph writer knows the
    model (no torch), else traced from the torch model."""
    from .onnx_backend import direct_export, onnx_export

    spec = direct_export.direct_image_spec(files)
    if spec is not None:
        return direct_export.make_int8_export_direct(files, spec, directory)
    return onnx_export.make_int8_export(_open_clip(torch_encoder), directory)


def _input_size(encoder: Encoder) -> int:
    return int(getattr(encoder, "input_size", 224))


def _open_clip(torch_encoder: Callable[[], Encoder]) -> OpenClipEncoder:
    """The torch encoder, which a traced export is made from (torch is imported here)."""
    from .torch_backend.openclip import OpenClipEncoder

    source = torch_encoder()
    assert isinstance(source, OpenClipEncoder)
    return source


def _accelerator_likely() -> bool:
    """Whether torch might pick a GPU, guessed without importing torch (1.5 s).

    A CUDA or ROCm driver exposes device nodes; on macOS torch may pick MPS. Where this
    says yes, torch is asked, and the int8 CPU path is taken only if it answers "cpu".
    """
    if sys.platform == "darwin":
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
