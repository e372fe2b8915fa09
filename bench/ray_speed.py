"""`xsearch index --ray local` against the local pipeline, on the 300 photos (issue 19).

    python -m bench.ray_speed [--attempts 3] [--workdir /tmp/xsearch-bench] [--two-node]

Each attempt indexes the 300 photos at 1600×1200 (``bench.data.make_photos``) into a fresh
store with ViT-B-32-256 (random weights from a local checkpoint, the int8 tower from
``--cache``, made once here), first with the local pipeline and then on Ray, each in a
fresh process (``bench.child index``). Neighbours in time share the machine's load, so
each pair's ratio is the figure to read; the medians of the ratios are printed. Three
rates per run:

- ``end_to_end``: files over the child's whole life (start-up, Ray's start, model load);
- ``indexing``: files over ``Engine.index`` (a Ray instance already up, as on a cluster);
- ``steady``: files between the first and the last commit, the model loaded and the
  pipeline full (where a long run spends its time).

``--two-node`` also runs one Ray indexing on a ``ray.cluster_utils.Cluster`` of two nodes
on this machine (two logical CPUs each, so four on two cores: it shows where work goes, not
speed; the driver's head node runs nothing), and counts the files each node decoded and
embedded. Writes bench/results/ray_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from . import proc
from .data import make_photos

RESULTS = Path(__file__).parent / "results"
ARCH = "ViT-B-32-256"


def _index(photos: Path, store: Path, cache: Path, ray: str | None) -> dict[str, Any]:
    shutil.rmtree(store, ignore_errors=True)
    args = ["--arch", ARCH, "--photos", str(photos), "--store", str(store)]
    args += ["--precision", "auto", "--cache", str(cache)]
    if ray:
        args += ["--ray", ray]
    m, doc = proc.run_child("index", *args)
    assert doc["indexed"] == 300 and not doc["failed"], doc
    return {
        **doc,
        "end_to_end_s": m.seconds,
        "peak_mb": m.peak_mb,
        "end_to_end": doc["indexed"] / m.seconds,
        "indexing": doc["indexed"] / doc["index_s"],
        "steady": doc["images_per_s_steady"],
        "load_avg_1m_after": os.getloadavg()[0],
    }


def pairs(workdir: Path, attempts: int) -> dict[str, Any]:
    photos = make_photos(workdir / "photos_300_1600x1200", 300, [(1600, 1200)])
    cache = workdir / "xsearch_cache"
    proc.run_child(
        "prepare", "--arch", ARCH, "--store", str(workdir / "prep"), "--cache", str(cache)
    )
    rows = []
    for attempt in range(attempts):
        local = _index(photos, workdir / "store_ray_speed", cache, None)
        on_ray = _index(photos, workdir / "store_ray_speed", cache, "local")
        ratios = {k: on_ray[k] / local[k] for k in ("end_to_end", "indexing", "steady")}
        rows.append({"attempt": attempt, "local": local, "ray": on_ray, "ratio": ratios})
        print(
            f"attempt {attempt}: "
            + ", ".join(
                f"{k} {local[k]:.2f} vs {on_ray[k]:.2f} img/s ({ratios[k]:.2f}x)" for k in ratios
            )
            + f"; ray init {on_ray['ray_init_s']:.2f} s, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    medians = {
        k: {
            "local": statistics.median(r["local"][k] for r in rows),
            "ray": statistics.median(r["ray"][k] for r in rows),
            "ratio": statistics.median(r["ratio"][k] for r in rows),
        }
        for k in ("end_to_end", "indexing", "steady")
    }
    print("medians:", json.dumps(medians, indent=1))
    return {"pairs": rows, "medians": medians}


def two_node(workdir: Path) -> dict[str, Any]:
    """One run on a two-node cluster of this machine: which node ran what."""
    photos = make_photos(workdir / "photos_300_1600x1200", 300, [(1600, 1200)])
    m = proc.run(
        [sys.executable, "-m", "bench.ray_speed", "--cluster-child", str(workdir)],
        cwd=Path(__file__).parent.parent,
    )
    if m.returncode != 0:
        raise RuntimeError(m.stderr[-3000:])
    doc: dict[str, Any] = json.loads(m.stdout.strip().splitlines()[-1])
    doc["end_to_end_s"] = m.seconds
    print(f"two nodes: {json.dumps(doc)}", flush=True)
    del photos
    return doc


def _cluster_child(workdir: Path) -> None:
    """Start the two-node cluster, index on it, and print where the work ran (JSON)."""
    import time

    import ray
    from ray.cluster_utils import Cluster

    from xsearch import Engine, IndexOptions, Settings

    from .child import bench_profile

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0},  # the driver's node: no work
    )
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    store = workdir / "store_two_node"
    shutil.rmtree(store, ignore_errors=True)
    settings = Settings(
        store=store,
        model=bench_profile(ARCH),
        device="cpu",
        cache_dir=workdir / "xsearch_cache",
    )
    started = time.perf_counter()
    with Engine(settings) as engine:
        report = engine.index([workdir / "photos_300_1600x1200"], IndexOptions(), ray="auto")
    seconds = time.perf_counter() - started
    by_node = report.work_by_node
    ray.shutdown()
    cluster.shutdown()
    print(
        json.dumps(
            {
                "indexed": report.counts["indexed"],
                "index_s": seconds,
                "images_per_s": report.counts["indexed"] / seconds,
                "nodes": len(by_node),
                "work_by_node": by_node,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_speed")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-bench"))
    parser.add_argument("--two-node", action="store_true")
    parser.add_argument("--no-pairs", action="store_true")
    parser.add_argument("--cluster-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cluster_child is not None:
        _cluster_child(args.cluster_child)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {}
    if not args.no_pairs:
        doc["pairs"] = pairs(args.workdir, args.attempts)
    if args.two_node:
        doc["two_node"] = two_node(args.workdir)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_speed.json").write_text(json.dumps(doc, indent=2, default=str))


if __name__ == "__main__":
    main()
