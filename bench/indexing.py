"""Indexing throughput and memory, xsearch against rclip, and the no-change re-index.

Each run is a fresh process (``python -m bench.child`` or the peer's own CLI) whose whole
process tree is sampled for memory (PSS, so pages shared by forked decode workers count
once). "end to end" is the wall time of that process: start-up, model load, scan, decode,
embed and commit, as a user experiences it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from . import proc
from .data import make_photos
from .peers import export_rclip_models, rclip_env

PY = sys.executable


def photos(workdir: Path, n: int, sizes: list[tuple[int, int]], name: str) -> Path:
    return make_photos(workdir / name, n, sizes)


def xsearch_index(
    folder: Path,
    store: Path,
    arch: str,
    *,
    workers: int | None = None,
    batch: int | None = None,
    precision: str = "auto",
    cache: Path | None = None,
) -> dict[str, Any]:
    args = ["--arch", arch, "--photos", str(folder), "--store", str(store)]
    args += ["--precision", precision]
    if cache is not None:
        args += ["--cache", str(cache)]
    if workers is not None:
        args += ["--workers", str(workers)]
    if batch is not None:
        args += ["--batch", str(batch)]
    m, doc = proc.run_child("index", *args)
    files = doc["indexed"] + doc["unchanged"]
    return {
        "tool": "xsearch" if precision == "auto" else f"xsearch {precision}",
        "model": arch,
        "files": files,
        "end_to_end_s": m.seconds,
        "images_per_s_end_to_end": doc["indexed"] / m.seconds,
        "images_per_s_indexing": doc["indexed"] / doc["index_s"] if doc["indexed"] else None,
        "images_by": doc.get("images_by"),
        "peak_mb": m.peak_mb,
        "load_avg_1m_after": os.getloadavg()[0],
        "workers": workers if workers is not None else "auto",
        "batch": batch if batch is not None else "auto",
    }


def rclip_cold_query(folder: Path, datadir: Path, rclip: Path, runs: int = 5) -> dict[str, Any]:
    """`rclip -n` (no indexing pass): a query from a fresh process, as `xsearch query` is."""
    seconds = []
    for _ in range(runs):
        m = proc.run(
            [str(rclip), "-n", "-f", "-t", "10", "a photo of a cat"],
            cwd=folder,
            env=rclip_env(datadir),
        )
        if m.returncode != 0:
            raise RuntimeError(f"rclip failed: {m.stderr[-2000:]}")
        seconds.append(m.seconds)
    return {"median_s": statistics.median(seconds), "runs_s": seconds}


def rclip_index(folder: Path, datadir: Path, rclip: Path, *, fresh: bool = True) -> dict[str, Any]:
    if fresh:
        (datadir / "db.sqlite3").unlink(missing_ok=True)
    m = proc.run(
        [str(rclip), "-f", "-t", "3", "a photo of a cat"], cwd=folder, env=rclip_env(datadir)
    )
    if m.returncode != 0:
        raise RuntimeError(f"rclip failed: {m.stderr[-2000:]}")
    n = len(list(folder.glob("*.jpg")))
    return {
        "tool": "rclip 3.3.0",
        "model": "ViT-B-32-256",
        "files": n,
        "end_to_end_s": m.seconds,
        "images_per_s_end_to_end": n / m.seconds if fresh else None,
        "peak_mb": m.peak_mb,
        "load_avg_1m_after": os.getloadavg()[0],
    }


def _toy_available() -> bool:
    from xsearch.encoders.profiles import get_profile

    weights = get_profile("toy-bilingual").weights_file
    return weights is not None and weights.is_file()


def decode_paths(folder: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    for label, draft in (("PIL full decode", 0), ("PIL JPEG draft (≥512 px)", 512)):
        _, doc = proc.run_child(
            "decode", "--photos", str(folder), "--draft", str(draft), "--limit", str(limit)
        )
        rows.append({"decode_path": label, **doc})
    rows.append(
        {"decode_path": "torchvision nvJPEG (GPU)", "skipped": "needs CUDA: run bench/gpu.sh"}
    )
    return rows


def _export(datadir: Path, python: Path | None) -> None:
    """Export rclip's towers, in an interpreter that has the onnx package (see README)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        if python is None:
            raise
        code = "import sys; from pathlib import Path; from bench.peers import export_rclip_models; export_rclip_models(Path(sys.argv[1]))"
        m = proc.run([str(python), "-c", code, str(datadir)], cwd=Path(__file__).parent.parent)
        if m.returncode != 0:
            raise RuntimeError(m.stderr[-2000:]) from None
        return
    export_rclip_models(datadir)


def run(
    workdir: Path,
    *,
    quick: bool,
    rclip: Path | None,
    onnx_python: Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    from .child import random_checkpoint

    for arch in ("ViT-B-32", "ViT-B-32-256"):
        random_checkpoint(arch)  # made before any timing starts
    n = 60 if quick else 300
    main = photos(workdir, n, [(1600, 1200)], f"photos_{n}_1600x1200")
    mixed = photos(
        workdir, 30 if quick else 120, [(2048, 1536), (3264, 2448), (4000, 3000)], "photos_3to12mp"
    )
    rows: list[dict[str, Any]] = []
    archs = ["toy-bilingual", "ViT-B-32"]
    if not _toy_available():
        archs.remove("toy-bilingual")
        rows.append({"model": "toy-bilingual", "skipped": "its weights file is not in the tree"})
    # A fresh cache: the one-time int8 export of each model is timed here, on its own, as
    # a user's first indexing run pays it; every run below finds it made.
    cache = workdir / "xsearch_cache"
    shutil.rmtree(cache, ignore_errors=True)
    exports = {}
    for arch in [*archs, "ViT-B-32-256"]:
        m, doc = proc.run_child(
            "prepare",
            "--arch",
            arch,
            "--store",
            str(workdir / "store_prepare"),
            "--cache",
            str(cache),
        )
        shutil.rmtree(workdir / "store_prepare", ignore_errors=True)
        exports[arch] = {**doc, "process_s": m.seconds, "peak_mb": m.peak_mb}
        log(f"indexing: int8 export {arch}: {exports[arch]}")
    for arch in archs:
        store = workdir / f"store_{arch}"
        shutil.rmtree(store, ignore_errors=True)
        row = {"corpus": main.name, **xsearch_index(main, store, arch, cache=cache)}
        rows.append(row)
        log(f"indexing: {row}")
        if arch == "ViT-B-32":
            for precision in ("bf16", "fp32"):
                store_p = workdir / f"store_{arch}_{precision}"
                shutil.rmtree(store_p, ignore_errors=True)
                rows.append(
                    {"corpus": main.name, **xsearch_index(main, store_p, arch, precision=precision)}
                )
                log(f"indexing: {rows[-1]}")
        again = xsearch_index(main, store, arch, cache=cache)
        rows.append({"corpus": main.name, "run": "no-change re-run", **again})
    store = workdir / "store_mixed"
    shutil.rmtree(store, ignore_errors=True)
    rows.append({"corpus": mixed.name, **xsearch_index(mixed, store, "ViT-B-32", cache=cache)})
    log(f"indexing: {rows[-1]}")
    peers: dict[str, Any] = {}
    if rclip is not None and rclip.exists():
        datadir = workdir / "rclip_data"
        _export(datadir, onnx_python)
        # Interleaved, twice: the machine is shared, so neighbours in time share its load.
        mine: dict[str, list[float]] = {"fp32": [], "bf16": [], "auto": []}
        theirs = []
        for attempt in range(2):
            for precision, bucket in mine.items():
                store = workdir / f"store_h2h_{precision}"
                shutil.rmtree(store, ignore_errors=True)
                row = {
                    "corpus": main.name,
                    "attempt": attempt,
                    **xsearch_index(main, store, "ViT-B-32-256", precision=precision, cache=cache),
                }
                rows.append(row)
                bucket.append(row["images_per_s_end_to_end"])
                log(f"indexing: {row}")
            row = {"corpus": main.name, "attempt": attempt, **rclip_index(main, datadir, rclip)}
            rows.append(row)
            theirs.append(row["images_per_s_end_to_end"])
            log(f"indexing: {row}")
        again = rclip_index(main, datadir, rclip, fresh=False)
        rows.append({"corpus": main.name, "run": "no-change re-run", **again})
        peers["rclip_cold_query_s"] = rclip_cold_query(main, datadir, rclip)
        log(f"indexing: rclip cold query {peers['rclip_cold_query_s']}")
        peers["rclip_images_per_s"] = theirs
        for precision, bucket in mine.items():
            peers[f"ratio_{precision}_vs_rclip"] = [
                a / b for a, b in zip(bucket, theirs, strict=True)
            ]
        # The mixed corpus, side by side in the same architecture.
        for attempt in range(2):
            store = workdir / "store_mixed_h2h"
            shutil.rmtree(store, ignore_errors=True)
            row = xsearch_index(mixed, store, "ViT-B-32-256", cache=cache)
            rows.append({"corpus": mixed.name, "attempt": attempt, **row})
            log(f"indexing: {rows[-1]}")
            rows.append(
                {"corpus": mixed.name, "attempt": attempt, **rclip_index(mixed, datadir, rclip)}
            )
            log(f"indexing: {rows[-1]}")
    else:
        peers["rclip"] = "not run: give --rclip PATH (see bench/README.md for the venv)"
    return {
        "rows": rows,
        "int8_exports": exports,
        "decode_paths": decode_paths(main, 40 if quick else 100),
        "peers": peers,
        "multilingual": (
            "xlm-roberta-base-ViT-B-32 was not run: its text tower's config and tokenizer "
            "(xlm-roberta-base) come from the Hugging Face hub, which this machine cannot "
            "reach, and there is no random-initialised substitute for a SentencePiece "
            "tokenizer. Its image tower is exactly ViT-B-32 (same vision_cfg), so its "
            "indexing throughput is the ViT-B-32 row."
        ),
    }
