"""Warm query latency through the HTTP API against a cold CLI query (issue 7).

    python -m bench.serve_latency                      # 100k vectors, toy-bilingual
    python -m bench.serve_latency --vectors 20000 --queries 100

Builds (once; reused while its size matches) a store of ``--vectors`` vectors: 95% single
images and 5% in 10-frame videos, spread over 200 folders with meaningful names. The
vectors are random unit vectors, since latency does not depend on what they show, but
the store, its keyword index and its vector index are the real ones. Then:

* **cold CLI**: ``xsearch query TEXT --json`` as a fresh process, several times: start-up,
  model load, index load and one query, as a user of the command line waits for it;
* **warm HTTP**: ``xsearch serve`` in a subprocess, then sequential ``GET /api/search``
  requests over loopback: distinct texts (every one goes through the text tower), one
  repeated text (the text-vector cache answers), filtered, hybrid and "more like this".

Prints a table and writes JSON to bench/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from xsearch import Engine, Settings
from xsearch.index.manager import IndexManager
from xsearch.store.records import FrameVector, MediaRecord, StoreModel, WriteBatch
from xsearch.store.repository import Store
from xsearch.synth import CLASSES, captions

RESULTS = Path(__file__).parent / "results"
# The CLI as a user starts it (the console script runs exactly this).
XSEARCH = [sys.executable, "-c", "from xsearch.cli import main; main()"]
FOLDERS = ("2023 京都", "wedding", "beach holiday", "garden", "birthday", "家族", "hiking")


def build_store(store: Path, model: str, vectors: int, seed: int = 0) -> dict[str, Any]:
    """A store of ``vectors`` random unit vectors with the model's fingerprint."""
    marker = store / "bench.json"
    if marker.exists() and json.loads(marker.read_text()).get("vectors") == vectors:
        return dict(json.loads(marker.read_text()))
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    with Engine(Settings(store=store, model=model, device="cpu")) as engine:
        encoder = engine.encoder
        dim, fingerprint = encoder.dim, encoder.fingerprint
    db = Store(store, create=True)
    # Recorded as indexing records it, so that the engine accepts the store for this model.
    db.set_model(StoreModel(encoder.profile_name, fingerprint, dim))
    files = write_media(db, vectors, dim, seed)
    IndexManager(db, dim=dim, fingerprint=fingerprint).save()
    db.close()
    facts = {
        "vectors": vectors,
        "files": files,
        "dim": dim,
        "build_s": round(time.perf_counter() - started, 1),
    }
    marker.write_text(json.dumps(facts))
    return facts


def write_media(db: Store, vectors: int, dim: int, seed: int = 0) -> int:
    """Write files with ``vectors`` vectors in all: 5% in 10-frame videos; returns the files."""
    rng = np.random.default_rng(seed)
    video_vectors = vectors // 20 // 10 * 10
    made = 0
    n = 0
    while made < vectors:
        batch = WriteBatch()
        for _ in range(2000):
            if made >= vectors:
                break
            is_video = made < video_vectors
            frames = 10 if is_video else 1
            matrix = rng.normal(size=(frames, dim)).astype(np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            folder = f"{FOLDERS[n % len(FOLDERS)]} {n % 200:03d}"
            name = f"clip_{n:06d}.mp4" if is_video else f"IMG_{n:06d}.jpg"
            shown = f"/bench/media/{folder}/{name}"
            record = MediaRecord(
                path=shown.encode(),
                display_path=shown,
                size=1000 + n,
                mtime_ns=1_600_000_000_000_000_000 + n * 1_000_000_000,
                content_hash=f"{n:064x}",
                media_type="video" if is_video else "image",
                duration=10.0 if is_video else None,
                width=640,
                height=480,
            )
            batch.upserts.append(
                (
                    record,
                    [
                        FrameVector(matrix[i], t=float(i), t_start=float(i), t_end=i + 1.0)
                        if is_video
                        else FrameVector(matrix[i])
                        for i in range(frames)
                    ],
                )
            )
            made += frames
            n += 1
        db.write(batch)
    return n


def _percentiles(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(ordered[-1], 2),
    }


def cold_cli(store: Path, runs: int) -> dict[str, Any]:
    times = []
    for i in range(runs):
        text = captions(CLASSES[i % len(CLASSES)], "en")[2]
        started = time.perf_counter()
        subprocess.run(
            [*XSEARCH, "query", text, "--store", str(store), "--json"],
            check=True,
            capture_output=True,
        )
        times.append((time.perf_counter() - started) * 1e3)
    return {**_percentiles(times), "runs_ms": [round(t) for t in times]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def warm_http(store: Path, queries: int) -> dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*XSEARCH, "serve", "--store", str(store), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            status = _wait_ready(client, server)
            ready_s = time.perf_counter() - started
            texts = [c for cls in CLASSES for lang in ("en", "zh") for c in captions(cls, lang)]
            for text in texts[-10:]:  # warm-up, not measured
                client.get("/api/search", params={"q": text})
            first = client.get("/api/search", params={"q": "x"}).json()["results"][0]["id"]
            cases: dict[str, list[dict[str, Any]]] = {
                "distinct text": [{"q": t} for t in texts[:queries]],
                "repeated text (cached vector)": [{"q": "a photo of a cat"}] * queries,
                "type=video": [{"q": t, "type": "video"} for t in texts[:queries]],
                "under=one folder": [
                    {"q": t, "under": "/bench/media/wedding 001"} for t in texts[:queries]
                ],
                "hybrid": [{"q": f"wedding {t}", "hybrid": "true"} for t in texts[:queries]],
                "more like this (id:N)": [{"q": f"id:{first}"}] * queries,
            }
            out: dict[str, Any] = {"ready_s": round(ready_s, 2), "index": status}
            for name, params in cases.items():
                times = []
                for p in params:
                    t0 = time.perf_counter()
                    response = client.get("/api/search", params={"limit": 20, **p})
                    times.append((time.perf_counter() - t0) * 1e3)
                    response.raise_for_status()
                out[name] = _percentiles(times)
            return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"xsearch serve exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            doc: dict[str, Any] = client.get("/api/status").json()
            return {k: doc[k] for k in ("index_kind", "index_vectors", "model", "dim")}
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("xsearch serve did not answer within 10 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--model", default="toy-bilingual")
    parser.add_argument("--workdir", type=Path, default=RESULTS / "serve-store")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    store = args.workdir
    facts = build_store(store, args.model, args.vectors)
    print(f"store: {facts}", flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "store": facts,
        "cold_cli": cold_cli(store, args.cold_runs),
        "warm_http": warm_http(store, args.queries),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_latency.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    cold = result["cold_cli"]
    print(f"\ncold CLI query (new process): p50 {cold['p50_ms']:.0f} ms over {cold['n']} runs")
    print(f"{'warm HTTP /api/search':34} {'p50 ms':>8} {'p99 ms':>8} {'n':>5}")
    for name, row in result["warm_http"].items():
        if isinstance(row, dict) and "p50_ms" in row:
            print(f"  {name:32} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['n']:5d}")
    print(f"server ready after {result['warm_http']['ready_s']} s; {result['warm_http']['index']}")


if __name__ == "__main__":
    main()
