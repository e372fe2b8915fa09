"""Generating test videos with PyAV, recording the exact pts of every frame written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_video(
    path: Path,
    frame_at: Callable[[int, float], Image.Image],
    pts: Sequence[int],
    *,
    time_base: Fraction,
    rate: Fraction | int = 10,
    size: tuple[int, int] = (128, 128),
    codec: str = "libx264",
    container_options: dict[str, str] | None = None,
) -> list[float]:
    """Write one frame per entry of ``pts`` (in ``time_base`` units); returns their times."""
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"g": "10", "bf": "0"}
        times = []
        for i, p in enumerate(pts):
            t = float(p * time_base)
            frame = av.VideoFrame.from_image(frame_at(i, t).convert("RGB").resize(size))
            frame.pts = p
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
            times.append(t)
        for packet in stream.encode():
            out.mux(packet)
    return times


def solid(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (128, 128), color)


def noise(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8))


def write_audio_only(path: Path, seconds: float = 1.0) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        samples = int(44100 * seconds)
        t = np.arange(samples) / 44100
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate = 44100
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
