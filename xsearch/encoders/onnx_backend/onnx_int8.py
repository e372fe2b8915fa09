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

The exports (``direct_export.py``: written from the checkpoint without torch where it
knows the towers, else traced with torch by ``onnx_export.py``) are made once per model and
machine during the first indexing run, checked against the fp32 towers, and cached with
their measured agreement. Whether a run may use them is decided from those records
(``export_records.py``), without importing torch; this module runs them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from ..base import Encoder, Vectors, l2_normalise
from .export_records import EMBEDDING_SCALES_FILE, TextExport, TowerExport, current_export

__all__ = [
    "Int8Encoder",
    "TextSessions",
    "onnxruntime_available",
    "open_session",
    "run_session",
    "used_tokens",
]

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
