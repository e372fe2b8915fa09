"""Indexing throughput and no-change re-index time on generated photos (issue 2).

    python -m bench.core_throughput                       # 500 JPEGs at 1024×768
    python -m bench.core_throughput --images 100 --models toy-bilingual

For each model: a cold index of the folder into a fresh store (model load excluded, timed
separately), then three no-change re-runs (median reported). Prints a table and writes
JSON to bench/results/core_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.data import photo_like
from xsearch import Engine, IndexOptions, ModelProfile, Settings, register_profile

RESULTS = Path(__file__).parent / "results"


def make_photos(folder: Path, n: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"photo_{i:05d}.jpg"
        if not path.exists():
            photo_like(rng, width, height).save(path, "JPEG", quality=90)


def run_one(
    model: str, photos: Path, work: Path, workers: int | None, batch: int | None
) -> dict[str, object]:
    store = work / f"store-{model}"
    shutil.rmtree(store, ignore_errors=True)
    with Engine(Settings(store=store, model=model, device="cpu")) as engine:
        t0 = time.perf_counter()
        _ = engine.encoder
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = engine.index([photos], IndexOptions(workers=workers, batch_size=batch))
        cold = time.perf_counter() - t0
        reruns = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = engine.index([photos], IndexOptions(workers=workers, batch_size=batch))
            reruns.append(time.perf_counter() - t0)
            assert again.counts["unchanged"] == report.counts["indexed"]
    n = report.counts["indexed"]
    return {
        "model": model,
        "images": n,
        "model_load_s": round(load, 2),
        "index_s": round(cold, 2),
        "images_per_s": round(n / cold, 2),
        "noop_reindex_median_s": round(statistics.median(reruns), 3),
        "noop_reindex_runs_s": [round(r, 3) for r in reruns],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--models", default="toy-bilingual,vit-b-32-random")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    register_profile(
        ModelProfile(
            name="vit-b-32-random", arch="ViT-B-32", tier="test", description="random init"
        ),
        replace=True,
    )
    width, height = map(int, args.size.split("x"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xsearch-bench-"))
    photos = work / "photos"
    make_photos(photos, args.images, width, height)
    rows = [run_one(m, photos, work, args.workers, args.batch_size) for m in args.models.split(",")]
    print(
        f"{'model':<18} {'images':>6} {'load s':>7} {'index s':>8} {'img/s':>7} {'no-op re-index s':>17}"
    )
    for r in rows:
        print(
            f"{r['model']:<18} {r['images']:>6} {r['model_load_s']:>7} {r['index_s']:>8} "
            f"{r['images_per_s']:>7} {r['noop_reindex_median_s']:>17}"
        )
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "command": "python -m bench.core_throughput "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v is not None and k != "workdir"
        ),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "size": args.size,
        "results": rows,
    }
    (RESULTS / "core_throughput.json").write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
