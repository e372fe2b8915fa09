"""Query latency at 10k / 100k / 1M vectors, and a no-change re-index of many files.

Stores for the latency runs are filled with CLIP-like synthetic vectors through the store's
own write path (no images are decoded: that is measured elsewhere), under the real profile
clip-b32-en, whose ViT-B-32 weights are a random-initialised stand-in in a local hub cache
(bench/fakehub.py). The index is then built and saved by xsearch itself, so the kind the
selector picks at each size is the one measured.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import proc
from .data import clip_like
from .fakehub import fake_weights, hub_env, xsearch_cache

PROFILE = "clip-b32-en"


def _settings(location: Path, cache: Path, precision: str = "auto") -> Any:
    from xsearch import Settings

    return Settings(
        store=location,
        model_cache_dir=cache,
        cache_dir=xsearch_cache(cache),
        precision=precision,
        device="cpu",
    )


def fill_store(location: Path, n: int, cache: Path, profile: str = PROFILE) -> None:
    from xsearch import Engine, Settings
    from xsearch.store.records import FrameVector, MediaRecord, StoreModel, WriteBatch
    from xsearch.store.repository import Store

    with Engine(Settings(store=location, model=profile, model_cache_dir=cache)) as engine:
        enc = engine.encoder
        store = Store(location, create=True)
        store.set_model(StoreModel(enc.profile_name, enc.fingerprint, enc.dim))
        for start in range(0, n, 20_000):
            vectors = clip_like(min(20_000, n - start), seed=start + 1)
            batch = WriteBatch()
            for i, vec in enumerate(vectors, start):
                path = f"/bench/photos/{i // 1000:04d}/img_{i:07d}.jpg"
                batch.upserts.append(
                    (
                        MediaRecord(
                            path=path.encode(),
                            display_path=path,
                            size=100_000 + i,
                            mtime_ns=1_700_000_000_000_000_000 + i,
                            content_hash=f"{i:032x}",
                            media_type="image",
                            width=4000,
                            height=3000,
                        ),
                        [FrameVector(vec)],
                    )
                )
            store.write(batch)
        store.close()


def latency(
    n: int, workdir: Path, cache: Path, *, warm_queries: int = 40, log: Any = print
) -> dict[str, Any]:
    from xsearch import Engine

    location = workdir / f"store_{n}"
    if not (location / "index.json").exists():
        shutil.rmtree(location, ignore_errors=True)
        started = time.perf_counter()
        fill_store(location, n, cache)
        log(f"scale: filled {n} vectors in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    with Engine(_settings(location, cache)) as engine:
        manager = engine._index_manager(engine.store())
        manager.save()
        build_s = time.perf_counter() - started
        info = engine.info()
        # The int8 exports an indexing run would have made (these stores hold synthetic
        # vectors, so no run did); made once, outside every timing.
        engine.encoder.preprocess  # noqa: B018
        from xsearch.encoders.onnx_backend.export_records import TextExport

        text_export = TextExport.load(engine.encoder._export_dir)  # type: ignore[attr-defined]
    # "auto" (int8 text only where its agreement holds) and int8 asked for by name, one
    # engine at a time (two copies of a 1M index in one process distort both), in the
    # order auto, int8, auto, int8 so that drift shows; each after a few warm-up queries.
    uncached: dict[str, list[float]] = {"auto": [], "int8": []}
    cached: dict[str, list[float]] = {"auto": [], "int8": []}
    text_by = {}
    for phase, precision in enumerate(["auto", "int8", "auto", "int8"]):
        with Engine(_settings(location, cache, precision)) as engine:
            for i in range(6):
                engine.search(f"warm-up {i}", limit=10)
            text_by[precision] = engine.encoder.text_precision  # type: ignore[attr-defined]
            for i in range(warm_queries // 2):
                text = f"a photo of thing {i} on a sunny day, take {phase}"
                t = time.perf_counter()
                engine.search(text, limit=10)
                uncached[precision].append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                engine.search(text, limit=10)
                cached[precision].append((time.perf_counter() - t) * 1e3)
    cold = _cli_query_seconds(location, cache, "cold query", 3, "--no-server")
    served = _served_cli(location, cache)
    return {
        "vectors": n,
        "index_kind": info.index_kind,
        "index_params": info.index_params,
        "index_recall_at_10": info.index_recall_at_10,
        "index_build_s": round(build_s, 1),
        "text_by_auto": text_by["auto"],
        "text_int8_agreement": text_export.agreement.__dict__ if text_export else None,
        "warm_p50_ms": statistics.median(uncached["auto"]),
        "warm_p99_ms": float(np.percentile(uncached["auto"], 99)),
        "warm_int8_p50_ms": statistics.median(uncached["int8"]),
        "warm_int8_p99_ms": float(np.percentile(uncached["int8"], 99)),
        "warm_cached_text_p50_ms": statistics.median(cached["auto"]),
        "cold_cli_median_s": statistics.median(cold),
        "cold_cli_runs_s": cold,
        **served,
    }


def _cli_query_seconds(
    location: Path, cache: Path, label: str, runs: int, *flags: str
) -> list[float]:
    """Wall seconds of `xsearch query` from fresh processes, a different text each time."""
    seconds = []
    for i in range(runs):
        xsearch = shutil.which("xsearch") or "xsearch"
        argv = [xsearch, "query", f"{label} {i}", "--store", str(location), "--paths", "-n", "10"]
        m = proc.run([*argv, *flags], env=hub_env(cache))
        if m.returncode != 0:
            raise RuntimeError(m.stderr[-2000:])
        seconds.append(m.seconds)
    return seconds


def _served_cli(location: Path, cache: Path, runs: int = 5) -> dict[str, Any]:
    """The same CLI query while `xsearch serve` runs on the store (it answers instead)."""
    server, ready_s = proc.start_server(location, hub_env(cache))
    try:
        seconds = _cli_query_seconds(location, cache, "served query", runs + 1)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        "server_ready_s": round(ready_s, 1),
        # The first answer includes the server's first text encoding; it is not counted.
        "cli_with_server_median_s": statistics.median(seconds[1:]),
        "cli_with_server_runs_s": seconds[1:],
    }


def reindex(n_files: int, workdir: Path, *, log: Any = print) -> dict[str, Any]:
    """Index ``n_files`` small JPEGs with the shipped toy model, then time no-change re-runs."""
    folder = workdir / f"many_{n_files}"
    if not folder.exists():
        started = time.perf_counter()
        tmp = workdir / f"many_{n_files}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        rng = np.random.default_rng(0)
        from PIL import Image

        tmp.mkdir(parents=True)
        for i in range(n_files):
            sub = tmp / f"{i // 1000:03d}"
            if i % 1000 == 0:
                sub.mkdir()
            pixels = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(sub / f"f{i:06d}.jpg", quality=80)
        tmp.rename(folder)
        log(f"scale: wrote {n_files} files in {time.perf_counter() - started:.0f} s")
    store = workdir / f"store_many_{n_files}"
    xs = shutil.which("xsearch") or "xsearch"
    first = None
    if not (store / "index.json").exists():
        shutil.rmtree(store, ignore_errors=True)
        # The first run only has to fill the store: the tiny test model keeps it quick.
        m, _ = proc.run_child(
            "index", "--arch", "tiny", "--photos", str(folder), "--store", str(store)
        )
        first = {"seconds": m.seconds, "files_per_s": n_files / m.seconds, "peak_mb": m.peak_mb}
        log(f"scale: first index of {n_files}: {first}")
    runs = []
    peak = 0.0
    for _ in range(3):
        # --no-tags: the store's model is the child's own bench profile, which this CLI
        # process does not know, and the figure is the stat fast path's.
        m = proc.run([xs, "index", str(folder), "--store", str(store), "--no-tags"])
        if m.returncode != 0:
            raise RuntimeError(m.stderr[-2000:])
        runs.append(m.seconds)
        peak = max(peak, m.peak_mb)
    return {
        "files": n_files,
        "first_index": first,
        "no_change_median_s": statistics.median(runs),
        "no_change_runs_s": runs,
        "no_change_peak_mb": peak,
    }


def run(workdir: Path, *, quick: bool, log: Any = print) -> dict[str, Any]:
    cache = workdir / "hf"
    fake_weights(cache, PROFILE)
    sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
    rows = []
    for n in sizes:
        row = latency(n, workdir, cache, log=log)
        rows.append(row)
        log(f"scale: {row}")
    return {
        "rows": rows,
        "reindex": reindex(5_000 if quick else 100_000, workdir, log=log),
        "note": "warm = Engine.search in one process, text encoding included unless 'cached'; "
        "cold = the `xsearch query` CLI from a fresh process.",
    }
