"""The steps both export routes share, whatever makes the graphs.

``onnx_export.py`` traces a tower with torch, ``direct_export.py`` writes it from the
checkpoint, and ``hf_text_export.py`` traces a Hugging Face text tower; each checks that the
tools are installed, turns the tools' failures into ModelError (which ``auto`` answers by
staying on torch), builds the image export in a staging folder of its own process and
publishes it with one rename, and hands the export's memory back to the system. The int8
choices both routes make alike live here too: 7-bit weights on a CPU without VNNI, and the
text-tower weights that stay fp32.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from ..cpu import INT8_DOT_FLAGS, cpu_has_any
from .export_records import MODEL_FILE, TowerExport
from .onnx_int8 import open_session, run_session
from .preprocess import SUPPORTED_RESIZE_MODES, ImagePreprocess

__all__ = [
    "TEXT_FP32_NODES",
    "TEXT_FP32_WEIGHTS",
    "TOKENIZER_FILE",
    "as_model_error",
    "check_tools",
    "cpu_has_vnni",
    "give_back_memory",
    "graph_vectors",
    "ort_version",
    "preprocess_of",
    "publish",
    "staged",
    "timed",
]

TOKENIZER_FILE = "tokenizer.json"


# Text-tower weights whose products stay fp32. Quantising the attention output projections
# costs the most agreement per weight and the text projection sets every vector's last step;
# keeping them fp32 takes a random-initialised ViT-B-32 text tower from a cosine to fp32 of
# 0.99893 / 0.99932 (min / mean, below the gate) to 0.99928 / 0.99956, for 0.4 ms a query.
TEXT_FP32_WEIGHTS = re.compile(r"out_proj\.weight|text_projection")
TEXT_FP32_NODES = re.compile(r"/attn/(out_proj/)?Gemm$|^/MatMul$|/text_projection/")


def check_tools() -> None:
    missing = [m for m in ("onnx", "onnxruntime") if not _importable(m)]
    if missing:
        raise ModelError(
            f"The int8 image tower needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install "
            f"{' '.join(missing)} (pip install {' '.join(missing)}), or index with "
            "--precision bf16."
        )


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def as_model_error(doing: str) -> Iterator[None]:
    """Failures of the export tools (their own exception types, or memory) as ModelError,
    which ``auto`` answers by staying on torch."""
    try:
        yield
    except ModelError:
        raise
    except MemoryError as exc:
        raise ModelError(f"Ran out of memory trying to {doing}.") from exc
    except Exception as exc:  # ONNX and ONNX Runtime raise many types
        raise ModelError(f"Could not {doing}: {exc}") from exc


def give_back_memory() -> None:
    """Return freed memory to the system (glibc keeps it otherwise: the rest of an
    indexing run would hold the export's 2 GB peak instead of about 0.9 GB)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:  # glibc only; other allocators return memory their own way
        trim(0)


def cpu_has_vnni() -> bool:
    vnni = cpu_has_any(*INT8_DOT_FLAGS)
    # Not Linux (None): ARM and Apple CPUs have their own int8 dot products.
    return True if vnni is None else vnni


def preprocess_of(cfg: dict[str, Any], profile: str) -> ImagePreprocess:
    size = cfg.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    mode = cfg.get("resize_mode", "shortest")
    if h != w or mode not in SUPPORTED_RESIZE_MODES or cfg.get("mode", "RGB") != "RGB":
        raise ModelError(
            f"Model {profile!r} preprocesses images in a way the int8 path does not reproduce "
            f"(size {h}x{w}, resize mode {mode!r}); index it with --precision bf16 or fp32."
        )
    interpolation = cfg.get("interpolation", "bicubic")
    return ImagePreprocess(
        size=int(h),
        mean=tuple(float(x) for x in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(x) for x in cfg["std"]),  # type: ignore[arg-type]
        resize_mode=mode,
        # open_clip evaluates "random" as bicubic.
        interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
    )


def timed(work: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``work(*args, **kwargs)`` and the seconds it took."""
    started = time.perf_counter()
    result = work(*args, **kwargs)
    return result, max(time.perf_counter() - started, 1e-9)


def graph_vectors(path: Path, pixels: npt.NDArray[np.float32]) -> tuple[np.ndarray, float]:
    """The vectors of a graph for ``pixels``, and the seconds they took (after a first
    call, which allocates)."""
    session = open_session(path)
    run_session(session, pixels[:2])
    return timed(run_session, session, pixels)


def ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


@contextlib.contextmanager
def staged(directory: Path) -> Iterator[Path]:
    """A fresh folder of this process beside ``directory`` to build an export in, removed
    afterwards (renamed into place by :func:`publish`, or left half-made by an error)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def publish(export: TowerExport, partial: Path) -> None:
    """Save the export's record in ``partial`` and move the finished export into place; a
    concurrent exporter's copy is as good."""
    replace(export, directory=partial).save()
    directory = export.directory
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    try:
        partial.rename(directory)
    except OSError:
        if not (directory / MODEL_FILE).is_file():
            raise
