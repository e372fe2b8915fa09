"""The towers as int8 ONNX Runtime sessions: the CPU fast path.

On a CPU the image tower is the limit of indexing, and bf16 torch already runs it near the
machine's bf16 peak. Integer matrix products (AVX-512 VNNI, AVX-VNNI, NEON dot) do twice the
work per cycle, and ONNX Runtime's dynamic quantisation needs no calibration data. Loading
the exported tower needs neither torch nor open_clip, which is most of an indexing run's
memory (bench/README.md).

The text tower of CLIP-style models is exported too: a query is a dozen tokens, where
torch spends most of its time between operators, and ONNX Runtime's int8 kernels answer in
about a third of bf16 torch's time. Queries tokenize through a saved ``tokenizers`` copy of
the model's tokenizer (``clip_tokenizer.py``), else through open_clip.

The exports (``onnx_export.py``: written from the checkpoint without torch where it knows
the towers, else traced with torch) are made once per model and machine during the first
indexing run, checked against the fp32 towers, and cached with their measured agreement.
Whether a run may use them is decided here, from those records, without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from ..base import Encoder, Vectors, l2_normalise
from ..cpu import cpu_int8_flags, cpu_model
from .preprocess import ImagePreprocess

__all__ = [
    "EMBEDDINGS_FILE",
    "EMBEDDING_SCALES_FILE",
    "EXPORT_FORMAT",
    "TRACED",
    "WRITTEN",
    "Agreement",
    "Int8Encoder",
    "TextExport",
    "TowerExport",
    "WeightsStamp",
    "current_export",
    "export_directory",
    "mark_text_not_exported",
    "onnxruntime_available",
    "text_not_exported",
    "this_machine",
    "used_tokens",
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

# Images per ONNX Runtime call. Dynamic quantisation scales each product's input by its
# largest value over the whole call, so a vector depends a little on the images beside it
# (cosine 0.9999); fixed chunks keep that small and keep ONNX Runtime at its best speed
# (ViT-B-32-256 int8: 34 images/s one at a time, 41 in eights, 37 in 32s).
_CHUNK = 8


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported (it is a dependency; a broken install may lack it)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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


def used_tokens(row: npt.NDArray[np.int64], pad: int) -> int:
    """How many positions of a padded token row hold the text (its end token included)."""
    used = np.flatnonzero(row != pad)
    return int(used[-1]) + 1 if used.size else 1


class TextSessions:
    """The text tower's sessions, one per graph, each on one thread (a query is a few rows
    of work; a second thread only waits on the first). Each is loaded the first time a text
    goes through it: a cold query of a few words loads one 74 MB graph (ViT-B-32), not all."""

    def __init__(self, export: TextExport) -> None:
        self.export = export
        self._sessions: dict[Path, Any] = {}
        self._table: Any = None
        self._scales: Any = None
        self.tokenize: Callable[[Sequence[str]], npt.NDArray[np.int64]] | None = None
        if export.tokenizer is not None and export.tokenizer_kind == "hf":
            from .hf_tokenizer import HFFileTokenizer

            self.tokenize = HFFileTokenizer(
                export.directory / export.tokenizer,
                export.context_length,
                export.pad_id,
                export.tokenizer_clean,
            )
        elif export.tokenizer is not None:
            from .clip_tokenizer import ClipTokenizer

            self.tokenize = ClipTokenizer(
                export.directory / export.tokenizer, export.context_length
            )

    def encode(self, tokens: npt.NDArray[np.int64], *, length: int | None = None) -> Vectors:
        """Raw vectors of token rows (n, context), one text per call, each through the
        shortest graph that holds it, or through the graph of ``length`` (to measure it)."""
        pad = self.export.pad_id
        out = []
        for row in tokens:
            graph = length or self.export.length_for(used_tokens(row, pad))
            padded = np.full((1, graph), pad, dtype=np.int64)
            take = min(graph, row.shape[0])
            padded[0, :take] = row[:take]
            session = self._session(graph)
            name = session.get_inputs()[0].name
            feed = self._embedded(padded) if self.export.embeddings else padded
            out.append(session.run(None, {name: feed})[0][0])
        vectors: Vectors = np.stack(out).astype(np.float32, copy=False)
        return vectors

    def _embedded(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Token rows looked up in the mapped int8 table, scaled back to floats."""
        if self._table is None:
            folder, name = self.export.directory, self.export.embeddings
            assert name is not None
            self._table = np.load(folder / name, mmap_mode="r")
            self._scales = np.load(folder / EMBEDDING_SCALES_FILE, mmap_mode="r")
        rows = np.clip(ids, 0, len(self._table) - 1)
        scaled: npt.NDArray[np.float32] = self._table[rows].astype(np.float32)
        scaled *= self._scales[rows][..., None]
        return scaled

    def _session(self, length: int) -> Any:
        path = self.export.model_path(length)
        if path not in self._sessions:
            self._sessions[path] = open_session(path, threads=1, optimised=self.export.optimised)
        return self._sessions[path]


def open_session(
    model_path: Path,
    threads: int | None = None,
    *,
    optimised: bool = False,
    save_optimised: Path | None = None,
) -> Any:
    """An ONNX Runtime CPU session for ``model_path``: one whose graph ONNX Runtime already
    optimised (``optimised``), or one that saves its optimised graph to ``save_optimised``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if optimised:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_optimised is not None:
        options.optimized_model_filepath = str(save_optimised)
    # Idle pool threads would spin between calls against the decoding done in line.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initialisers are not for users
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ModelError(
            f"Could not load the int8 graph {model_path}: {exc}. Delete that folder to "
            "have it exported again, or index with --precision bf16."
        ) from exc


def run_session(session: Any, pixels: npt.NDArray[np.float32]) -> Vectors:
    """Raw (unnormalised) image vectors of a batch, ``_CHUNK`` images per call."""
    name = session.get_inputs()[0].name
    chunks = [
        session.run(None, {name: np.ascontiguousarray(pixels[i : i + _CHUNK])})[0]
        for i in range(0, len(pixels), _CHUNK)
    ]
    out: Vectors = np.concatenate(chunks).astype(np.float32, copy=False)
    return out


class Int8Encoder:
    """Images through the int8 ONNX tower; texts through the int8 text tower where one was
    exported and agrees with fp32, else through the torch encoder.

    Built by the Engine with what it knows without torch: the model's identity (from a
    cached export, or from ``torch_encoder``) and two callables. ``prepare(again)`` returns
    the export, making it if there is none yet (or anew, if ``again``); it is called the
    first time images are needed, so a text query never exports anything.
    ``torch_encoder`` returns the ordinary encoder: it encodes texts that have no int8
    tower, and images too when the int8 tower does not agree with fp32 or could not be
    made (unless ``forced``, i.e. int8 was asked for by name).
    """

    def __init__(
        self,
        *,
        profile_name: str,
        fingerprint: str,
        dim: int,
        input_size: int,
        prepare: Callable[[bool], TowerExport],
        torch_encoder: Callable[[], Encoder],
        export_dir: Path,
        forced: bool = False,
    ) -> None:
        self._profile_name = profile_name
        self._fingerprint = fingerprint
        self._dim = dim
        self._input_size = input_size
        self._prepare = prepare
        self._torch_encoder = torch_encoder
        self._forced = forced
        self._lock = threading.Lock()
        self._export: TowerExport | None = None
        self._session: Any = None
        self._images_by_torch = False
        self._export_dir = export_dir
        self._text: TextSessions | None = None
        self._text_resolved = False
        self.notices: list[str] = []

    # -- resolving the image path once -------------------------------------------------------

    def _resolve(self) -> None:
        with self._lock:
            if self._export is not None or self._images_by_torch:
                return
            try:
                export = self._prepare(False)
                if export.agreement.holds or self._forced:
                    self._session, self._export = self._open_or_remake(export)
                    return
            except ModelError as exc:  # no usable export: torch encodes images instead
                if self._forced:
                    raise
                self._images_by_torch = True
                self.notices.append(f"{exc} Images are encoded by torch instead.")
                return
            self._images_by_torch = True
            self.notices.append(
                f"The int8 image tower of {self._profile_name} does not agree closely enough "
                f"with fp32 on this CPU ({export.agreement.shortfall()}; "
                f"{export.agreement.describe()}); images are encoded by torch. "
                "Pass --precision int8 to use it anyway."
            )

    def _open_or_remake(self, export: TowerExport) -> tuple[Any, TowerExport]:
        try:
            return open_session(export.model_path), export
        except ModelError:  # a damaged cache file: export again, once
            remade = self._prepare(True)
            return open_session(remade.model_path), remade

    @property
    def export(self) -> TowerExport | None:
        """The export in use, once images have been encoded (None: torch encodes them)."""
        return self._export

    @property
    def image_precision(self) -> str:
        """What encodes images: "int8", or the torch encoder's precision once it took over."""
        self._resolve()
        if self._images_by_torch:
            return str(getattr(self._torch_encoder(), "image_precision", "fp32"))
        return "int8"

    # -- the Encoder protocol ----------------------------------------------------------------

    @property
    def profile_name(self) -> str:
        return self._profile_name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        self._resolve()
        if self._images_by_torch:
            return self._torch_encoder().preprocess
        assert self._export is not None
        return self._export.preprocess

    def encode_images(self, pixels: Any) -> Vectors:
        if len(pixels) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        self._resolve()
        if self._images_by_torch:
            return self._torch_encoder().encode_images(pixels)
        return l2_normalise(run_session(self._session, np.asarray(pixels, dtype=np.float32)))

    @property
    def text_precision(self) -> str:
        """What encodes texts: "int8", or "torch" (the torch encoder's own precision)."""
        return "int8" if self._text_sessions() is not None else "torch"

    def _text_sessions(self) -> TextSessions | None:
        """The int8 text tower, when one was exported with this model's current image export
        and agrees with fp32 (or int8 was asked for). Never exports: a query must not wait."""
        with self._lock:
            if not self._text_resolved:
                self._text_resolved = True
                image = current_export(self._export_dir)
                text = TextExport.load(self._export_dir)
                if (
                    image is not None
                    and image.fingerprint == self._fingerprint
                    and text is not None
                    and (text.agreement.holds or self._forced)
                ):
                    try:
                        self._text = TextSessions(text)
                    except ModelError as exc:
                        self.notices.append(f"{exc} Texts are encoded by torch instead.")
            return self._text

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        sessions = self._text_sessions()
        try:
            if sessions is not None and sessions.tokenize is not None:
                # Neither torch nor open_clip is needed: a cold query starts in a second.
                return l2_normalise(sessions.encode(sessions.tokenize(texts)))
            encoder = self._torch_encoder()
            tokenize = getattr(encoder, "tokenize", None)
            if sessions is not None and tokenize is not None:
                return l2_normalise(sessions.encode(tokenize(texts)))
        except ModelError as exc:  # a damaged graph in the cache: torch answers instead
            with self._lock:
                self._text = None
            self.notices.append(f"{exc} Texts are encoded by torch instead.")
        return self._torch_encoder().encode_texts(texts)
