"""Hugging Face text towers (XLM-R of ``mclip-b32``) as int8 ONNX Runtime graphs.

A cold query through torch imports torch and transformers and builds a 278M-parameter
tower before it encodes a word: seconds. Traced once to ONNX by torch's exporter, with the
batch and the length left free, and quantised by ONNX Runtime's dynamic quantisation, the
tower answers a query from a session and a ``tokenizers`` copy of the model's own
tokenizer (``hf_tokenizer.py``), neither of which imports torch or transformers.

The graph starts after the token embedding, which is saved beside it as an int8 table with
a scale per row (``EMBEDDINGS_FILE``), mapped by a query, which reads its few rows. Inside
the graph, that table (192M of XLM-R base's 278M weights) made a 279 MB graph that took
1.5–2.3 s to load into a session, and the export peaked at 6.4 GB; without it the graph is
87 MB and loads in 0.5 s, and the export peaks at 3.2 GB (2 busy cores, load average 7).
The agreement with torch is the same (cosine 0.99960 / 0.99971 min / mean, random
weights). The graph is saved as ONNX Runtime optimised it, which a query's session then
need not do again: 0.15 s instead of 0.36–0.47 s to open it.

Each text runs over its own tokens, as with the written CLIP text graph: the tower masks
the padding out (its attention and its mean pooling), so the vector is the same. The int8
graph is measured against the torch tower on the probe texts and a fixed multilingual set
(zh, en, ja, de, ar, emoji, …) and used only where it agrees (``Agreement.holds``).

The export runs in a child process: torch, the fp32 tower, its graph and the quantiser's
copies of it peak at several GB, none of which an indexing run, written without torch
until here, should keep; a child that dies of memory costs only this export.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from .export_records import (
    EMBEDDING_SCALES_FILE,
    EMBEDDINGS_FILE,
    TRACED,
    Agreement,
    TextExport,
)
from .onnx_int8 import TextSessions, open_session, used_tokens

if TYPE_CHECKING:
    from ..model_files import HubOptions
    from ..torch_backend.openclip import OpenClipEncoder

__all__ = ["HF_TOKENIZER", "MULTILINGUAL_QUERIES", "HFTextJob", "make_int8_hf_text_export"]

#: ``TextExport.tokenizer_kind`` of a saved Hugging Face tokenizer.
HF_TOKENIZER = "hf"
_TOKENIZER_FILE = "tokenizer.json"

#: The fixed multilingual query set every HF text export is held to, with the probe texts.
MULTILINGUAL_QUERIES = (
    "猫",
    "一只猫",
    "海滩上的日落",
    "a cat",
    "a photo of a dog on the beach",
    "sunset over the mountains",
    "猫です",
    "犬の写真",
    "桜の木",
    "Katze",
    "ein Hund im Schnee",
    "rotes Auto auf der Straße",
    "قطة",
    "كلب على الشاطئ",
    "غروب الشمس",
    "🐱",
    "🐶🌊",
    "❤️ 🌸",
    "кошка на диване",
    "un chat noir",
    "고양이",
    "बिल्ली",
)
# Beyond those, what tends to break a re-implemented tokenizer.
_TRICKY_TEXTS = (
    "Ｔｈｅ  ＣＡＴ &amp;amp; the dog",
    "naïve café résumé",
    "it's 12:30, o'clock! they'll've",
    "  spaces\tand\nnewlines  ",
    "<s> a literal </s> <pad> <mask>",
    "ÀÉÎÕÜ ß ﬁ",
    " ".join(f"word{i}" for i in range(120)),  # longer than any context: truncated
    "",
)


@dataclass(frozen=True)
class HFTextJob:
    """What the child process needs to build the torch encoder again (all picklable)."""

    profile: str
    checkpoint: Path | None
    hub: HubOptions
    directory: Path


def make_int8_hf_text_export(job: HFTextJob) -> TextExport | None:
    """Export the Hugging Face text tower of ``job.profile`` next to its image export in
    ``job.directory``, in a child process. None where the tower or its tokenizer has no
    torch-free form here; every failure, the child's death included, is a ModelError."""
    # A fresh interpreter, not multiprocessing: spawning would run the caller's main
    # module again, which a script without a ``__main__`` guard does not survive.
    result = job.directory.parent / f".{job.directory.name}.text-{os.getpid()}.pickle"
    payload = pickle.dumps(list(sys.path)) + pickle.dumps((job, result))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=payload,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if done.returncode != 0 or not result.is_file():
            why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ModelError(
                f"The process exporting the int8 text tower of {job.profile} failed (exit "
                f"{done.returncode}: {why[0]}); perhaps it ran out of memory."
            )
        export, error = pickle.loads(result.read_bytes())
    finally:
        result.unlink(missing_ok=True)
    if error:
        raise ModelError(error)
    return export  # type: ignore[no-any-return]


_CHILD = (
    "import pickle, sys; sys.path[:0] = pickle.load(sys.stdin.buffer); "
    "from xsearch.encoders.onnx_backend.hf_text_export import run_child; run_child(sys.stdin.buffer)"
)


def run_child(stream: Any) -> None:
    """The child's side: read the job from ``stream``, write (export, error) to its file."""
    job, result = pickle.load(stream)
    outcome = _export_in_child(job)
    partial = result.with_name(result.name + ".partial")
    partial.write_bytes(pickle.dumps(outcome))
    partial.replace(result)


def _export_in_child(job: HFTextJob) -> tuple[TextExport | None, str]:
    """(export, "") or (None, the error's message): the child's exceptions stay in it."""
    from ..profiles import get_profile
    from ..torch_backend.openclip import OpenClipEncoder
    from .export_steps import as_model_error

    try:
        with as_model_error(f"export the int8 text tower to {job.directory}"):
            encoder = OpenClipEncoder(
                get_profile(job.profile),
                checkpoint=job.checkpoint,
                device="cpu",
                hub=job.hub,
                precision="fp32",
            )
            return export_hf_text(encoder, job.directory), ""
    except ModelError as exc:
        return None, str(exc)


def probe_set() -> list[str]:
    from .probes import probe_texts

    return [*MULTILINGUAL_QUERIES, *probe_texts()]


def export_hf_text(encoder: OpenClipEncoder, directory: Path) -> TextExport | None:
    """The export itself, in this process (the child's work; tests call it directly)."""
    import torch

    from .export_steps import check_tools, give_back_memory
    from .onnx_export import _export_onnx, _quantise
    from .probes import agreement

    check_tools()
    made = encoder.fp32_hf_text_model()
    if made is None:
        return None
    tower, hf_tokenizer = made
    del made
    backend = getattr(getattr(hf_tokenizer, "tokenizer", None), "backend_tokenizer", None)
    if backend is None or getattr(hf_tokenizer, "tokenizer_mode", "") == "clips":
        return None
    pad_id = int(hf_tokenizer.tokenizer.pad_token_id)
    context = int(hf_tokenizer.context_length)
    tokens = encoder.tokenize(probe_set())
    with torch.inference_mode():
        reference = _torch_reference(tower, tokens, pad_id, encoder.dim)
        rows = token_rows(tokens[:8], pad_id)
        tower(torch.from_numpy(rows[0]))  # the first call allocates
        started = time.perf_counter()
        for row in rows:
            tower(torch.from_numpy(row))
        fp32_s = time.perf_counter() - started
    pid = os.getpid()
    fp32_path = directory / f".text.fp32.partial-{pid}.onnx"
    int8_path = directory / f".text.int8.partial-{pid}.onnx"
    optimised_path = directory / f".text.int8.optimised-{pid}.onnx"
    tokenizer_partial = directory / f".{_TOKENIZER_FILE}.partial-{pid}"
    draft = TextExport(
        directory,
        (context,),
        pad_id,
        Agreement(0, 0.0, 0.0, 0.0),
        0.0,
        0.0,
        context,
        made_by=TRACED,
        dynamic=True,
        tokenizer_kind=HF_TOKENIZER,
        tokenizer_clean=_clean_name(encoder),
        embeddings=EMBEDDINGS_FILE,
        optimised=True,
    )
    try:
        model: Any = tower.model
        text: Any = model.text
        _save_embeddings(text.transformer.get_input_embeddings(), directory, pid)
        body = _tower_after_embeddings(text)
        # Eight tokens without padding; the axes stay free, so any length runs.
        ids = torch.from_numpy(tokens[:1, :8].copy()).clamp(min=pad_id + 1)
        with torch.no_grad():
            example = text.transformer.get_input_embeddings()(ids)
        _export_onnx(body, example, fp32_path, "embeds", dynamic_length=True)
        del tower, text, body
        give_back_memory()
        _quantise(fp32_path, int8_path)
        fp32_path.unlink()
        give_back_memory()
        # ONNX Runtime's own optimisations of the graph, done once here, not per query.
        open_session(int8_path, threads=1, save_optimised=optimised_path)
        optimised_path.replace(draft.model_path(context))
        for name in (EMBEDDINGS_FILE, EMBEDDING_SCALES_FILE):
            _partial(directory, name, pid).replace(directory / name)
        tokenizer = _torch_free_tokenizer(backend, tokenizer_partial, draft, encoder)
    finally:
        for path in (fp32_path, int8_path, optimised_path, tokenizer_partial):
            path.unlink(missing_ok=True)
        for name in (EMBEDDINGS_FILE, EMBEDDING_SCALES_FILE):
            _partial(directory, name, pid).unlink(missing_ok=True)
    sessions = TextSessions(draft)
    started = time.perf_counter()
    int8 = sessions.encode(tokens)
    spent = time.perf_counter() - started
    export = replace(
        draft,
        agreement=agreement(reference, int8),
        int8_ms_per_text=1000 * spent / len(tokens),
        fp32_ms_per_text=1000 * fp32_s / len(rows),
        tokenizer=tokenizer,
    )
    export.save()
    return export


def _partial(directory: Path, name: str, pid: int) -> Path:
    return directory / f".{name}.partial-{pid}.npy"


def _save_embeddings(embedding: Any, directory: Path, pid: int) -> None:
    """The token embedding's output for every id, in int8 with one scale per row (the
    quantiser's symmetric formula, per row rather than per table), as .npy files that a
    query maps and reads a few rows of."""
    import torch

    vocab, width = int(embedding.num_embeddings), int(embedding.embedding_dim)
    table = np.lib.format.open_memmap(
        _partial(directory, EMBEDDINGS_FILE, pid), mode="w+", dtype=np.int8, shape=(vocab, width)
    )
    scales = np.ones(vocab, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, vocab, 16_384):
            end = min(vocab, start + 16_384)
            # The module, not its weight: some towers scale their embeddings (NLLB).
            rows = embedding(torch.arange(start, end)).float().numpy()
            peak = np.abs(rows).max(axis=1) / 127.0
            scales[start:end] = np.where(peak > 0, peak, 1.0)
            table[start:end] = np.rint(rows / scales[start:end, None]).clip(-127, 127)
    table.flush()
    del table
    np.save(_partial(directory, EMBEDDING_SCALES_FILE, pid), scales)


def _tower_after_embeddings(text: Any) -> Any:
    """open_clip's ``HFTextEncoder.forward`` from the token embeddings on, for rows
    without padding (each query runs over its own tokens): the mask is all ones, and the
    positions are counted from the first token, as the tower counts them for real tokens."""
    import torch

    class AfterEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text = text

        def forward(self, embeds: torch.Tensor) -> torch.Tensor:
            mask = torch.ones_like(embeds[..., 0], dtype=torch.long)
            out = self.text.transformer(inputs_embeds=embeds, attention_mask=mask)
            return self.text.proj(self.text.pooler(out, mask))  # type: ignore[no-any-return]

    return AfterEmbeddings().eval()


def _torch_reference(
    tower: Any, tokens: npt.NDArray[np.int64], pad_id: int, dim: int
) -> npt.NDArray[np.float32]:
    """The torch tower's vectors of padded token rows, the rows of each length in one
    batch cut to that length: what a query of one text computes (the tower masks padding
    out, so the cut changes nothing), at a fifth of the work of every row at full width."""
    import torch

    lengths = np.array([used_tokens(row, pad_id) for row in tokens])
    out = np.zeros((len(tokens), dim), dtype=np.float32)
    for n in np.unique(lengths):
        rows = lengths == n
        out[rows] = tower(torch.from_numpy(np.ascontiguousarray(tokens[rows, :n]))).float()
    return out


def _clean_name(encoder: OpenClipEncoder) -> str:
    kwargs = encoder.text_config.get("tokenizer_kwargs", {})
    return str(kwargs.get("clean", "whitespace"))


def _torch_free_tokenizer(
    backend: Any, partial: Path, draft: TextExport, encoder: OpenClipEncoder
) -> str | None:
    """Save the model's own ``tokenizers`` tokenizer if, loaded without transformers, it
    gives open_clip's token ids on every probe and tricky text."""
    from .hf_tokenizer import HFFileTokenizer

    backend.save(str(partial))
    texts = [*probe_set(), *_TRICKY_TEXTS]
    copy = HFFileTokenizer(partial, draft.context_length, draft.pad_id, draft.tokenizer_clean)
    if not np.array_equal(copy(texts), encoder.tokenize(texts)):
        return None
    partial.replace(draft.directory / _TOKENIZER_FILE)
    return _TOKENIZER_FILE


def token_rows(tokens: npt.NDArray[np.int64], pad_id: int) -> list[npt.NDArray[np.int64]]:
    """Each padded row cut to its own tokens, as a query runs."""
    return [row[None, : used_tokens(row, pad_id)] for row in tokens]
