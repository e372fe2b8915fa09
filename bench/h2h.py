"""xsearch's default against rclip, indexing the same photos, interleaved (issue 6).

    python -m bench.h2h --attempts 3 [--files 10 30 100 300 1500] [--first-run]

The head-to-head of ``--only indexing`` alone, for more pairs than that section's two: each
attempt indexes the first N of the 300 photos at 1600×1200 (hard links in a folder of their
own, for each N of ``--files``; above 300, a set of N generated once) into a fresh store with xsearch's default (``auto``: the
int8 image tower, whose export must already be in ``--cache``; ``python -m bench --only
indexing`` makes it) and then with rclip (ViT-B-32-256 on both sides), each in a fresh
process, so start-up counts as it does for a user. Neighbours in time share the machine's
load, so each pair's ratio is the figure to read; the median of the ratios per size is
printed with them. Writes bench/results/h2h.json.

``--first-run`` gives each xsearch run an empty cache instead, so that it pays the model's
one-time preparation (the int8 export) as a user's first run of a model does; rclip's
towers come ready-made (exported once, as its hub serves them).
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


def run(
    workdir: Path,
    rclip: Path,
    cache: Path,
    attempts: int,
    sizes: list[int],
    first_run: bool = False,
) -> dict[str, Any]:
    photos = workdir / "photos_300_1600x1200"
    every = sorted(photos.glob("*.jpg"))
    if not every:
        raise SystemExit(f"No photos in {photos}: run `python -m bench --only indexing` first.")
    pairs = []
    for attempt in range(attempts):
        for n in sizes:
            folder = _first(every, n, workdir) if n < len(every) else _photos(n, workdir)
            store = workdir / "store_h2h_auto"
            shutil.rmtree(store, ignore_errors=True)
            if first_run:
                cache = workdir / "xsearch_cache_first_run"
                shutil.rmtree(cache, ignore_errors=True)
            mine = xsearch_index(folder, store, "ViT-B-32-256", cache=cache)
            theirs = rclip_index(folder, workdir / "rclip_data", rclip)
            ratio = mine["images_per_s_end_to_end"] / theirs["images_per_s_end_to_end"]
            pairs.append(
                {"attempt": attempt, "files": n, "xsearch": mine, "rclip": theirs, "ratio": ratio}
            )
            print(
                f"attempt {attempt}, {n} files: xsearch {mine['end_to_end_s']:.2f} s "
                f"({mine['images_per_s_end_to_end']:.2f} images/s, {mine['peak_mb']:.0f} MB), "
                f"rclip {theirs['end_to_end_s']:.2f} s ({theirs['images_per_s_end_to_end']:.2f} "
                f"images/s, {theirs['peak_mb']:.0f} MB), ratio {ratio:.2f}, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    medians = {
        str(n): statistics.median(p["ratio"] for p in pairs if p["files"] == n) for n in sizes
    }
    return {"first_run": first_run, "pairs": pairs, "median_ratio_by_files": medians}


def _photos(n: int, workdir: Path) -> Path:
    """``n`` photos at 1600×1200: the 300 themselves, or a larger set generated once."""
    from .data import make_photos

    return make_photos(workdir / f"photos_{n}_1600x1200", n, [(1600, 1200)])


def _first(photos: list[Path], n: int, workdir: Path) -> Path:
    """A folder holding hard links to the first ``n`` photos (made once)."""
    folder = workdir / f"photos_first_{n}_1600x1200"
    if len(list(folder.glob("*.jpg"))) != n:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for photo in photos[:n]:
            os.link(photo, folder / photo.name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--files", type=int, nargs="+", default=[300], help="corpus sizes")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-bench"))
    parser.add_argument("--rclip", type=Path, default=Path("/tmp/peers/bin/rclip"))
    parser.add_argument("--out", type=Path, default=RESULTS / "h2h.json")
    parser.add_argument(
        "--first-run", action="store_true", help="each xsearch run starts with an empty cache"
    )
    args = parser.parse_args()
    result = run(
        args.workdir,
        args.rclip,
        args.workdir / "xsearch_cache",
        args.attempts,
        args.files,
        first_run=args.first_run,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    medians = ", ".join(f"{n} files {r:.2f}" for n, r in result["median_ratio_by_files"].items())
    print(f"median ratio xsearch/rclip: {medians}; wrote {args.out}")


if __name__ == "__main__":
    main()
