"""Make a model's int8 towers for ONNX Runtime, and measure them against fp32 before use.

Done once per model and machine, two ways:

- **Written** (``make_int8_export_direct``): where ``onnx_graphs.py`` knows the towers
  (open_clip's ViT and CLIP text tower) and the checkpoint is safetensors, the fp32 and int8
  graphs are written straight from the checkpoint, without torch: about 6 s for ViT-B-32's
  image tower on 2 cores, with a peak of about 0.5 GB. The int8 graph is measured against
  the fp32 graph written the same way, which the tests hold to open_clip's own towers.
- **Traced** (``make_int8_export``): any other model is traced from its torch model to ONNX
  (opset 17, any batch size), and its matrix products' weights quantised to int8 per output
  channel (ONNX Runtime's dynamic quantisation, its per-channel step vectorised by
  ``per_channel.py``: no calibration data), then measured against the torch tower. This
  imports torch and builds the fp32 model: about 30 s and 2 GB for ViT-B-32.

Why both, with the numbers that chose them: this package's ``__init__``.

Either way the probe pictures are xsearch's own generated scenes (``synth``): varied
colours, textures and objects, the same on every machine. The result is cached by the
Engine and loaded by ``onnx_int8.py`` without torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from ..cpu import INT8_DOT_FLAGS, cpu_has_any
from ..model_files import ModelFiles, open_clip_folder
from .export_records import (
    MODEL_FILE,
    WRITTEN,
    Agreement,
    TextExport,
    TowerExport,
    WeightsStamp,
    this_machine,
)
from .onnx_int8 import TextSessions, open_session, run_session, used_tokens
from .preprocess import SUPPORTED_RESIZE_MODES, ImagePreprocess

if TYPE_CHECKING:  # torch is imported only by the steps that trace a tower
    import torch

    from ..checkpoint import Checkpoint
    from ..torch_backend.openclip import OpenClipEncoder
    from .tower_specs import ImageSpec, TextSpec

__all__ = [
    "direct_image_spec",
    "direct_text_spec",
    "make_int8_export",
    "make_int8_export_direct",
    "make_int8_text_export",
    "make_int8_text_export_direct",
    "probe_pixels",
    "probe_texts",
]

PROBE_PICTURES = 48
# Padded lengths of the text graphs below the full context: a query of up to 16 tokens
# (most are) runs a graph a fifth the size of the 77-token one.
TEXT_LENGTHS = (16,)
_PROBE_SEED = 20261130
_NEIGHBOURS = 10


def make_int8_export(
    encoder: OpenClipEncoder, directory: Path, *, probe_pictures: int = PROBE_PICTURES
) -> TowerExport:
    """Export ``encoder``'s image tower to ``directory`` (replacing what is there).

    Every failure (tools missing, an unsupported graph, a full disk, a read-only cache,
    memory) is a ModelError, which ``auto`` answers by staying on torch.
    """
    with _as_model_error(f"export the int8 image tower to {directory}"):
        try:
            return _make_int8_export(encoder, directory, probe_pictures)
        finally:
            _give_back_memory()  # the fp32 tower and the graphs are gone by now


def _make_int8_export(
    encoder: OpenClipEncoder, directory: Path, probe_pictures: int
) -> TowerExport:
    import torch

    started = time.perf_counter()
    _check_tools()
    with _as_model_error("build the fp32 image tower for export"):
        tower, cfg = encoder.fp32_image_model()
    preprocess = _preprocess_of(cfg, encoder.profile_name)
    with _staged(directory) as partial:
        pixels = probe_pixels(preprocess, probe_pictures)
        reference, fp32_speed = _timed(_torch_vectors, tower, pixels)
        fp32_path = partial / "visual.fp32.onnx"
        _export_onnx(tower, torch.zeros(2, 3, preprocess.size, preprocess.size), fp32_path)
        # The torch tower is done with: its memory goes back before the quantiser's peak.
        del tower
        _give_back_memory()
        _quantise(fp32_path, partial / MODEL_FILE)
        fp32_path.unlink()
        _give_back_memory()
        int8, int8_speed = _graph_vectors(partial / MODEL_FILE, pixels)
        export = TowerExport(
            directory=directory,
            profile=encoder.profile_name,
            fingerprint=encoder.fingerprint,
            dim=encoder.dim,
            preprocess=preprocess,
            weights=_weights_stamp(encoder),
            agreement=agreement(reference, int8),
            int8_images_per_s=len(pixels) / int8_speed,
            fp32_images_per_s=len(pixels) / fp32_speed,
            export_seconds=time.perf_counter() - started,
            onnxruntime_version=_ort_version(),
            machine=this_machine(),
        )
        _publish(export, partial)
    return export


def make_int8_text_export(encoder: OpenClipEncoder, directory: Path) -> TextExport | None:
    """Export ``encoder``'s text tower next to its image tower's export in ``directory``.

    One graph per padded length (``TEXT_LENGTHS`` and the full context), because a traced
    graph has fixed shapes. None for towers that cannot be run at a fixed padded length;
    every failure is a ModelError.
    """
    with _as_model_error(f"export the int8 text tower to {directory}"):
        try:
            return _make_int8_text_export(encoder, directory)
        finally:
            _give_back_memory()


def _make_int8_text_export(encoder: OpenClipEncoder, directory: Path) -> TextExport | None:
    import torch

    _check_tools()
    made = encoder.fp32_text_model()
    if made is None:
        return None
    tower, pad_id = made
    del made  # else the tuple keeps the tower alive through the quantiser's peak
    context = int(encoder.tokenize(["x"]).shape[1])
    lengths = tuple(sorted({n for n in TEXT_LENGTHS if n < context} | {context}))
    tokens = encoder.tokenize(probe_texts())
    draft = TextExport(directory, lengths, pad_id, _NOT_MEASURED, 0.0, 0.0)
    # Each probe text goes through the graph a query of its length takes. The torch tower
    # runs each group at that graph's length too (the same vectors for the causal towers
    # exported here, and a fifth of the work for the short texts).
    route = np.array([draft.length_for(used_tokens(row, pad_id)) for row in tokens])
    groups = [(n, route == n) for n in lengths if (route == n).any()]
    reference = np.zeros((len(tokens), encoder.dim), dtype=np.float32)
    with torch.inference_mode():
        for n, rows in groups:
            reference[rows] = tower(torch.from_numpy(tokens[rows, :n])).float().numpy()
        _, fp32_s = _timed(
            _one_at_a_time, tower, [row[: route[i]] for i, row in enumerate(tokens[:8])]
        )
    # Named per process: two indexing runs may export the same model at once.
    fp32_paths = {n: directory / f".text.{n}.fp32.partial-{os.getpid()}.onnx" for n in lengths}
    int8_paths = {n: directory / f".text.{n}.int8.partial-{os.getpid()}.onnx" for n in lengths}
    try:
        for length in lengths:
            # A dummy without padding: the traced graph keeps all ``length`` positions.
            example = torch.ones((1, length), dtype=torch.int64)
            _export_onnx(tower, example, fp32_paths[length], "tokens")
        del tower  # its memory goes back before the quantiser's peak
        _give_back_memory()
        for length in lengths:
            keep = _text_fp32_nodes(fp32_paths[length])
            _quantise(fp32_paths[length], int8_paths[length], keep_fp32=keep)
            int8_paths[length].replace(directory / f"text.{length}.int8.onnx")
            _give_back_memory()
    finally:
        for path in (*fp32_paths.values(), *int8_paths.values()):
            path.unlink(missing_ok=True)
    sessions = TextSessions(draft)
    int8, spent = _timed(sessions.encode, tokens)
    # Each graph is measured on the probe texts it takes, and the worst graph counts.
    measured = [agreement(reference[rows], int8[rows]) for _, rows in groups]
    export = replace(
        draft,
        agreement=_worst(measured, len(tokens)),
        int8_ms_per_text=1000 * spent / len(tokens),
        fp32_ms_per_text=1000 * fp32_s / 8,
        context_length=context,
        tokenizer=_torch_free_tokenizer(encoder, directory, context),
    )
    export.save()
    return export


# -- the same exports without torch (``onnx_graphs.py``) ------------------------------------


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
    with _as_model_error(f"export the int8 image tower to {directory}"):
        try:
            return _make_int8_export_direct(files, spec, directory, probe_pictures)
        finally:
            _give_back_memory()


def _make_int8_export_direct(
    files: ModelFiles, spec: ImageSpec, directory: Path, probe_pictures: int
) -> TowerExport:
    from .graph_writer import Int8Plan
    from .onnx_graphs import remove_graph, write_image_graph

    started = time.perf_counter()
    _check_tools()
    pp = files.image_preprocess
    preprocess = _preprocess_of(
        {
            "size": spec.image_size,
            "mean": pp.mean,
            "std": pp.std,
            "resize_mode": pp.resize_mode,
            "interpolation": pp.interpolation,
        },
        files.profile.name,
    )
    with _staged(directory) as partial:
        fp32_path = partial / "visual.fp32.onnx"
        with _checkpoint(files) as checkpoint:
            write_image_graph(spec, checkpoint, fp32_path)
            plan = Int8Plan(reduce_range=not _cpu_has_vnni())
            write_image_graph(spec, checkpoint, partial / MODEL_FILE, plan)
        pixels = probe_pixels(preprocess, probe_pictures)
        reference, fp32_speed = _graph_vectors(fp32_path, pixels)
        remove_graph(fp32_path)
        _give_back_memory()
        int8, int8_speed = _graph_vectors(partial / MODEL_FILE, pixels)
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
            onnxruntime_version=_ort_version(),
            made_by=WRITTEN,
            machine=this_machine(),
        )
        _publish(export, partial)
    return export


def _graph_vectors(path: Path, pixels: npt.NDArray[np.float32]) -> tuple[np.ndarray, float]:
    """The vectors of a graph for ``pixels``, and the seconds they took (after a first
    call, which allocates)."""
    session = open_session(path)
    run_session(session, pixels[:2])
    return _timed(run_session, session, pixels)


def make_int8_text_export_direct(files: ModelFiles, spec: TextSpec, directory: Path) -> TextExport:
    """:func:`make_int8_text_export` without torch, next to an image export in ``directory``:
    graphs written from the checkpoint, the int8 ones measured against fp32 ones."""
    with _as_model_error(f"export the int8 text tower to {directory}"):
        try:
            return _make_int8_text_export_direct(files, spec, directory)
        finally:
            _give_back_memory()


def _make_int8_text_export_direct(files: ModelFiles, spec: TextSpec, directory: Path) -> TextExport:
    from .clip_tokenizer import ClipTokenizer, build_clip_tokenizer
    from .graph_writer import Int8Plan
    from .onnx_graphs import remove_graph, write_text_graph

    _check_tools()
    bpe = _bpe_file()
    assert bpe is not None
    context = spec.context_length
    draft = TextExport(directory, (context,), 0, _NOT_MEASURED, 0.0, 0.0, context, dynamic=True)
    pid = os.getpid()
    tokenizer_partial = directory / f".{_TOKENIZER_FILE}.partial-{pid}"
    fp32_path = directory / f".text.fp32.partial-{pid}.onnx"
    int8_path = directory / f".text.int8.partial-{pid}.onnx"
    try:
        build_clip_tokenizer(bpe, tokenizer_partial)
        tokens = ClipTokenizer(tokenizer_partial, context)(probe_texts())
        plan = Int8Plan(
            reduce_range=not _cpu_has_vnni(),
            keep_fp32=lambda name: bool(_TEXT_FP32_WEIGHTS.search(name)),
        )
        with _checkpoint(files) as checkpoint:
            write_text_graph(spec, checkpoint, fp32_path)
            write_text_graph(spec, checkpoint, int8_path, plan)
        # Each probe text runs over its own tokens, as a query does.
        texts = [row[None, : draft.length_for(used_tokens(row, 0))] for row in tokens]
        reference, fp32_ms = _fp32_text_reference(fp32_path, texts, files.dim)
        remove_graph(fp32_path)
        int8_path.replace(draft.model_path(context))
        tokenizer_partial.replace(directory / _TOKENIZER_FILE)
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
        tokenizer=_TOKENIZER_FILE,
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
    vectors, spent = _timed(encode, texts)
    return vectors, spent


_NOT_MEASURED = Agreement(pictures=0, cosine_min=0.0, cosine_mean=0.0, neighbours_kept=0.0)
_TOKENIZER_FILE = "tokenizer.json"
# Beyond the probe texts: what tends to break a re-implemented tokenizer.
_TRICKY_TEXTS = (
    "Ｔｈｅ  ＣＡＴ &amp;amp; the dog",
    "naïve café résumé",
    "😀 emoji 🐱 and ❤️",
    "it's 12:30, o'clock! they'll've",
    "  spaces\tand\nnewlines  ",
    "中文 测试 猫 一只红色苹果的照片",
    "<start_of_text> a literal <end_of_text>",
    "ÀÉÎÕÜ ß ﬁ",
    " ".join(f"word{i}" for i in range(120)),  # longer than any context: truncated
    "",
)


def _torch_free_tokenizer(encoder: OpenClipEncoder, directory: Path, context: int) -> str | None:
    """Save a ``tokenizers`` copy of the model's CLIP tokenizer if it is open_clip's
    ``SimpleTokenizer`` and the copy gives the same ids on every probe and tricky text."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    from .clip_tokenizer import ClipTokenizer, build_clip_tokenizer

    original = getattr(encoder, "_tokenizer", None)
    if type(original) is not SimpleTokenizer or getattr(original, "reduction_fn", 1) is not None:
        return None
    partial = directory / f".{_TOKENIZER_FILE}.partial-{os.getpid()}"
    try:
        build_clip_tokenizer(Path(default_bpe()), partial)
        texts = [*probe_texts(), *_TRICKY_TEXTS]
        same = np.array_equal(ClipTokenizer(partial, context)(texts), encoder.tokenize(texts))
        if not same:
            return None
        partial.replace(directory / _TOKENIZER_FILE)
        return _TOKENIZER_FILE
    finally:
        partial.unlink(missing_ok=True)


def probe_texts() -> list[str]:
    """Every class name of the generated pictures in English and Chinese, and captions of a
    few words, of 20 to 60 tokens (beyond the shortest padded length), and beyond the
    context (truncated)."""
    from ... import synth

    texts = [synth.class_query(c, lang) for c in synth.CLASSES for lang in synth.LANGUAGES]
    some = synth.CLASSES[:: max(1, len(synth.CLASSES) // 8)]
    texts += [" ".join(synth.captions(c, "en")[:3]) for c in some]
    texts += [", ".join(synth.captions(c, "en")[2:9]) for c in some]
    texts += ["，".join(synth.captions(c, "zh")[1:6]) for c in some]
    texts.append(" ".join(synth.captions(some[0], "en")))
    return texts


def _check_tools() -> None:
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


def _preprocess_of(cfg: dict[str, Any], profile: str) -> ImagePreprocess:
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


def _export_onnx(
    tower: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str = "pixels",
    *,
    dynamic_length: bool = False,
) -> None:
    """Trace ``tower`` on ``example`` into an ONNX file; pixels keep a free batch size, and
    tokens a free batch and length where ``dynamic_length`` (a tower that masks padding)."""
    axes: dict[str, dict[int, str]] | None = None
    if input_name == "pixels":
        axes = {"pixels": {0: "batch"}, "vectors": {0: "batch"}}
    elif dynamic_length:
        axes = {input_name: {0: "batch", 1: "length"}, "vectors": {0: "batch"}}
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused attention kernel used at inference has no ONNX form.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter, not for users
            torch.onnx.export(
                tower,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=["vectors"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except MemoryError as exc:
        raise ModelError("Ran out of memory exporting the tower to ONNX.") from exc
    except Exception as exc:  # the exporter raises many types for unsupported graphs
        raise ModelError(f"Could not export the tower to ONNX: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime.quantization logs a suggestion through the root logger on every call.
    hint = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _quantise(source: Path, target: Path, keep_fp32: Sequence[str] = ()) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .per_channel import vectorised_per_channel

    # vectorised_per_channel: the same graph, without a Python loop per weight channel.
    quantising = _as_model_error("quantise the exported tower")
    with _quiet_root_logger(), quantising, vectorised_per_channel():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Without VNNI, u8 x s8 products can saturate their 16-bit sums; 7-bit weights
            # avoid that at a small cost in precision (ONNX Runtime's advice).
            reduce_range=not _cpu_has_vnni(),
            nodes_to_exclude=list(keep_fp32),
        )


# Text-tower weights whose products stay fp32. Quantising the attention output projections
# costs the most agreement per weight and the text projection sets every vector's last step;
# keeping them fp32 takes a random-initialised ViT-B-32 text tower from a cosine to fp32 of
# 0.99893 / 0.99932 (min / mean, below the gate) to 0.99928 / 0.99956, for 0.4 ms a query.
_TEXT_FP32_WEIGHTS = re.compile(r"out_proj\.weight|text_projection")
_TEXT_FP32_NODES = re.compile(r"/attn/(out_proj/)?Gemm$|^/MatMul$|/text_projection/")


def _text_fp32_nodes(model_path: Path) -> list[str]:
    """The names of the matrix products in a text graph to leave in fp32 (see above)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        carried = " ".join(name for name in node.input if name in weights)
        if _TEXT_FP32_WEIGHTS.search(carried) or _TEXT_FP32_NODES.search(node.name):
            names.append(node.name)
            if node.op_type == "Gemm":
                # The quantiser splits a Gemm into "<name>_MatMul" and an Add before it
                # reads the exclusions, so only that name keeps it fp32.
                names.append(f"{node.name}_MatMul")
    return names


def _give_back_memory() -> None:
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


@contextlib.contextmanager
def _as_model_error(doing: str) -> Iterator[None]:
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


def _cpu_has_vnni() -> bool:
    vnni = cpu_has_any(*INT8_DOT_FLAGS)
    # Not Linux (None): ARM and Apple CPUs have their own int8 dot products.
    return True if vnni is None else vnni


def probe_pixels(preprocess: ImagePreprocess, n: int) -> npt.NDArray[np.float32]:
    """``n`` generated pictures, preprocessed for the model; the same on every machine."""
    from ... import synth

    rng = np.random.default_rng(_PROBE_SEED)
    pictures = [
        synth.render_picture(rng, synth.CLASSES, preprocess.size, split="heldout")[0]
        for _ in range(n)
    ]
    return np.stack([preprocess(p) for p in pictures])


def _torch_vectors(tower: torch.nn.Module, pixels: npt.NDArray[np.float32]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate(
            [
                tower(torch.from_numpy(pixels[i : i + 16])).float().numpy()
                for i in range(0, len(pixels), 16)
            ]
        )


def _one_at_a_time(tower: torch.nn.Module, rows: Sequence[npt.NDArray[np.int64]]) -> None:
    """Each text through ``tower`` on its own, as queries come."""
    import torch

    for row in rows:
        tower(torch.from_numpy(row[None]))


def _timed(work: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``work(*args, **kwargs)`` and the seconds it took."""
    started = time.perf_counter()
    result = work(*args, **kwargs)
    return result, max(time.perf_counter() - started, 1e-9)


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Cosines per picture, and how much of each picture's nearest-neighbour list survives."""
    ref, cand = _unit(reference.astype(np.float64)), _unit(candidate.astype(np.float64))
    cosines = (ref * cand).sum(axis=1)
    k = min(_NEIGHBOURS, len(ref) - 1)
    kept = 1.0
    if k > 0:
        kept = float(
            np.mean([len(a & b) / k for a, b in zip(_knn(ref, k), _knn(cand, k), strict=True)])
        )
    return Agreement(
        pictures=len(ref),
        cosine_min=float(cosines.min()),
        cosine_mean=float(cosines.mean()),
        neighbours_kept=kept,
    )


def _worst(measured: Sequence[Agreement], texts: int) -> Agreement:
    """The agreement of the worst of several graphs, each measured on what it holds."""
    return Agreement(
        pictures=texts,
        cosine_min=min(m.cosine_min for m in measured),
        cosine_mean=min(m.cosine_mean for m in measured),
        neighbours_kept=min(m.neighbours_kept for m in measured),
    )


def _knn(vectors: np.ndarray, k: int) -> list[set[int]]:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in scores]


def _weights_stamp(encoder: OpenClipEncoder) -> WeightsStamp | None:
    path = encoder.checkpoint
    return WeightsStamp.of(path) if path is not None else None


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


@contextlib.contextmanager
def _staged(directory: Path) -> Iterator[Path]:
    """A fresh folder of this process beside ``directory`` to build an export in, removed
    afterwards (renamed into place by :func:`_publish`, or left half-made by an error)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _publish(export: TowerExport, partial: Path) -> None:
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
