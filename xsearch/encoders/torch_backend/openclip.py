"""The open_clip adapter of the :class:`~xsearch.encoders.base.Encoder` port."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...config import PRECISIONS
from ...errors import ModelError
from ..base import Vectors, l2_normalise
from ..checkpoint import read_header
from ..cpu import cpu_has_any
from ..model_files import HubOptions, missing_hub_files, required_hub_files, resolve_files
from ..profiles import ModelProfile
from .text_encoding import encode_text_trimmed, trims_safely
from .towers import IMAGE, TEXT, adopt_tower, drop_tower, load_tower_weights, read_tensor, readable

__all__ = [
    "IMAGE",
    "PRECISIONS",
    "TEXT",
    "HubOptions",
    "OpenClipEncoder",
    "cpu_has_fast_bf16",
    "missing_hub_files",
    "pick_device",
    "required_hub_files",
]


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless ``requested`` names one."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _register_configs(profile: ModelProfile) -> None:
    """Make open_clip know a profile's own architecture config before it builds the model."""
    import open_clip

    if profile.config_dir is not None:
        open_clip.add_model_config(profile.config_dir)


def _build_tokenizer(arch: str, text_cfg: dict[str, Any]) -> Callable[..., torch.Tensor]:
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    tokenizer_name = text_cfg.get("hf_tokenizer_name")
    if tokenizer_name:
        return HFTokenizer(  # type: ignore[no-any-return]
            tokenizer_name,
            context_length=text_cfg.get("context_length", 77),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    return open_clip.get_tokenizer(arch)  # type: ignore[no-any-return]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), on Linux."""
    return bool(cpu_has_any("avx512_bf16", "amx_bf16"))


def _cpu_dtype(precision: str) -> torch.dtype:
    # int8 is the image tower's ONNX path (onnx_int8.py); torch's towers then run as "auto".
    if precision == "bf16" or (precision in ("auto", "int8") and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


# Up to this many texts are encoded on one thread (see OpenClipEncoder._threads_for).
_ONE_THREAD_TEXTS = 4


class OpenClipEncoder:
    """An open_clip model behind the Encoder protocol.

    Construction resolves the files (and fails fast when they are missing); each tower is
    built and loaded the first time it is used, so an indexing run never holds the text
    tower and a text query never builds the image tower.
    """

    def __init__(
        self,
        profile: ModelProfile,
        *,
        checkpoint: Path | None = None,
        device: str = "auto",
        hub: HubOptions | None = None,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(
                f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}."
            )
        self._profile = profile
        self._device = pick_device(device)
        self._resolved = resolve_files(profile, checkpoint, hub or HubOptions())
        _register_configs(profile)
        cfg = self._resolved.config
        self._text_cfg = self._resolved.text_cfg
        self._vision_size = cfg.get("vision_cfg", {}).get("image_size", 224)
        self._cpu_dtype = _cpu_dtype(precision) if self._device.type == "cpu" else torch.float32
        self._model: Any = None
        self._loaded: set[str] = set()
        self._preprocess_fn: Callable[[Image.Image], torch.Tensor] | None = None
        self._tokenizer = _build_tokenizer(profile.arch, self._text_cfg)
        self._dim = int(cfg["embed_dim"])
        self._fingerprint = self._resolved.fingerprint

    # -- building the towers -------------------------------------------------------------

    def _create(
        self, pretrained: Path | None = None, device: str = "cpu"
    ) -> tuple[Any, Callable[[Image.Image], torch.Tensor]]:
        """A whole open_clip model on the CPU: randomly initialised (seeded) or ``pretrained``."""
        import open_clip

        pp = self._resolved.preprocess
        kwargs: dict[str, Any] = {"text_cfg": self._text_cfg}
        if pp is not None:
            kwargs.update(
                image_mean=pp.mean,
                image_std=pp.std,
                image_resize_mode=pp.resize_mode,
                image_interpolation=pp.interpolation,
            )
        # Random-initialised test profiles: seeded so vectors are reproducible, whichever
        # tower is built first.
        torch.manual_seed(self._profile.seed)
        model, _, preprocess = open_clip.create_model_and_transforms(
            self._profile.arch,
            pretrained=str(pretrained) if pretrained else None,
            device=device,
            **kwargs,
        )
        return model, preprocess

    def _load_weights(self, model: Any, tower: str) -> Any:
        """The model with ``tower``'s checkpoint weights (and only ``tower``) in place."""
        other = TEXT if tower == IMAGE else IMAGE
        drop_tower(model, other)  # before loading, so the peak holds one tower, not two
        path = self._resolved.checkpoint
        if path is not None and not load_tower_weights(model, path, tower):
            model, _ = self._create(pretrained=path)
            drop_tower(model, other)
        return model

    def _image_tower_from_file(
        self, dtype: torch.dtype
    ) -> tuple[Any, Callable[[Image.Image], torch.Tensor]] | None:
        """The image tower built empty and filled from a safetensors checkpoint, tensor by tensor.

        The ordinary way builds the whole model with random weights first: for ViT-B-32 that
        is 600 MB of fp32 allocated and initialised, then overwritten, before the text tower
        is dropped. Here the model is built on the meta device (no memory, no initialisation),
        only the image tower gets real storage, already in its final dtype, and each weight
        is copied in from the file. None when this model or file does not allow it.
        """
        path = self._resolved.checkpoint
        if path is None or path.suffix != ".safetensors":
            return None
        try:
            with torch.device("meta"):
                model, preprocess = self._create(device="meta")
        except Exception:  # any architecture that cannot be built without storage
            return None
        drop_tower(model, TEXT)
        visual = model.visual
        weights = visual.state_dict(keep_vars=True)
        if any(name not in weights for name, _ in visual.named_buffers()):
            return None  # buffers computed at construction are not in the checkpoint
        with path.open("rb") as checkpoint:
            header = read_header(checkpoint)
            names = {f"visual.{k}" for k in weights}
            if not names <= header.keys() or not readable(header[n] for n in names):
                return None
            visual.to_empty(device="cpu").to(dtype)
            weights = visual.state_dict(keep_vars=True)
            with torch.no_grad():
                for name, tensor in weights.items():
                    tensor.copy_(read_tensor(checkpoint, header[f"visual.{name}"]))
        return model, preprocess

    def _built(self, tower: str, dtype: torch.dtype) -> tuple[Any, Callable[..., torch.Tensor]]:
        """A model holding ``tower`` with its weights (image tower: already in ``dtype``)."""
        try:
            built = self._image_tower_from_file(dtype) if tower == IMAGE else None
            if built is not None:
                return built
            model, preprocess = self._create()
            return self._load_weights(model, tower), preprocess
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"Could not load model profile {self._profile.name!r} "
                f"({self._profile.arch}): {exc}. If you passed --checkpoint, check that it "
                "matches the profile's architecture."
            ) from exc

    def _build_tower(self, tower: str) -> None:
        model, preprocess = self._built(tower, self._cpu_dtype)
        model.eval()
        # bf16 weights on a bf16 CPU, not autocast: the towers run about twice as fast
        # (bench/README.md) and agree with fp32 to a cosine of 0.9999, while autocast re-casts
        # the weights on every call and runs slower than fp32. Elsewhere this is fp32.
        if tower == IMAGE:
            # Only the tower: the rest of a model built on the meta device has no storage.
            model.visual.to(self._device, self._cpu_dtype)
            if self._device.type == "cuda":
                model.visual.to(memory_format=torch.channels_last)
            self._preprocess_fn = preprocess
        else:
            model.to(self._device, self._cpu_dtype)
        if self._model is None:
            self._model = model
        else:
            adopt_tower(self._model, model, tower)
        self._loaded.add(tower)

    def _tower(self, tower: str) -> Any:
        if tower not in self._loaded:
            self._build_tower(tower)
        return self._model

    def fp32_image_model(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """A separate fp32 copy of the image tower, for export and agreement checks.

        Returns a module whose ``forward(pixels)`` is ``encode_image`` (unnormalised) and the
        model's preprocessing config (open_clip's ``visual.preprocess_cfg``).
        """
        model, _ = self._built(IMAGE, torch.float32)
        model.visual.float().eval()
        return _ImageTower(model).eval(), dict(model.visual.preprocess_cfg)

    def fp32_text_model(self) -> tuple[torch.nn.Module, int] | None:
        """A separate fp32 copy of a CLIP text tower and its pad id, for export; None for
        towers whose answer depends on the padding (only causal towers pooled at the end of
        text can be run at a fixed padded length)."""
        if self._text_cfg.get("hf_model_name"):
            return None  # a Hugging Face tower (XLM-R, ...): known without building it
        model, _ = self._built(TEXT, torch.float32)
        import open_clip

        if not isinstance(model, open_clip.CLIP) or not trims_safely(model):
            return None
        model.float().eval()
        return _TextTower(model).eval(), 0

    def fp32_hf_text_model(self) -> tuple[torch.nn.Module, Any] | None:
        """A separate fp32 copy of a Hugging Face text tower (``forward(tokens)`` is
        ``encode_text`` of padded token rows, the padding masked out) and open_clip's
        tokenizer of it, for export; None for other towers."""
        if not self._text_cfg.get("hf_model_name"):
            return None
        model, _ = self._built(TEXT, torch.float32)
        model.float().eval()
        return _HFTextTower(model).eval(), self._tokenizer

    @property
    def text_config(self) -> dict[str, Any]:
        """open_clip's text config of the model (hub names replaced by cached folders)."""
        return dict(self._text_cfg)

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids, (len(texts), context length) int64, as the text tower takes them."""
        return np.asarray(self._tokenizer(list(texts)).numpy(), dtype=np.int64)

    def loaded_towers(self) -> frozenset[str]:
        """Which towers are in memory ("image", "text")."""
        return frozenset(self._loaded)

    # -- the Encoder protocol ------------------------------------------------------------

    @property
    def profile_name(self) -> str:
        return self._profile.name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def input_size(self) -> int:
        """Side of the square image the image tower takes."""
        size = self._vision_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def checkpoint(self) -> Path | None:
        """The local weights file in use (None: random-initialised test profiles)."""
        return self._resolved.checkpoint

    @property
    def image_precision(self) -> str:
        """How images are encoded: "bf16" or "fp32" weights, or "autocast" on CUDA."""
        if self._device.type == "cuda":
            return "autocast"
        return "bf16" if self._cpu_dtype == torch.bfloat16 else "fp32"

    @property
    def image_dtype(self) -> torch.dtype:
        """What the towers' weights are on this device (bf16 or fp32 on a CPU)."""
        return self._cpu_dtype

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        if self._preprocess_fn is None:
            self._tower(IMAGE)
        assert self._preprocess_fn is not None
        return self._preprocess_fn

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self._device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                yield
        else:
            yield

    def encode_images(self, pixels: torch.Tensor) -> Vectors:
        if pixels.shape[0] == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        model = self._tower(IMAGE)
        non_blocking = self._device.type == "cuda" and pixels.is_pinned()
        batch = pixels.to(self._device, dtype=self._cpu_dtype, non_blocking=non_blocking)
        if self._device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            out = model.encode_image(batch)
        return l2_normalise(out.float().cpu().numpy())

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        model = self._tower(TEXT)
        tokens = self._tokenizer(list(texts)).to(self._device)
        with torch.inference_mode(), self._autocast(), self._threads_for(len(texts)):
            out = encode_text_trimmed(model, tokens)
        return l2_normalise(out.float().cpu().numpy())

    @contextlib.contextmanager
    def _threads_for(self, n_texts: int) -> Iterator[None]:
        """One CPU thread for a query or two: its matrices are a few rows, and a second
        OpenMP thread only spins against whatever else runs (ViT-B-32, one 12-token query,
        beside another busy process: 35 ms on one thread, 760 ms on two)."""
        before = torch.get_num_threads()
        if self._device.type != "cpu" or n_texts > _ONE_THREAD_TEXTS or before == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


class _ImageTower(torch.nn.Module):
    """``encode_image`` as a module's forward, which is what exporters trace."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.visual = model.visual
        self._model = [model]  # not a submodule: only the image tower is exported

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._model[0].encode_image(pixels)  # type: ignore[no-any-return]


class _TextTower(torch.nn.Module):
    """The trimmed text encoding as a module's forward, for the exporter."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return encode_text_trimmed(self.model, tokens)


class _HFTextTower(torch.nn.Module):
    """``encode_text`` of a Hugging Face tower over whole rows: no trimming, whose length
    the exporter would freeze into the graph."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)  # type: ignore[no-any-return]
