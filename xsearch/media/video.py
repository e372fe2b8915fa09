"""Reading videos with PyAV: probing, streaming frame sampling with exact times, thumbnails.

Frames are streamed and converted one at a time, so memory does not grow with the length
of the video. Times come from each frame's pts and the stream's ``time_base`` (exact
fractions), relative to the stream's start, so they stay exact at 29.97 fps, with variable
frame rates and for streams that do not start at zero.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image

from ..errors import MediaError
from .images import display

__all__ = [
    "DecodeState",
    "SampledFrame",
    "VideoInfo",
    "probe_video",
    "sample_frames",
    "video_thumbnail",
]

# Above this interval, only keyframes are decoded: far cheaper, and a keyframe is where
# encoders put scene cuts anyway.
KEYFRAME_ONLY_ABOVE = 4.0
# Mean absolute difference (0..255) of tiny grey thumbnails that counts as a scene cut.
SCENE_CUT_DIFF = 30.0


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None
    fps: float | None
    width: int
    height: int


@dataclass
class DecodeState:
    """Filled in while frames stream: damage notes and the time of the last decoded frame."""

    notes: list[str] = field(default_factory=list)
    last_t: float | None = None


@dataclass
class SampledFrame:
    image: Image.Image
    # Presentation time in seconds from the start of the stream.
    t: float


def _open(path: bytes) -> Any:
    import av

    try:
        return av.open(os.fsdecode(path), metadata_errors="ignore")
    except PermissionError as exc:
        raise MediaError(display(path), "unreadable", "permission denied") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(display(path), "broken", f"FFmpeg cannot open it: {exc}") from exc


def _video_stream(container: Any, path: bytes) -> Any:
    if not container.streams.video:
        raise MediaError(
            display(path), "no-video-stream", "the file has no video stream (audio only?)"
        )
    return container.streams.video[0]


def _start(stream: Any) -> int:
    return int(stream.start_time) if stream.start_time is not None else 0


def _info(container: Any, stream: Any) -> VideoInfo:
    duration: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        duration=duration,
        fps=float(rate) if rate else None,
        width=int(stream.codec_context.width or 0),
        height=int(stream.codec_context.height or 0),
    )


def probe_video(path: bytes) -> VideoInfo:
    """Duration, frame rate and size of the first video stream."""
    with _open(path) as container:
        return _info(container, _video_stream(container, path))


def sample_frames(
    path: bytes, *, interval: float, state: DecodeState
) -> tuple[VideoInfo, Iterator[SampledFrame]]:
    """Frames every ``interval`` seconds plus frames at scene cuts, streamed.

    Damage part-way through ends the stream early and appends a note to ``state.notes``;
    frames decoded before the damage are kept.
    """
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        info = _info(container, stream)
    except BaseException:
        container.close()
        raise
    return info, _frames(container, stream, interval, state)


def _frames(
    container: Any, stream: Any, interval: float, state: DecodeState
) -> Iterator[SampledFrame]:
    import av

    time_base: Fraction = stream.time_base
    start = _start(stream)
    keyframes_only = interval > KEYFRAME_ONLY_ABOVE
    if keyframes_only:
        stream.codec_context.skip_frame = "NONKEY"
    stream.thread_type = "AUTO"
    last_kept: float | None = None
    last_thumb: np.ndarray | None = None
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float((frame.pts - start) * time_base)
            state.last_t = t
            thumb = np.asarray(
                frame.reformat(width=32, height=18, format="gray").to_ndarray(), dtype=np.float32
            )
            cut = (
                last_thumb is not None and float(np.abs(thumb - last_thumb).mean()) > SCENE_CUT_DIFF
            )
            last_thumb = thumb
            due = last_kept is None or t - last_kept >= interval - 1e-6
            if due or cut:
                last_kept = t
                yield SampledFrame(frame.to_image(), t)
    except (av.FFmpegError, OSError, ValueError) as exc:
        state.notes.append(f"decoding stopped at damage ({exc.__class__.__name__}: {exc})")
    finally:
        container.close()


def video_thumbnail(path: bytes, t: float, *, size: int = 320) -> bytes:
    """A JPEG of the frame shown at ``t`` seconds, at most ``size`` pixels on its long side."""
    import av

    with _open(path) as container:
        stream = _video_stream(container, path)
        start = _start(stream)
        target = start + int(t / stream.time_base)
        container.seek(max(target, start), stream=stream, backward=True, any_frame=False)
        chosen = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                chosen = frame
                if frame.pts >= target:
                    break
        except av.FFmpegError:
            pass
        if chosen is None:
            raise MediaError(display(path), "broken", f"no frame at {t:.2f} s")
        image = chosen.to_image()
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()
