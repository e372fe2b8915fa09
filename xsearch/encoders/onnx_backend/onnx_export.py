"""Make a model's int8 towers with torch: traced to ONNX, quantised, then measured.

The route for every tower ``direct_export.py`` cannot write without torch: the torch model
is traced to ONNX (opset 17, any batch size), and its matrix products' weights quantised to
int8 per output channel (ONNX Runtime's dynamic quantisation, its per-channel step
vectorised by ``per_channel.py``: no calibration data), then measured against the torch
tower on the probes (``probes.py``). This imports torch and builds the fp32 model: about
30 s and 2 GB for ViT-B-32. Why both routes, with the numbers that chose them: this
package's ``__init__``.

The tracing and quantising steps (``_export_onnx``, ``_quantise``) serve
``hf_text_export.py`` too. The result is cached by the Engine and loaded by
``onnx_int8.py`` without torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from .export_records import MODEL_FILE, TextExport, TowerExport, WeightsStamp, this_machine
from .export_steps import (
    TEXT_FP32_NODES,
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
from .onnx_int8 import TextSessions, used_tokens
from .probes import NOT_MEASURED, PROBE_PICTURES, agreement, probe_pixels, probe_texts, worst

if TYPE_CHECKING:  # torch is imported only by the steps that trace a tower
    import torch

    from ..torch_backend.openclip import OpenClipEncoder

__all__ = [
    "make_int8_export",
    "make_int8_text_export",
]

# Padded lengths of the text graphs below the full context: a query of up to 16 tokens
# (most are) runs a graph a fifth the size of the 77-token one.
TEXT_LENGTHS = (16,)


def make_int8_export(
    encoder: OpenClipEncoder, directory: Path, *, probe_pictures: int = PROBE_PICTURES
) -> TowerExport:
    """Export ``encoder``'s image tower to ``directory`` (replacing what is there).

    Every failure (tools missing, an unsupported graph, a full disk, a read-only cache,
    memory) is a ModelError, which ``auto`` answers by staying on torch.
    """
    with as_model_error(f"export the int8 image tower to {directory}"):
        try:
            return _make_int8_export(encoder, directory, probe_pictures)
        finally:
            give_back_memory()  # the fp32 tower and the graphs are gone by now


def _make_int8_export(
    encoder: OpenClipEncoder, directory: Path, probe_pictures: int
) -> TowerExport:
    import torch

    started = time.perf_counter()
    check_tools()
    with as_model_error("build the fp32 image tower for export"):
        tower, cfg = encoder.fp32_image_model()
    preprocess = preprocess_of(cfg, encoder.profile_name)
    with staged(directory) as partial:
        pixels = probe_pixels(preprocess, probe_pictures)
        reference, fp32_speed = timed(_torch_vectors, tower, pixels)
        fp32_path = partial / "visual.fp32.onnx"
        _export_onnx(tower, torch.zeros(2, 3, preprocess.size, preprocess.size), fp32_path)
        # The torch tower is done with: its memory goes back before the quantiser's peak.
        del tower
        give_back_memory()
        _quantise(fp32_path, partial / MODEL_FILE)
        fp32_path.unlink()
        give_back_memory()
        int8, int8_speed = graph_vectors(partial / MODEL_FILE, pixels)
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
            onnxruntime_version=ort_version(),
            machine=this_machine(),
        )
        publish(export, partial)
    return export


def make_int8_text_export(encoder: OpenClipEncoder, directory: Path) -> TextExport | None:
    """Export ``encoder``'s text tower next to its image tower's export in ``directory``.

    One graph per padded length (``TEXT_LENGTHS`` and the full context), because a traced
    graph has fixed shapes. None for towers that cannot be run at a fixed padded length;
    every failure is a ModelError.
    """
    with as_model_error(f"export the int8 text tower to {directory}"):
        try:
            return _make_int8_text_export(encoder, directory)
        finally:
            give_back_memory()


def _make_int8_text_export(encoder: OpenClipEncoder, directory: Path) -> TextExport | None:
    import torch

    check_tools()
    made = encoder.fp32_text_model()
    if made is None:
        return None
    tower, pad_id = made
    del made  # else the tuple keeps the tower alive through the quantiser's peak
    context = int(encoder.tokenize(["x"]).shape[1])
    lengths = tuple(sorted({n for n in TEXT_LENGTHS if n < context} | {context}))
    tokens = encoder.tokenize(probe_texts())
    draft = TextExport(directory, lengths, pad_id, NOT_MEASURED, 0.0, 0.0)
    # Each probe text goes through the graph a query of its length takes. The torch tower
    # runs each group at that graph's length too (the same vectors for the causal towers
    # exported here, and a fifth of the work for the short texts).
    route = np.array([draft.length_for(used_tokens(row, pad_id)) for row in tokens])
    groups = [(n, route == n) for n in lengths if (route == n).any()]
    reference = np.zeros((len(tokens), encoder.dim), dtype=np.float32)
    with torch.inference_mode():
        for n, rows in groups:
            reference[rows] = tower(torch.from_numpy(tokens[rows, :n])).float().numpy()
        _, fp32_s = timed(
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
        give_back_memory()
        for length in lengths:
            keep = _text_fp32_nodes(fp32_paths[length])
            _quantise(fp32_paths[length], int8_paths[length], keep_fp32=keep)
            int8_paths[length].replace(directory / f"text.{length}.int8.onnx")
            give_back_memory()
    finally:
        for path in (*fp32_paths.values(), *int8_paths.values()):
            path.unlink(missing_ok=True)
    sessions = TextSessions(draft)
    int8, spent = timed(sessions.encode, tokens)
    # Each graph is measured on the probe texts it takes, and the worst graph counts.
    measured = [agreement(reference[rows], int8[rows]) for _, rows in groups]
    export = replace(
        draft,
        agreement=worst(measured, len(tokens)),
        int8_ms_per_text=1000 * spent / len(tokens),
        fp32_ms_per_text=1000 * fp32_s / 8,
        context_length=context,
        tokenizer=_torch_free_tokenizer(encoder, directory, context),
    )
    export.save()
    return export


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
    partial = directory / f".{TOKENIZER_FILE}.partial-{os.getpid()}"
    try:
        build_clip_tokenizer(Path(default_bpe()), partial)
        texts = [*probe_texts(), *_TRICKY_TEXTS]
        same = np.array_equal(ClipTokenizer(partial, context)(texts), encoder.tokenize(texts))
        if not same:
            return None
        partial.replace(directory / TOKENIZER_FILE)
        return TOKENIZER_FILE
    finally:
        partial.unlink(missing_ok=True)


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
    quantising = as_model_error("quantise the exported tower")
    with _quiet_root_logger(), quantising, vectorised_per_channel():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Without VNNI, u8 x s8 products can saturate their 16-bit sums; 7-bit weights
            # avoid that at a small cost in precision (ONNX Runtime's advice).
            reduce_range=not cpu_has_vnni(),
            nodes_to_exclude=list(keep_fp32),
        )


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
        if TEXT_FP32_WEIGHTS.search(carried) or TEXT_FP32_NODES.search(node.name):
            names.append(node.name)
            if node.op_type == "Gemm":
                # The quantiser splits a Gemm into "<name>_MatMul" and an Add before it
                # reads the exclusions, so only that name keeps it fp32.
                names.append(f"{node.name}_MatMul")
    return names


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


def _weights_stamp(encoder: OpenClipEncoder) -> WeightsStamp | None:
    path = encoder.checkpoint
    return WeightsStamp.of(path) if path is not None else None
