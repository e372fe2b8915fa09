"""The child process of ``bench.export_routes``: one route's int8 export of one tower.

``python -m bench.export_routes child ROUTE TOWER DIR`` runs :func:`export_tower` in a fresh
interpreter, so that the parent's ``bench.proc.run`` times and samples that export alone
(interpreter start and imports included). The routes other than ``written`` are xsearch's
torch export with its steps swapped in place here: ONNX Runtime's own quantiser loop
(``library``), torch's dynamo exporter (``dynamo``), and timers around the two library steps.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PROFILE", "export_tower"]

PROFILE = "clip-b32-en"


def _unpatched_quantiser() -> None:
    """ONNX Runtime's own per-channel loop: ``_quantise`` imports the patch at each call."""
    from xsearch.encoders.onnx_backend import per_channel

    per_channel.vectorised_per_channel = contextlib.nullcontext  # type: ignore[assignment]


def _dynamo_exporter() -> None:
    """``torch.onnx.export(dynamo=True)`` in place of the TorchScript exporter."""
    import torch

    from xsearch.encoders.onnx_backend import onnx_export
    from xsearch.encoders.torch_backend import text_encoding

    def export(
        tower: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str = "pixels"
    ) -> None:
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        trim = text_encoding._trailing_padding_trimmed
        # torch.export refuses the text tower's data-dependent trim of trailing padding; the
        # example has none, so the trim is the identity the TorchScript tracer records too.
        text_encoding._trailing_padding_trimmed = lambda tokens, pad_id: tokens
        try:
            with torch.no_grad():
                program = torch.onnx.export(
                    tower,
                    (example,),
                    input_names=[input_name],
                    output_names=["vectors"],
                    dynamic_axes=(
                        {"pixels": {0: "batch"}, "vectors": {0: "batch"}}
                        if input_name == "pixels"
                        else None
                    ),
                    opset_version=18,
                    dynamo=True,
                    optimize=True,
                    verbose=False,
                )
            assert program is not None
            program.save(str(path))
        finally:
            text_encoding._trailing_padding_trimmed = trim
            torch.backends.mha.set_fastpath_enabled(fastpath)

    onnx_export._export_onnx = export


def _timed_stages() -> dict[str, float]:
    """Seconds spent in the torch routes' two library steps, summed over their graphs."""
    from xsearch.encoders.onnx_backend import onnx_export

    spent = {"onnx_export_s": 0.0, "quantise_s": 0.0}
    for name, key in (("_export_onnx", "onnx_export_s"), ("_quantise", "quantise_s")):
        step = getattr(onnx_export, name)

        def timed(*args: Any, _step: Any = step, _key: str = key, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _step(*args, **kwargs)
            finally:
                spent[_key] += time.perf_counter() - started

        setattr(onnx_export, name, timed)
    return spent


def export_tower(route: str, tower: str, directory: Path, cache: Path) -> dict[str, Any]:
    from xsearch.encoders.model_files import HubOptions, resolve_files
    from xsearch.encoders.onnx_backend import direct_export, onnx_export
    from xsearch.encoders.profiles import get_profile

    profile = get_profile(PROFILE)
    hub = HubOptions(cache_dir=cache)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    if route == "written":
        files = resolve_files(profile, None, hub)
        if tower == "image":
            spec = direct_export.direct_image_spec(files)
            assert spec is not None, "the writer does not know this image tower"
            done: Any = direct_export.make_int8_export_direct(files, spec, directory)
        else:
            text_spec = direct_export.direct_text_spec(files)
            assert text_spec is not None, "the writer does not know this text tower"
            directory.mkdir(parents=True, exist_ok=True)
            done = direct_export.make_int8_text_export_direct(files, text_spec, directory)
    else:
        if route in ("library", "dynamo"):
            _unpatched_quantiser()
        if route == "dynamo":
            _dynamo_exporter()
        stages = _timed_stages()
        from xsearch.encoders.torch_backend.openclip import OpenClipEncoder

        encoder = OpenClipEncoder(profile, hub=hub, device="cpu")
        if tower == "image":
            done = onnx_export.make_int8_export(encoder, directory)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            done = onnx_export.make_int8_text_export(encoder, directory)
            assert done is not None, "this text tower has no traced int8 form"
    agreement = done.agreement
    return {
        "export_s": time.perf_counter() - started,
        **stages,
        "torch_imported": "torch" in sys.modules,
        "own_gate": {"cosine_min": agreement.cosine_min, "cosine_mean": agreement.cosine_mean},
    }
