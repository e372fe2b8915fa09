"""Make a model's int8 towers without torch: written from the checkpoint, then measured.

Where ``onnx_graphs.py`` knows the towers (open_clip's ViT and CLIP text tower) and the
checkpoint is safetensors, the fp32 and int8 graphs are written straight from the
checkpoint, without torch: about 6 s for ViT-B-32's image tower on 2 cores, with a peak of
about 0.5 GB. The int8 graph is measured against the fp32 graph written the same way, which
the tests hold to open_clip's own towers. Any other model is traced with torch
(``onnx_export.py``); why both, with the numbers that chose them: this package's
``__init__``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..model_files import ModelFiles, open_clip_folder
from .export_records import MODEL_FILE, WRITTEN, TextExport, TowerExport, WeightsStamp, this_machine
from .export_steps import (
    TEXT_FP32_WEIGHTS,
    TOKENIZER_FILE,
    as_model_error,
    check_tools,
    cpu_has_vnni,
    give_back_memory,
    graph_vectors,
    ort_version,
    preprocess_of,
    publish,
    staged,
    timed,
)
from .onnx_int8 import open_session, used_tokens
from .probes import NOT_MEASURED, PROBE_PICTURES, agreement, probe_pixels, probe_texts

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from .tower_specs import ImageSpec, TextSpec

__all__ = [
    "direct_image_spec",
    "direct_text_spec",
    "make_int8_export_direct",
    "make_int8_text_export_direct",
]


def direct_image_spec(files: ModelFiles) -> ImageSpec | None:
    """What the graph writer builds of this model's image tower, or None where it cannot
    (no safetensors checkpoint, a tower it does not know): the tower is traced with torch."""
    from .tower_specs import fits, image_spec, image_tensors

    spec = image_spec(files.config)
    if spec is None or not _is_safetensors(files.checkpoint):
        return None
    with _checkpoint(files) as checkpoint:
        return spec if fits(checkpoint, image_tensors(spec), spec) else None


def direct_text_spec(files: ModelFiles) -> TextSpec | None:
    """The same for the text tower (causal CLIP towers with open_clip's own tokenizer)."""
    from .tower_specs import fits, text_spec, text_tensors

    spec = text_spec(files.config)
    if spec is None or not _is_safetensors(files.checkpoint) or _bpe_file() is None:
        return None
    with _checkpoint(files) as checkpoint:
        return spec if fits(checkpoint, text_tensors(spec), spec) else None


def _is_safetensors(path: Path | None) -> bool:
    return path is not None and path.suffix == ".safetensors"


def _checkpoint(files: ModelFiles) -> Checkpoint:
    from ..checkpoint import Checkpoint

    assert files.checkpoint is not None
    return Checkpoint(files.checkpoint)


def _bpe_file() -> Path | None:
    """open_clip's BPE vocabulary (its ``default_bpe()``), found without importing it."""
    folder = open_clip_folder()
    path = folder / "bpe_simple_vocab_16e6.txt.gz" if folder else None
    return path if path is not None and path.is_file() else None


def make_int8_export_direct(
    files: ModelFiles,
    spec: ImageSpec,
    directory: Path,
    *,
    probe_pictures: int = PROBE_PICTURES,
) -> TowerExport:
    """:func:`make_int8_export` without torch: the fp32 and int8 graphs are written from the
    checkpoint, and the int8 one is measured against the fp32 one (about 6 s and 0.5 GB for
    ViT-B-32's image tower on 2 cores; tracing it took about 12 s and 2 GB)."""
    with as_model_error(f"export the int8 image tower to {directory}"):
        try:
            return _make_int8_export_direct(files, spec, directory, probe_pictures)
        finally:
            give_back_memory()


def _make_int8_export_direct(
    files: ModelFiles, spec: ImageSpec, directory: Path, probe_pictures: int
) -> TowerExport:
    from .graph_writer import Int8Plan
    from .onnx_graphs import remove_graph, write_image_graph

    started = time.perf_counter()
    check_tools()
    pp = files.image_preprocess
    preprocess = preprocess_of(
        {
            "size": spec.image_size,
            "mean": pp.mean,
            "std": pp.std,
            "resize_mode": pp.resize_mode,
            "interpolation": pp.interpolation,
        },
        files.profile.name,
    )
    with staged(directory) as partial:
        fp32_path = partial / "visual.fp32.onnx"
        with _checkpoint(files) as checkpoint:
            write_image_graph(spec, checkpoint, fp32_path)
            plan = Int8Plan(reduce_range=not cpu_has_vnni())
            write_image_graph(spec, checkpoint, partial / MODEL_FILE, plan)
        pixels = probe_pixels(preprocess, probe_pictures)
        reference, fp32_speed = graph_vectors(fp32_path, pixels)
        remove_graph(fp32_path)
        give_back_memory()
        int8, int8_speed = graph_vectors(partial / MODEL_FILE, pixels)
        export = TowerExport(
            directory=directory,
            profile=files.profile.name,
            fingerprint=files.fingerprint,
            dim=files.dim,
            preprocess=preprocess,
            weights=WeightsStamp.of(files.checkpoint) if files.checkpoint else None,
            agreement=agreement(reference, int8),
            int8_images_per_s=len(pixels) / int8_speed,
            fp32_images_per_s=len(pixels) / fp32_speed,
            export_seconds=time.perf_counter() - started,
            onnxruntime_version=ort_version(),
            made_by=WRITTEN,
            machine=this_machine(),
        )
        publish(export, partial)
    return export


def make_int8_text_export_direct(files: ModelFiles, spec: TextSpec, directory: Path) -> TextExport:
    """:func:`make_int8_text_export` without torch, next to an image export in ``directory``:
    graphs written from the checkpoint, the int8 ones measured against fp32 ones."""
    with as_model_error(f"export the int8 text tower to {directory}"):
        try:
            return _make_int8_text_export_direct(files, spec, directory)
        finally:
            give_back_memory()


def _make_int8_text_export_direct(files: ModelFiles, spec: TextSpec, directory: Path) -> TextExport:
    from .clip_tokenizer import ClipTokenizer, build_clip_tokenizer
    from .graph_writer import Int8Plan
    from .onnx_graphs import remove_graph, write_text_graph

    check_tools()
    bpe = _bpe_file()
    assert bpe is not None
    context = spec.context_length
    draft = TextExport(directory, (context,), 0, NOT_MEASURED, 0.0, 0.0, context, dynamic=True)
    pid = os.getpid()
    tokenizer_partial = directory / f".{TOKENIZER_FILE}.partial-{pid}"
    fp32_path = directory / f".text.fp32.partial-{pid}.onnx"
    int8_path = directory / f".text.int8.partial-{pid}.onnx"
    try:
        build_clip_tokenizer(bpe, tokenizer_partial)
        tokens = ClipTokenizer(tokenizer_partial, context)(probe_texts())
        plan = Int8Plan(
            reduce_range=not cpu_has_vnni(),
            keep_fp32=lambda name: bool(TEXT_FP32_WEIGHTS.search(name)),
        )
        with _checkpoint(files) as checkpoint:
            write_text_graph(spec, checkpoint, fp32_path)
            write_text_graph(spec, checkpoint, int8_path, plan)
        # Each probe text runs over its own tokens, as a query does.
        texts = [row[None, : draft.length_for(used_tokens(row, 0))] for row in tokens]
        reference, fp32_ms = _fp32_text_reference(fp32_path, texts, files.dim)
        remove_graph(fp32_path)
        int8_path.replace(draft.model_path(context))
        tokenizer_partial.replace(directory / TOKENIZER_FILE)
    finally:
        tokenizer_partial.unlink(missing_ok=True)
        remove_graph(fp32_path)
        int8_path.unlink(missing_ok=True)
    int8_session = open_session(draft.model_path(context), threads=1)
    int8, int8_s = _one_text_at_a_time(int8_session, texts)
    export = replace(
        draft,
        agreement=agreement(reference, int8),
        int8_ms_per_text=1000 * int8_s / len(texts),
        fp32_ms_per_text=fp32_ms,
        tokenizer=TOKENIZER_FILE,
        made_by=WRITTEN,
    )
    export.save()
    return export


def _fp32_text_reference(
    path: Path, texts: Sequence[npt.NDArray[np.int64]], dim: int
) -> tuple[npt.NDArray[np.float32], float]:
    """The fp32 graph's vectors of token rows, the rows of each length in one batch (fp32
    does not depend on the batch, unlike int8's dynamic quantisation of its inputs), and the
    milliseconds a text takes alone, timed on the first eight (on one thread, as queries)."""
    session = open_session(path, threads=1)
    name = session.get_inputs()[0].name
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(texts):
        by_length.setdefault(row.shape[1], []).append(i)
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    for rows in by_length.values():
        vectors[rows] = session.run(None, {name: np.concatenate([texts[i] for i in rows])})[0]
    _, spent = _one_text_at_a_time(session, texts[:8])
    return vectors, 1000 * spent / min(8, len(texts))


def _one_text_at_a_time(
    session: Any, texts: Sequence[npt.NDArray[np.int64]]
) -> tuple[npt.NDArray[np.float32], float]:
    """The vectors of a text graph's session for token rows given one at a time (as queries
    come), and the seconds they took after a first call (which allocates)."""
    name = session.get_inputs()[0].name

    def encode(rows: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        return np.concatenate([session.run(None, {name: t})[0] for t in rows]).astype(np.float32)

    encode(texts[:1])
    vectors, spent = timed(encode, texts)
    return vectors, spent
