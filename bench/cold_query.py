"""Cold `xsearch query` from a fresh process: in-process against a warm `xsearch serve`.

    python -m bench.cold_query                     # 50 pictures, 5 runs per row
    python -m bench.cold_query --runs 9 --pictures 200

Indexes ``--pictures`` generated pictures (``xsearch.synth``) with the bundled
``toy-bilingual`` model into a fresh store, then times fresh processes, each the median of
``--runs``:

* ``python -c pass`` and ``xsearch --help``: what any Python program, and the CLI's own
  imports, cost before a query starts;
* ``xsearch query 猫 --no-server``: a cold query in-process (imports torch, loads the model
  and the index, encodes the text);
* ``xsearch query 猫`` while ``xsearch serve`` runs on the store: the CLI finds
  ``<store>/server.json`` and the server answers.

Both query rows must print the same bytes; the JSON records whether they did. With
``--big-store`` (repeatable), cold queries on ViT-B-32 stores made by the scale section are
timed too, alternating with rclip's cold query (``rclip -n``, ViT-B-32-256, 300 photos).
xsearch's modules are compiled to bytecode first, as an installed package has them. Prints a
table and writes bench/results/cold_query.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from xsearch import Engine, Settings
from xsearch.synth import generate_folder

from .fakehub import hub_env
from .proc import XSEARCH, start_server

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
MODEL = "toy-bilingual"
QUERY = "猫"


def build_store(workdir: Path, pictures: int) -> dict[str, Any]:
    """A fresh store of ``pictures`` generated pictures, indexed with the toy model."""
    shutil.rmtree(workdir, ignore_errors=True)
    folder, store = workdir / "pictures", workdir / "store"
    generate_folder(folder, pictures, seed=6)
    started = time.perf_counter()
    settings = Settings(store=store, model=MODEL, device="cpu", cache_dir=_cache(workdir))
    with Engine(settings) as engine:
        report = engine.index([folder])
    return {
        "pictures": pictures,
        "indexed": report.counts["indexed"],
        "model": MODEL,
        "index_s": round(time.perf_counter() - started, 1),
        "store": str(store),
    }


def compile_bytecode() -> None:
    """Write xsearch's bytecode, as ``pip install`` does (and rclip's install did).

    A checkout run with PYTHONDONTWRITEBYTECODE (this machine sets it) would otherwise
    compile every module from source in every timed process.
    """
    import compileall

    compileall.compile_dir(ROOT / "xsearch", quiet=1)


def _cache(workdir: Path) -> Path:
    """xsearch's cache for these runs (the int8 exports the indexing run makes)."""
    return workdir / "cache"


def _time(
    argv: list[str], runs: int, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> tuple[dict[str, Any], bytes]:
    """Median, min and max wall seconds of ``runs`` fresh processes, and the last stdout."""
    seconds, stdout = [], b""
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, check=True, env={**os.environ, **(env or {})}
        )
        seconds.append(time.perf_counter() - started)
        stdout = done.stdout
    row = {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "runs_s": [round(s, 3) for s in seconds],
    }
    return row, stdout


def run(workdir: Path, *, pictures: int, runs: int) -> dict[str, Any]:
    store_facts = build_store(workdir, pictures)
    store = Path(store_facts["store"])
    query = [*XSEARCH, "query", QUERY, "--store", str(store), "--json"]
    rows: dict[str, Any] = {}
    rows["python -c pass"], _ = _time([sys.executable, "-c", "pass"], runs)
    rows["xsearch --help"], _ = _time([*XSEARCH, "--help"], runs)
    rows[f"xsearch query {QUERY} --no-server"], alone = _time([*query, "--no-server"], runs)
    # The torch text tower (what every cold query ran before the int8 text tower).
    rows[f"xsearch query {QUERY} --no-server, torch text (bf16)"], _ = _time(
        [*query, "--no-server"], runs, {"XSEARCH_PRECISION": "bf16"}
    )
    server, ready_s = start_server(store)
    try:
        _time(query, 1)  # the server's first answer, not measured
        rows[f"xsearch query {QUERY} (warm server)"], served = _time(query, runs)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "store": store_facts,
        "server_ready_s": round(ready_s, 2),
        "identical_output": alone == served,
        "rows": rows,
    }


def big_store_rows(
    store: Path, env: dict[str, str], runs: int, rclip: Path | None
) -> dict[str, Any]:
    """Cold CLI queries on a large store (``python -m bench --only scale`` makes them),
    alternating auto, int8 asked for by name, and rclip's cold query when given."""
    from .indexing import rclip_cold_query
    from .peers import RCLIP_SUBDIR

    query = [*XSEARCH, "query", "a photo of a cat", "--store", str(store), "--paths", "-n", "10"]
    rows: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, extra in (("auto", {}), ("int8", {"XSEARCH_PRECISION": "int8"})):
            row, _ = _time([*query, "--no-server"], 1, {**env, **extra})
            rows.setdefault(f"xsearch query --no-server ({name})", []).append(row["median_s"])
        if rclip is not None:
            folder = Path("/tmp/xsearch-bench/photos_300_1600x1200")
            datadir = Path("/tmp/xsearch-bench/rclip_data")
            if (datadir / RCLIP_SUBDIR).is_dir():
                seconds = rclip_cold_query(folder, datadir, rclip, runs=1)["runs_s"]
                rows.setdefault("rclip -n (300-photo index)", []).extend(seconds)
    return {
        name: {"median_s": round(statistics.median(v), 3), "runs_s": v} for name, v in rows.items()
    }


DEFAULT_PROFILE = "mclip-b32"


def default_profile_rows(
    workdir: Path, runs: int, vectors: int, rclip: Path | None
) -> dict[str, Any]:
    """Cold CLI queries on the default profile (XLM-R text tower, from the fake hub) over a
    store of ``vectors`` synthetic vectors (``scale.fill_store``), alternating with rclip's
    cold query (``rclip -n`` over 300 generated pictures) when ``rclip`` is given."""
    from . import scale
    from .fakehub import fake_weights

    hub = workdir / "hf"
    fake_weights(hub, DEFAULT_PROFILE)
    store = workdir / f"default_{vectors}"
    if not (store / "index.json").exists():
        shutil.rmtree(store, ignore_errors=True)
        scale.fill_store(store, vectors, hub, profile=DEFAULT_PROFILE)
    with Engine(scale._settings(store, hub)) as engine:
        engine._index_manager(engine.store()).save()
        started = time.perf_counter()
        # The int8 towers a first indexing run makes (this store holds synthetic vectors).
        engine.prepare_model()
        prepared_s = time.perf_counter() - started
        text_encoding = engine.info().text_encoding
    peer = _rclip_folder(workdir, rclip) if rclip is not None else None
    query = [*XSEARCH, "query", QUERY, "--store", str(store), "--paths", "-n", "10"]
    rows: dict[str, list[float]] = {}
    for _ in range(runs):
        row, _ = _time([*query, "--no-server"], 1, hub_env(hub))
        rows.setdefault(f"xsearch query {QUERY} --no-server ({DEFAULT_PROFILE})", []).append(
            row["median_s"]
        )
        if rclip is not None and peer is not None:
            from .indexing import rclip_cold_query

            seconds = rclip_cold_query(peer[0], peer[1], rclip, runs=1)["runs_s"]
            rows.setdefault("rclip -n (300 pictures)", []).extend(seconds)
    return {
        "store": str(store),
        "vectors": vectors,
        "prepare_s": round(prepared_s, 1),
        "text_encoding": text_encoding,
        "rows": {
            name: {"median_s": round(statistics.median(v), 3), "runs_s": v}
            for name, v in rows.items()
        },
    }


def _rclip_folder(workdir: Path, rclip: Path) -> tuple[Path, Path]:
    """300 generated pictures indexed by rclip once (its ONNX towers from bench.peers)."""
    from .indexing import rclip_index
    from .peers import export_rclip_models

    folder, datadir = workdir / "rclip_pictures", workdir / "rclip_data"
    if not folder.is_dir():
        generate_folder(folder, 300, seed=8)
    export_rclip_models(datadir)
    if not (datadir / "db.sqlite3").is_file():
        rclip_index(folder, datadir, rclip)
    return folder, datadir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-bench/cold-query"))
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_query.json")
    parser.add_argument(
        "--big-store",
        type=Path,
        action="append",
        default=[],
        help="also time cold queries on this ViT-B-32 store, beside rclip's; repeatable "
        "(e.g. /tmp/xsearch-bench/store_10000, made by `python -m bench --only scale`)",
    )
    parser.add_argument("--rclip", type=Path, default=Path("/tmp/peers/bin/rclip"))
    parser.add_argument(
        "--default-profile",
        type=int,
        metavar="VECTORS",
        help=f"only time cold queries of {DEFAULT_PROFILE} (fake hub) on a store of VECTORS, "
        "10 fresh processes unless --runs, beside rclip's where it is installed",
    )
    args = parser.parse_args()
    if args.default_profile:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        compile_bytecode()
        rclip = args.rclip if args.rclip.exists() else None
        found = default_profile_rows(args.workdir, args.runs, args.default_profile, rclip)
        out = args.out.with_name("cold_query_default.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(found, indent=2, ensure_ascii=False))
        print(f"{found['vectors']} vectors, text: {found['text_encoding']}")
        for name, row in found["rows"].items():
            print(f"{name:50} median {row['median_s']:.3f} s  {row['runs_s']}")
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["XSEARCH_CACHE"] = str(_cache(args.workdir))
    compile_bytecode()
    result = run(args.workdir, pictures=args.pictures, runs=args.runs)
    result["big_stores"] = []
    for big in args.big_store:
        hub = big.parent / "hf"
        rows = big_store_rows(
            big, hub_env(hub), args.runs, args.rclip if args.rclip.exists() else None
        )
        result["big_stores"].append({"store": str(big), "rows": rows})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    facts = result["store"]
    print(f"store: {facts['indexed']} pictures, {facts['model']}; fresh process, {args.runs} runs")
    print(f"{'command':40} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, row in result["rows"].items():
        print(f"{name:40} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['max_s']:7.3f}")
    print(
        f"server ready after {result['server_ready_s']} s; same output both ways: "
        f"{result['identical_output']}; wrote {args.out}"
    )
    for big in result["big_stores"]:
        for name, row in big["rows"].items():
            print(f"{big['store']}: {name:40} median {row['median_s']:.3f} s  {row['runs_s']}")


if __name__ == "__main__":
    main()
