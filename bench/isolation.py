"""What decoding in a worker process that may die costs (issue 17).

    python -m bench.isolation [--photos 300] [--pairs 3] [--model ViT-B-32-256]

Indexes the same generated 1600×1200 photos into fresh stores, alternating decoding in
this process (``--workers 0``, where a crashing decoder ends the run) with one isolated
worker process (the default on a 2-core machine), in interleaved pairs, and prints the
images/s of each run, the medians, and the median ratio isolated/in-line. The model's
int8 export is made once before the first pair, so no timed run pays for it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from .child import bench_profile
from .data import make_photos

WORK = Path("/tmp/xsearch-bench/isolation")


def _rate(photos: Path, model: str, workers: int, n: int) -> float:
    from xsearch import Engine, IndexOptions, Settings

    store = WORK / f"store-{workers}"
    shutil.rmtree(store, ignore_errors=True)
    with Engine(Settings(store=store, model=model, device="cpu")) as engine:
        started = time.perf_counter()
        report = engine.index([photos], IndexOptions(workers=workers))
        seconds = time.perf_counter() - started
    assert report.counts["indexed"] == n, report.counts
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32-256")
    args = parser.parse_args()
    photos = WORK / f"photos_{args.photos}"
    if not photos.exists():
        make_photos(photos, args.photos, [(1600, 1200)])
    model = bench_profile(args.model)
    _rate(photos, model, 0, args.photos)  # warm-up: the one-time int8 export, the page cache
    inline: list[float] = []
    isolated: list[float] = []
    for pair in range(args.pairs):
        # Alternate which goes first, so that drift in the machine favours neither.
        order = [(0, inline), (1, isolated)] if pair % 2 == 0 else [(1, isolated), (0, inline)]
        for workers, rates in order:
            rates.append(_rate(photos, model, workers, args.photos))
            print(f"pair {pair + 1}: workers={workers} {rates[-1]:.2f} images/s", flush=True)
    ratios = [b / a for a, b in zip(inline, isolated, strict=True)]
    print(
        f"median in-line {statistics.median(inline):.2f} images/s, "
        f"isolated worker {statistics.median(isolated):.2f} images/s, "
        f"median ratio isolated/in-line {statistics.median(ratios):.3f} "
        f"({args.photos} photos, {args.pairs} pairs, {args.model})"
    )


if __name__ == "__main__":
    main()
