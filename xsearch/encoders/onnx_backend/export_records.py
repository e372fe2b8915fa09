"""What an int8 export is on disk, and whether a run may use it; read without torch.

An export is a folder per model, checkpoint and CPU (:func:`export_directory`) that holds
the int8 graphs and a JSON record per tower (:class:`TowerExport`, :class:`TextExport`):
the checkpoint it was made from (:class:`WeightsStamp`), how it was made (``TRACED`` by
``onnx_export.py``, ``WRITTEN`` by ``direct_export.py``), the CPU it was made for, and how
closely its vectors agree with fp32 (:class:`Agreement`). The agreement gate
(``MIN_COSINE``, ``MEAN_COSINE``) decides from that record whether ``auto`` uses a tower;
``onnx_int8.py`` runs the graphs, ``export_status.py`` says why a cached one is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..cpu import cpu_int8_flags, cpu_model
from .preprocess import ImagePreprocess

__all__ = [
    "EMBEDDINGS_FILE",
    "EMBEDDING_SCALES_FILE",
    "EXPORT_FORMAT",
    "MEAN_COSINE",
    "MIN_COSINE",
    "MODEL_FILE",
    "TRACED",
    "WRITTEN",
    "Agreement",
    "TextExport",
    "TowerExport",
    "WeightsStamp",
    "current_export",
    "export_directory",
    "mark_text_not_exported",
    "safe_profile_name",
    "text_not_exported",
    "this_machine",
]

#: Bumped when the exported graph or its record changes meaning; older exports are redone.
EXPORT_FORMAT = 1
#: The same for the text tower's record (2: it names the torch-free tokenizer; 3: attention
#: output and text projections stay fp32, and every graph is measured).
TEXT_EXPORT_FORMAT = 3
MODEL_FILE = "visual.int8.onnx"
#: How an export's graphs were made: traced from the torch model (its fp32 reference is
#: torch), or written from the checkpoint by ``onnx_graphs.py`` (its reference is the fp32
#: graph written the same way, which the tests hold to open_clip's own towers).
TRACED, WRITTEN = "traced from torch", "written from the checkpoint"
RECORD_FILE = "export.json"
TEXT_RECORD_FILE = "text.json"
# Written instead of a text record when the text tower was not exported, with the reason:
# later runs then need not import torch to find that out again.
TEXT_NONE_FILE = "text.none"
# A text graph that starts after the token embedding: the table, and its per-row scales.
EMBEDDINGS_FILE = "embeddings.int8.npy"
EMBEDDING_SCALES_FILE = "embeddings.scale.npy"

# The int8 tower is used by default only when, over the probe pictures, its vectors agree
# with the fp32 tower's at least this well. bf16 weights reach 0.9999 (min) on the trained
# toy model; int8 0.9995 there and 0.9998 on ViT-B-32. A tower whose activations have
# outliers that 8 bits cannot hold falls far below (0.98 or worse) and is not used.
MIN_COSINE = 0.998
MEAN_COSINE = 0.9995


def export_directory(
    cache_root: Path, profile: str, checkpoint: Path | None, machine: str | None = None
) -> Path:
    """Where the int8 export of ``profile`` (with this ``checkpoint``, if any) is cached for
    this CPU (or for ``machine``, a :func:`this_machine` of another one)."""
    where = str(checkpoint.resolve()) if checkpoint else None
    ident = json.dumps([EXPORT_FORMAT, profile, where, machine or this_machine()])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_root / "onnx" / f"{safe_profile_name(profile)}-{digest}"


def safe_profile_name(profile: str) -> str:
    """``profile`` as the start of an export folder's name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in profile)


def this_machine() -> str:
    """The kind of CPU an export belongs to: its architecture, its model name and the flags
    that choose ONNX Runtime's int8 kernels. The export's weights depend on those flags
    (``reduce_range`` without VNNI), and so does the agreement measured with its kernels;
    a model name alone ("AMD EPYC Processor" in a virtual machine) can stand for CPUs with
    and without VNNI."""
    flags = " ".join(cpu_int8_flags()) or "no int8 dot products"
    return f"{platform.machine()} {cpu_model()} ({flags})"


@dataclass(frozen=True)
class WeightsStamp:
    """The checkpoint an export was made from; a changed file makes the export stale."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> WeightsStamp:
        st = path.stat()
        return cls(str(path.resolve()), st.st_size, st.st_mtime_ns)

    def current(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns) == (self.size, self.mtime_ns)


@dataclass(frozen=True)
class Agreement:
    """How the int8 tower's vectors compare with the fp32 tower's on the probe pictures."""

    pictures: int  # probe pictures (or texts, for a text tower)
    cosine_min: float
    cosine_mean: float
    # Of each probe picture's 10 nearest probe pictures (fp32), how many int8 keeps.
    neighbours_kept: float

    @property
    def holds(self) -> bool:
        return self.cosine_min >= MIN_COSINE and self.cosine_mean >= MEAN_COSINE

    def shortfall(self) -> str:
        """What misses the gate ("cosine to fp32 0.99712 (min) < 0.998"); "" where it holds."""
        misses = [
            f"{value:.5f} ({name}) < {gate}"
            for name, value, gate in (
                ("min", self.cosine_min, MIN_COSINE),
                ("mean", self.cosine_mean, MEAN_COSINE),
            )
            if not value >= gate  # NaN misses too
        ]
        return "cosine to fp32 " + " and ".join(misses) if misses else ""

    def describe(self, what: str = "pictures") -> str:
        return (
            f"cosine to fp32 {self.cosine_min:.5f} (min) / {self.cosine_mean:.5f} (mean) over "
            f"{self.pictures} {what}, {self.neighbours_kept:.1%} of nearest neighbours kept"
        )


@dataclass(frozen=True)
class TowerExport:
    """A cached int8 image tower and what is known about it."""

    directory: Path
    profile: str
    fingerprint: str
    dim: int
    preprocess: ImagePreprocess
    weights: WeightsStamp | None
    agreement: Agreement
    # Measured on the probe pictures when the export was made, for `xsearch info` and notes.
    int8_images_per_s: float
    fp32_images_per_s: float
    export_seconds: float
    onnxruntime_version: str
    made_by: str = TRACED
    # The CPU it was made and measured on (``this_machine()``); "" in older records.
    machine: str = ""

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    def current(self) -> bool:
        """Whether the checkpoint it was made from is unchanged and the model file is there."""
        if not self.model_path.is_file():
            return False
        return self.weights is None or self.weights.current()

    def save(self) -> None:
        doc: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "profile": self.profile,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "preprocess": self.preprocess.to_json(),
            "weights": asdict(self.weights) if self.weights else None,
            "agreement": asdict(self.agreement),
            "int8_images_per_s": self.int8_images_per_s,
            "fp32_images_per_s": self.fp32_images_per_s,
            "export_seconds": self.export_seconds,
            "onnxruntime_version": self.onnxruntime_version,
            "made_by": self.made_by,
            "machine": self.machine,
        }
        _write_atomically(self.directory / RECORD_FILE, json.dumps(doc, indent=2))

    @classmethod
    def load(cls, directory: Path) -> TowerExport | None:
        """The export in ``directory``, or None when there is none (or an unusable one)."""
        try:
            doc = _read_record(directory / RECORD_FILE, EXPORT_FORMAT)
            if doc is None:
                return None
            weights = doc["weights"]
            return cls(
                directory=directory,
                profile=str(doc["profile"]),
                fingerprint=str(doc["fingerprint"]),
                dim=int(doc["dim"]),
                preprocess=ImagePreprocess.from_json(doc["preprocess"]),
                weights=WeightsStamp(**weights) if weights else None,
                agreement=Agreement(**doc["agreement"]),
                int8_images_per_s=float(doc["int8_images_per_s"]),
                fp32_images_per_s=float(doc["fp32_images_per_s"]),
                export_seconds=float(doc["export_seconds"]),
                onnxruntime_version=str(doc["onnxruntime_version"]),
                made_by=str(doc.get("made_by", TRACED)),
                machine=str(doc.get("machine", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class TextExport:
    """A cached int8 text tower, next to the image tower's export of the same model: one
    graph per padded length (a traced graph has fixed shapes), or one graph of any length
    (``dynamic``: the written graphs), through which each text runs over its own tokens."""

    directory: Path
    lengths: tuple[int, ...]
    pad_id: int
    agreement: Agreement
    int8_ms_per_text: float
    fp32_ms_per_text: float
    context_length: int = 77
    # A torch-free tokenizer file in ``directory``, saved only where it gave open_clip's
    # exact token ids on every probe text; None: queries tokenize through open_clip.
    tokenizer: str | None = None
    made_by: str = TRACED
    dynamic: bool = False
    # What ``tokenizer`` is: open_clip's CLIP tokenizer ("clip", ``clip_tokenizer.py``) or a
    # Hugging Face tower's own ("hf", ``hf_tokenizer.py``), and that one's text cleaning.
    tokenizer_kind: str = "clip"
    tokenizer_clean: str = "whitespace"
    # Where the token embedding is a table beside the graph (``EMBEDDINGS_FILE``: int8 rows,
    # one scale each), the graph takes embedded rows, not token ids: a query reads the few
    # rows it needs from a mapped file instead of loading a 250,002-row table.
    embeddings: str | None = None
    # The graph was saved by ONNX Runtime after its own graph optimisations (for this CPU,
    # as every export is), so a session opens it with them off: 0.15 s instead of 0.36–0.47 s
    # for XLM-R's 87 MB graph, the same vectors.
    optimised: bool = False

    def model_path(self, length: int) -> Path:
        if self.dynamic:
            return self.directory / "text.int8.onnx"
        return self.directory / f"text.{length}.int8.onnx"

    def length_for(self, used: int) -> int:
        """The length a text of ``used`` tokens runs at: its own (a graph of any length),
        else that of the shortest graph that holds it (the last one is the full context)."""
        if self.dynamic:
            return max(1, min(used, self.context_length))
        return next((n for n in self.lengths if n >= used), self.lengths[-1])

    def save(self) -> None:
        doc = {
            "format": TEXT_EXPORT_FORMAT,
            "lengths": list(self.lengths),
            "pad_id": self.pad_id,
            "agreement": asdict(self.agreement),
            "int8_ms_per_text": self.int8_ms_per_text,
            "fp32_ms_per_text": self.fp32_ms_per_text,
            "context_length": self.context_length,
            "tokenizer": self.tokenizer,
            "made_by": self.made_by,
            "dynamic": self.dynamic,
            "tokenizer_kind": self.tokenizer_kind,
            "tokenizer_clean": self.tokenizer_clean,
            "embeddings": self.embeddings,
            "optimised": self.optimised,
        }
        _write_atomically(self.directory / TEXT_RECORD_FILE, json.dumps(doc, indent=2))

    @classmethod
    def load(cls, directory: Path) -> TextExport | None:
        try:
            doc = _read_record(directory / TEXT_RECORD_FILE, TEXT_EXPORT_FORMAT)
            if doc is None:
                return None
            export = cls(
                directory=directory,
                lengths=tuple(int(n) for n in doc["lengths"]),
                pad_id=int(doc["pad_id"]),
                agreement=Agreement(**doc["agreement"]),
                int8_ms_per_text=float(doc["int8_ms_per_text"]),
                fp32_ms_per_text=float(doc["fp32_ms_per_text"]),
                context_length=int(doc["context_length"]),
                tokenizer=doc["tokenizer"],
                made_by=str(doc.get("made_by", TRACED)),
                dynamic=bool(doc.get("dynamic", False)),
                tokenizer_kind=str(doc.get("tokenizer_kind", "clip")),
                tokenizer_clean=str(doc.get("tokenizer_clean", "whitespace")),
                embeddings=doc.get("embeddings"),
                optimised=bool(doc.get("optimised", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not export.lengths or not all(export.model_path(n).is_file() for n in export.lengths):
            return None
        tables = (export.embeddings, EMBEDDING_SCALES_FILE) if export.embeddings else ()
        if not all((directory / name).is_file() for name in tables):
            return None
        if export.tokenizer is not None and not (directory / export.tokenizer).is_file():
            return replace(export, tokenizer=None)
        return export


def current_export(directory: Path) -> TowerExport | None:
    """The image export in ``directory`` if there is one and its checkpoint is unchanged."""
    export = TowerExport.load(directory)
    return export if export is not None and export.current() else None


def text_not_exported(directory: Path) -> str | None:
    """Why the text tower of this export has no int8 graphs, if an export run said so."""
    try:
        return (directory / TEXT_NONE_FILE).read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return None


def mark_text_not_exported(directory: Path, reason: str) -> None:
    _write_atomically(directory / TEXT_NONE_FILE, reason + "\n")


def _write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file of this process, then a rename:
    a reader never sees half a record, and two exporters never share a temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _read_record(path: Path, fmt: int) -> dict[str, Any] | None:
    """The JSON record at ``path`` if it is of format ``fmt``; None if absent or older."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        return None
    return doc
