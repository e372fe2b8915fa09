"""Video indexing speed on a generated 720p H.264 clip (issue 4).

    python bench/video_speed.py                 # a 5-minute 1280×720 30 fps clip
    python bench/video_speed.py --seconds 60

Reports source-video seconds processed per wall second and decoded frames per second for
a cold index with the bundled model (model load excluded), and the stored frame count.
Writes bench/results/video_speed.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from xsearch import Engine, IndexOptions, Settings

RESULTS = Path(__file__).parent / "results"


def make_clip(path: Path, seconds: int, fps: int = 30, size: tuple[int, int] = (1280, 720)) -> int:
    """Moving shapes over a background that changes every 20 s (a 'scene')."""
    rng = np.random.default_rng(0)
    w, h = size
    frames = seconds * fps
    xx = np.arange(w)[None, :].repeat(h, axis=0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        background = None
        for i in range(frames):
            if i % (20 * fps) == 0:
                c1, c2 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
                ramp = (xx / w)[..., None]
                background = (c1 * (1 - ramp) + c2 * ramp).astype(np.uint8)
            assert background is not None
            img = background.copy()
            cx = int((i * 7) % w)
            img[max(0, h // 3) : h // 3 + 120, max(0, cx - 60) : cx + 60] = (255, 255, 255)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xsearch-video-bench-"))
    clip = work / "clips" / "clip720p.mp4"
    clip.parent.mkdir()
    t0 = time.perf_counter()
    frames = make_clip(clip, args.seconds)
    made = time.perf_counter() - t0
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    with Engine(Settings(store=store, model="toy-bilingual", device="cpu")) as engine:
        _ = engine.encoder
        t0 = time.perf_counter()
        report = engine.index([clip.parent], IndexOptions(workers=0, video_interval=args.interval))
        wall = time.perf_counter() - t0
        stored = engine.info().vectors
    row = {
        "clip_seconds": args.seconds,
        "decoded_frames": frames,
        "interval_s": args.interval,
        "index_wall_s": round(wall, 2),
        "video_s_per_wall_s": round(args.seconds / wall, 2),
        "decoded_frames_per_s": round(frames / wall, 1),
        "stored_frames": stored,
        "outcome": report.counts,
        "clip_generation_s": round(made, 1),
    }
    print(json.dumps(row, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "video_speed.json").write_text(
        json.dumps(
            {
                "command": f"python bench/video_speed.py --seconds {args.seconds} --interval {args.interval}",
                **row,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
