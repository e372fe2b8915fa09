"""xsearch's default against rclip, indexing the same photos, interleaved (issue 6).

    python -m bench.h2h --attempts 3

The head-to-head of ``--only indexing`` alone, for more pairs than that section's two: each
attempt indexes the 300 photos at 1600×1200 into a fresh store with xsearch's default
(``auto``: the int8 image tower, whose export must already be in ``--cache``; ``python -m
bench --only indexing`` makes it) and then with rclip (ViT-B-32-256 on both sides), each in
a fresh process. Neighbours in time share the machine's load, so each pair's ratio is the
figure to read; the median of the ratios is printed with them. Writes
bench/results/h2h.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

from .indexing import rclip_index, xsearch_index

RESULTS = Path(__file__).parent / "results"


def run(workdir: Path, rclip: Path, cache: Path, attempts: int) -> dict[str, Any]:
    photos = workdir / "photos_300_1600x1200"
    if not any(photos.glob("*.jpg")):
        raise SystemExit(f"No photos in {photos}: run `python -m bench --only indexing` first.")
    pairs = []
    for attempt in range(attempts):
        store = workdir / "store_h2h_auto"
        shutil.rmtree(store, ignore_errors=True)
        mine = xsearch_index(photos, store, "ViT-B-32-256", cache=cache)
        theirs = rclip_index(photos, workdir / "rclip_data", rclip)
        ratio = mine["images_per_s_end_to_end"] / theirs["images_per_s_end_to_end"]
        pairs.append({"attempt": attempt, "xsearch": mine, "rclip": theirs, "ratio": ratio})
        print(
            f"attempt {attempt}: xsearch {mine['images_per_s_end_to_end']:.2f} images/s "
            f"({mine['peak_mb']:.0f} MB), rclip {theirs['images_per_s_end_to_end']:.2f} "
            f"images/s ({theirs['peak_mb']:.0f} MB), ratio {ratio:.2f}, "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return {"pairs": pairs, "median_ratio": statistics.median(p["ratio"] for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-bench"))
    parser.add_argument("--rclip", type=Path, default=Path("/tmp/peers/bin/rclip"))
    parser.add_argument("--out", type=Path, default=RESULTS / "h2h.json")
    args = parser.parse_args()
    result = run(args.workdir, args.rclip, args.workdir / "xsearch_cache", args.attempts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"median ratio {result['median_ratio']:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
