"""One entry point for the issue-6 benchmarks: prints a table per section, writes JSON.

    python -m bench                      # everything, full sizes (hours on 2 cores)
    python -m bench --quick              # small sizes, a few minutes
    python -m bench --only ann --only query

Results merge into bench/results/bench.json (or --out), one key per section, each with the
machine it ran on, so sections can be rerun separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

# One-query faiss searches on a busy 2-core machine lose badly to OpenMP threads spinning
# against other processes; passive waiting keeps builds parallel without that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
    }


def _section_ann(args: argparse.Namespace) -> dict[str, Any]:
    from . import ann

    kinds = tuple(args.ann_kinds) if args.ann_kinds else ann.KINDS
    return ann.run(
        args.ann_vectors or (100_000 if args.quick else 1_000_000),
        kinds=kinds,
        workdir=args.workdir / "ann",
        log=_log,
    )


def _section_indexing(args: argparse.Namespace) -> dict[str, Any]:
    from . import indexing

    return indexing.run(
        args.workdir, quick=args.quick, rclip=args.rclip, onnx_python=args.onnx_python, log=_log
    )


def _section_scale(args: argparse.Namespace) -> dict[str, Any]:
    from . import scale

    return scale.run(args.workdir, quick=args.quick, log=_log)


def _section_precision(args: argparse.Namespace) -> dict[str, Any]:
    from . import agreement, indexing

    photos = indexing.photos(
        args.workdir,
        60 if args.quick else 300,
        [(1600, 1200)],
        f"photos_{60 if args.quick else 300}_1600x1200",
    )
    archs = ["ViT-B-32-256"] if args.quick else ["ViT-B-32-256", "ViT-B-32"]
    result = agreement.run(photos, archs, n_images=32 if args.quick else 96, log=_log)
    result["trained"] = agreement.run_trained(
        args.workdir, n_pictures=98 if args.quick else 392, log=_log
    )
    return result


def _section_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    from . import sqlite_scale

    rows = args.sqlite_rows or (100_000 if args.quick else 10_000_000)
    return sqlite_scale.run(rows, reps=20 if args.quick else 100, log=_log)


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "indexing": _section_indexing,
    "precision": _section_precision,
    "scale": _section_scale,
    "ann": _section_ann,
    "sqlite": _section_sqlite,
}


def _table(name: str, result: dict[str, Any]) -> str:
    from .report import table

    return table(name, result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, minutes not hours")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench.json")
    parser.add_argument("--ann-vectors", type=int, default=None)
    parser.add_argument("--ann-kinds", action="append", help="index kinds (repeatable)")
    parser.add_argument("--sqlite-rows", type=int, default=None, help="files of --only sqlite")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/xsearch-bench"),
        help="generated photos, stores and peer data (kept between runs)",
    )
    parser.add_argument(
        "--rclip",
        type=Path,
        default=Path("/tmp/peers/bin/rclip"),
        help="rclip executable of its own venv (skipped when missing)",
    )
    parser.add_argument(
        "--onnx-python",
        type=Path,
        default=Path("/tmp/exportenv/bin/python"),
        help="an interpreter with torch, open_clip and onnx, to export rclip's towers",
    )
    args = parser.parse_args(argv)
    wanted = args.only or list(SECTIONS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in wanted:
        _log(f"section {name} starts")
        started = time.perf_counter()
        result = SECTIONS[name](args)
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["machine"] = machine()
        result["quick"] = bool(args.quick)
        doc[name] = result
        args.out.write_text(json.dumps(doc, indent=2, default=str))
        print(_table(name, result), flush=True)
    _log(f"wrote {args.out}")
