"""decode → embed as pure functions over batches.

The local indexer runs them in worker processes that may die (:mod:`xsearch.workers`); a
Ray Data adapter can map the same two functions over its blocks. Neither touches the store
or the vector index.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
from PIL import Image

from .encoders.base import Encoder, Vectors
from .errors import MediaError
from .media.hashing import content_hash
from .media.images import decode_image, display
from .media.sniff import sniff
from .media.video import KEYFRAME_ONLY_ABOVE, DecodeState, probe_video, sample_frames

# torch is imported where it is used, not here: a re-run that finds nothing to decode (and
# every command that only reads the store) then never pays for importing it (1.5 s).

__all__ = [
    "DecodeOptions",
    "Decoded",
    "WorkItem",
    "decode_item",
    "embed_decoded",
    "failure_of",
]

# A preprocessed picture, (3, H, W) float32: a torch tensor (open_clip's transform) or a numpy
# array (the torch-free transform of the int8 path). Batches stack whichever it is.
Pixels = Any
Preprocess = Callable[[Image.Image], Pixels]


@dataclass(frozen=True)
class WorkItem:
    """One file to decode. ``key`` lets the caller match results to its plan."""

    key: int
    path: bytes
    size: int
    mtime_ns: int
    # "image", "video" or "unknown", from the name; the content decides in the end.
    kind: str


@dataclass(frozen=True, kw_only=True)
class DecodeOptions:
    max_pixels: int
    timeout: float
    video_interval: float
    # Decode JPEGs at reduced size no smaller than this (None: full size).
    draft_size: int | None = None


@dataclass
class Decoded:
    """A decoded file: preprocessed frames, their times and the file's metadata, or an error."""

    key: int
    path: bytes
    media_type: str = "image"
    pixels: Pixels | None = None
    # (t, t_start, t_end) per frame; None for still images.
    times: list[tuple[float | None, float | None, float | None]] = field(default_factory=list)
    content_hash: str = ""
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: float | None = None
    captured_at: float | None = None
    partial_note: str | None = None
    error: tuple[str, str] | None = None

    @property
    def frames(self) -> int:
        return 0 if self.pixels is None else int(self.pixels.shape[0])


class _TimeoutError(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _TimeoutError after ``seconds``, where signals can be used (a process's main thread)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(_sig: int, _frame: FrameType | None) -> None:
        raise _TimeoutError

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def decode_item(
    item: WorkItem,
    preprocess: Preprocess,
    opts: DecodeOptions,
    *,
    on_limit: Callable[[float], None] | None = None,
) -> Decoded:
    """Decode one file into preprocessed frames. Never raises for a bad file: sets ``error``.

    This is the boundary of one file: whatever probing, hashing, decoding or preprocessing
    it raises (short of Ctrl-C) becomes this file's failure. ``on_limit`` hears the time
    limit of the decoding step once it is known (a video's grows with its length), so that
    a supervisor can stop a decoder stuck in native code, which no signal interrupts.
    """
    out = Decoded(key=item.key, path=item.path)
    try:
        if item.size == 0:
            raise MediaError(display(item.path), "empty", "the file is empty (0 bytes)")
        with _time_limit(opts.timeout):
            out.content_hash = content_hash(item.path, item.size)
            kind = sniff(item.path) or item.kind
            # A video may take as many more seconds as it lasts: an hour-long film must not
            # hit a limit meant for one photo.
            allowance = _video_duration(item.path) if kind == "video" else 0.0
        if on_limit is not None and opts.timeout > 0:
            on_limit(opts.timeout + allowance)
        with _time_limit(opts.timeout + allowance):
            if kind == "video":
                _decode_video(item, preprocess, opts, out)
            else:
                _decode_still(item, preprocess, opts, out)
    except Exception as exc:  # the per-file boundary: see the docstring
        out.error = failure_of(exc, opts)
    if out.error is not None:
        out.pixels = None
        out.times = []
    return out


def failure_of(exc: BaseException, opts: DecodeOptions | None = None) -> tuple[str, str]:
    """The (reason, detail) a user sees for an exception raised while reading one file.

    Known categories keep their names; anything else is ``undecodable`` with the exception's
    type and message, so that a bug report can name what a decoder raised.
    """
    if isinstance(exc, MediaError):
        return exc.reason, exc.detail
    if isinstance(exc, _TimeoutError):
        limit = f" {opts.timeout:g} s" if opts is not None else " its time limit"
        return "timed-out", f"took longer than{limit} (raise it with --file-timeout)"
    if isinstance(exc, PermissionError):
        return "unreadable", f"permission denied ({exc.strerror})"
    if isinstance(exc, MemoryError):
        return "too-large", "ran out of memory while decoding"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "unreadable", str(exc)
    return "undecodable", _exception_text(exc)


def _exception_text(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _video_duration(path: bytes) -> float:
    """The declared duration, or 0 when it cannot be read (decoding then reports why)."""
    try:
        return probe_video(path).duration or 0.0
    except MediaError:
        return 0.0


def _decode_still(
    item: WorkItem, preprocess: Preprocess, opts: DecodeOptions, out: Decoded
) -> None:
    img = decode_image(item.path, max_pixels=opts.max_pixels, draft_size=opts.draft_size)
    out.media_type = "image"
    out.pixels = preprocess(img.image)[None]
    out.times = [(None, None, None)]
    out.width, out.height, out.captured_at = img.width, img.height, img.captured_at
    if img.partial:
        out.partial_note = "truncated file: the missing part was filled in"


def _decode_video(
    item: WorkItem, preprocess: Preprocess, opts: DecodeOptions, out: Decoded
) -> None:
    state = DecodeState()
    info, frames = sample_frames(item.path, interval=opts.video_interval, state=state)
    out.media_type = "video"
    out.width, out.height, out.fps = info.width, info.height, info.fps
    if info.width * info.height > opts.max_pixels:
        raise MediaError(display(item.path), "too-large", f"{info.width}×{info.height} frames")
    tensors: list[Pixels] = []
    stamps: list[float] = []
    for frame in frames:
        tensors.append(preprocess(frame.image))
        stamps.append(frame.t)
    if not tensors:
        raise MediaError(
            display(item.path), "broken", state.notes[0] if state.notes else "no decodable frame"
        )
    last = state.last_t if state.last_t is not None else stamps[-1]
    step = 1.0 / info.fps if info.fps else opts.video_interval
    end = info.duration if info.duration is not None else last + step
    if (
        not state.notes
        and info.duration is not None
        and last < info.duration - _truncation_slack(opts)
    ):
        state.notes.append(
            f"decoding ended at {last:.1f} s of {info.duration:.1f} s: the file is truncated"
        )
    if state.notes:
        # A damaged file's duration is what could be decoded, not what its header claims.
        end = last + step
        out.partial_note = state.notes[0]
    out.duration = max(end, stamps[-1])
    out.pixels = _concat([t[None] for t in tensors])
    bounds = [*stamps[1:], out.duration]
    out.times = [(t, t, t_end) for t, t_end in zip(stamps, bounds, strict=True)]


def _truncation_slack(opts: DecodeOptions) -> float:
    """How far before the declared end decoding may stop without the file counting as cut.

    In keyframe-only mode the last decoded frame can be a whole GOP before the end.
    """
    return max(2.0, 2 * opts.video_interval) if opts.video_interval <= KEYFRAME_ONLY_ABOVE else 12.0


def embed_decoded(encoder: Encoder, batch: Sequence[Decoded]) -> list[Vectors]:
    """Encode the frames of several decoded files in one encoder call; one array per file."""
    tensors = [d.pixels for d in batch if d.pixels is not None and d.frames]
    if not tensors:
        empty = np.zeros((0, encoder.dim), dtype=np.float32)
        return [empty for _ in batch]
    vectors = encoder.encode_images(_concat(tensors))
    out: list[Vectors] = []
    offset = 0
    for d in batch:
        out.append(vectors[offset : offset + d.frames])
        offset += d.frames
    return out


def _concat(batches: list[Pixels]) -> Pixels:
    """Join along dim 0: numpy arrays with numpy (no torch import), tensors with torch."""
    if all(isinstance(b, np.ndarray) for b in batches):
        return np.concatenate(batches)
    import torch

    return torch.cat(batches)
