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
- ``steady``: files over the second half of the run (from the first commit past 150 files
  to the last), the model loaded and the pipeline full: where a long run spends its time.

``--commit-rate N`` measures the single driver's ceiling: N files (hard links to the 300
photos) committed through ``Indexer.commit`` in blocks of 64 with 512-d vectors that
arrive instantly, into SQLite and a flat index (the EXIF text read for keyword search
included), as a Ray run's driver commits them.

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


class _InstantVectors:
    """An encoder stand-in for the commit measurement: 512-d, never called."""

    profile_name = "bench-commit"
    fingerprint = "bench-commit-512"
    dim = 512


def commit_rate(workdir: Path, n: int) -> dict[str, Any]:
    """Files per second that one driver commits (SQLite, keyword text, vector index)."""
    import time

    import numpy as np

    from xsearch import Engine, IndexOptions, Progress, Settings
    from xsearch.indexer import Indexer
    from xsearch.pipeline import Decoded, WorkItem

    photos = sorted(make_photos(workdir / "photos_300_1600x1200", 300, [(1600, 1200)]).iterdir())
    links = workdir / f"commit_links_{n}"
    links.mkdir(exist_ok=True)
    for i in range(n):
        link = links / f"l{i:07d}.jpg"
        if not link.exists():
            os.link(photos[i % len(photos)], link)
    store = workdir / "store_commit_rate"
    shutil.rmtree(store, ignore_errors=True)
    rng = np.random.default_rng(0)

    def instant(work: list[WorkItem], _encoder: Any) -> Any:
        for start in range(0, len(work), 64):
            block = []
            for item in work[start : start + 64]:
                vec = rng.standard_normal((1, 512)).astype(np.float32)
                vec /= np.linalg.norm(vec)
                block.append((Decoded(item.key, item.path, content_hash=f"{item.key:064x}"), vec))
            yield block

    commits: list[float] = []
    encoder: Any = _InstantVectors()
    with Engine(Settings(store=store, index_kind="flat"), encoder=encoder) as engine:
        writer = engine._writable_store(create=True)
        engine._claim_store_for_encoder(writer)

        def on_progress(p: Progress) -> None:
            if p.stage == "embed" and p.done:
                commits.append(time.perf_counter())

        indexer = Indexer(
            writer,
            engine._index_manager(writer),
            lambda: encoder,
            IndexOptions(),
            on_progress=on_progress,
            embed_stage=instant,
        )
        started = time.perf_counter()
        report = indexer.run([links])
        seconds = time.perf_counter() - started
    assert report.counts["indexed"] == n, report.counts
    rate = (n - 64) / (commits[-1] - commits[0])
    doc = {"files": n, "run_s": seconds, "commits_per_s_files": rate}
    print(f"commit rate: {rate:.0f} files/s over {n} files ({seconds:.1f} s run)", flush=True)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_speed")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-bench"))
    parser.add_argument("--two-node", action="store_true")
    parser.add_argument("--no-pairs", action="store_true")
    parser.add_argument("--commit-rate", type=int, default=0, metavar="N")
    parser.add_argument("--cluster-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cluster_child is not None:
        _cluster_child(args.cluster_child)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ray_speed.json"
    # Sections not run this time keep their last results.
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if not args.no_pairs:
        doc["pairs"] = pairs(args.workdir, args.attempts)
    if args.two_node:
        doc["two_node"] = two_node(args.workdir)
    if args.commit_rate:
        doc["commit_rate"] = commit_rate(args.workdir, args.commit_rate)
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))


if __name__ == "__main__":
    main()
