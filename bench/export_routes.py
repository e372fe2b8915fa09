"""The int8 export's routes side by side (issue 21, item 1).

    python -m bench.export_routes [--reps 3] [--towers image text] [--routes written traced ...]

A profile's towers (``clip-b32-en``: ViT-B-32 and the CLIP text tower, random weights from
``bench.fakehub``) are exported to int8 by each route, each export in a fresh child process
(``python -m bench.export_routes child ROUTE TOWER DIR``) timed and sampled by
``bench.proc.run`` (wall seconds, interpreter start and imports included, and the peak PSS
of its process tree):

- ``written``: ``make_int8_export_direct`` / ``make_int8_text_export_direct``, the graphs
  written from the safetensors checkpoint by ``onnx_graphs.py``, no torch;
- ``traced``: ``make_int8_export`` / ``make_int8_text_export``, torch's TorchScript exporter
  and ONNX Runtime's dynamic quantisation with its per-channel step vectorised by
  ``per_channel.py``;
- ``library``: the same steps with ``quantize_dynamic`` unpatched (ONNX Runtime's own loop
  over weight channels): the issue's library route, in a child that exits before indexing
  goes on, as here;
- ``dynamo``: the library route with ``torch.onnx.export(dynamo=True)`` (needs onnxscript;
  ``--dynamo-path`` adds a folder holding it to the child's ``sys.path``).

Every route keeps xsearch's choices (opset 17, per-channel symmetric int8 weights,
``reduce_range`` off on CPUs with VNNI, the text tower's attention output and projection
products in fp32) and measures its graph against fp32 as xsearch does, so the export seconds
compare like with like. The routes take turns, in a rotated order per repetition.

Then, in this process and again interleaved per repetition, each route's int8 graphs are
run with the threads xsearch gives them: images/s at batch 32 (ONNX Runtime's default
threads, as the image tower's session) and ms per query text (one text a call, one thread,
as ``TextSessions``). Their vectors are held to the fp32 torch towers on xsearch's probe
pictures and texts (cosine min / mean, top-10 neighbours kept). The graphs' op counts show
where they differ. Medians of the repetitions; writes bench/results/export_routes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .export_routes_child import PROFILE, export_tower
from .fakehub import fake_weights, hub_env
from .proc import run

RESULTS = Path(__file__).parent / "results"
ROUTES = ("written", "traced", "library", "dynamo")
TOWERS = ("image", "text")
_BATCH = 32
_ROOT = Path(__file__).resolve().parent.parent


def _export(
    route: str, tower: str, directory: Path, cache: Path, dynamo_path: Path | None
) -> dict[str, Any]:
    shutil.rmtree(directory, ignore_errors=True)
    pythonpath = [str(_ROOT)]
    if route == "dynamo" and dynamo_path is not None:
        pythonpath.append(str(dynamo_path))
    env = {**hub_env(cache), "PYTHONPATH": os.pathsep.join(pythonpath)}
    cmd = [sys.executable, "-m", "bench.export_routes", "child", route, tower, str(directory)]
    measured = run(cmd, cwd=_ROOT, env=env, timeout=1800)
    if measured.returncode != 0:
        return {"error": measured.stderr.strip().splitlines()[-1:] or ["no message"]}
    doc: dict[str, Any] = json.loads(measured.stdout.strip().splitlines()[-1])
    return {**doc, "process_s": measured.seconds, "peak_mb": measured.peak_mb}


def _references(cache: Path) -> dict[str, Any]:
    """The fp32 torch towers' vectors of the probe pictures and texts, and their inputs."""
    import torch

    from xsearch.encoders.model_files import HubOptions
    from xsearch.encoders.onnx_backend import probes
    from xsearch.encoders.onnx_backend.export_steps import preprocess_of
    from xsearch.encoders.profiles import get_profile
    from xsearch.encoders.torch_backend.openclip import OpenClipEncoder

    encoder = OpenClipEncoder(get_profile(PROFILE), hub=HubOptions(cache_dir=cache), device="cpu")
    image, cfg = encoder.fp32_image_model()
    preprocess = preprocess_of(cfg, PROFILE)
    pixels = probes.probe_pixels(preprocess, probes.PROBE_PICTURES)
    tokens = encoder.tokenize(probes.probe_texts())
    made = encoder.fp32_text_model()
    assert made is not None
    with torch.inference_mode():
        image_vectors = image(torch.from_numpy(pixels)).float().numpy()
        text_vectors = made[0](torch.from_numpy(tokens)).float().numpy()
    return {"pixels": pixels, "tokens": tokens, "image": image_vectors, "text": text_vectors}


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(Counter(node.op_type for node in graph.node).items()))


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_op_counts(path: Path) -> dict[str, int]:
    """The op counts of the graph ONNX Runtime runs for ``path``, after its own fusions (as
    xsearch's sessions are opened: every optimisation level on)."""
    import onnxruntime as ort

    optimised = path.with_name(path.stem + ".ort-optimised.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimised)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        return _op_counts(optimised)
    finally:
        optimised.unlink(missing_ok=True)
        optimised.with_name(optimised.name + ".data").unlink(missing_ok=True)


class _Graphs:
    """One route's int8 sessions, opened as xsearch opens them."""

    def __init__(self, folder: Path, towers: tuple[str, ...]) -> None:
        from xsearch.encoders.onnx_backend.export_records import MODEL_FILE, TextExport
        from xsearch.encoders.onnx_backend.onnx_int8 import TextSessions, open_session

        self.image: Any = None
        self.text: Any = None
        self.ops: dict[str, dict[str, int]] = {}
        self.sha: dict[str, str] = {}  # the same graph twice is the same speed: a noise check
        if "image" in towers:
            self.image = open_session(folder / "image" / MODEL_FILE)
            self.ops["image"] = _op_counts(folder / "image" / MODEL_FILE)
            self.sha["image"] = _sha(folder / "image" / MODEL_FILE)
            self.ops["image run"] = _run_op_counts(folder / "image" / MODEL_FILE)
        if "text" in towers:
            export = TextExport.load(folder / "text")
            assert export is not None, f"no text export in {folder / 'text'}"
            self.text = TextSessions(export)
            self.ops["text"] = _op_counts(export.model_path(export.lengths[-1]))
            self.sha["text"] = _sha(export.model_path(export.lengths[-1]))
            self.ops["text run"] = _run_op_counts(export.model_path(export.lengths[-1]))

    def images_per_s(self, pixels: np.ndarray) -> tuple[float, float]:
        """Images per second at batch 32, of wall time and of this process's CPU time (which
        other processes' load on a shared machine changes far less)."""
        from xsearch.encoders.onnx_backend.onnx_int8 import run_session

        batch = pixels[:_BATCH]
        run_session(self.image, batch[:2])  # the first call allocates
        rates, cpu_rates = [], []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.process_time()
            run_session(self.image, batch)
            rates.append(len(batch) / (time.perf_counter() - started))
            cpu_rates.append(len(batch) / (time.process_time() - cpu))
        return statistics.median(rates), statistics.median(cpu_rates)

    def ms_per_text(self, tokens: np.ndarray) -> tuple[float, float]:
        """Milliseconds per query text, one a call: of wall time and of CPU time."""
        self.text.encode(tokens[:1])
        started, cpu = time.perf_counter(), time.process_time()
        for row in tokens:
            self.text.encode(row[None])
        wall, spent = time.perf_counter() - started, time.process_time() - cpu
        return 1000 * wall / len(tokens), 1000 * spent / len(tokens)


def _rotated(items: tuple[str, ...], by: int) -> list[str]:
    return [items[(i + by) % len(items)] for i in range(len(items))]


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    from xsearch.encoders.onnx_backend.probes import agreement

    a = agreement(reference, candidate)
    return {
        "cosine_min": a.cosine_min,
        "cosine_mean": a.cosine_mean,
        "neighbours_kept": a.neighbours_kept,
    }


def measure(
    workdir: Path,
    *,
    reps: int,
    routes: tuple[str, ...],
    towers: tuple[str, ...],
    dynamo_path: Path | None,
    speed_reps: int | None = None,
    earlier: dict[str, Any] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Exports (``reps`` rounds; or ``earlier``'s, its graphs still in ``workdir``), then
    ``speed_reps`` rounds of the graphs' speed, then their agreement."""
    cache = workdir / "hub"
    fake_weights(cache, PROFILE)
    exports: list[dict[str, Any]] = list(earlier["exports"]) if earlier else []
    for rep in range(0 if earlier else reps):
        for tower in towers:
            for route in _rotated(routes, rep):
                folder = workdir / "graphs" / route / tower
                doc = _export(route, tower, folder, cache, dynamo_path)
                exports.append({"rep": rep, "route": route, "tower": tower, **doc})
                log(f"rep {rep} {tower} {route}: {json.dumps(doc, default=str)}")
    working = tuple(
        r
        for r in routes
        if not any("error" in e for e in exports if e["route"] == r and e["tower"] in towers)
    )
    refs = _references(cache)
    graphs = {r: _Graphs(workdir / "graphs" / r, towers) for r in working}
    speeds: list[dict[str, Any]] = []
    for rep in range(speed_reps or reps):
        for route in _rotated(working, rep):
            row: dict[str, Any] = {"rep": rep, "route": route}
            if "image" in towers:
                row["images_per_s"], row["images_per_cpu_s"] = graphs[route].images_per_s(
                    refs["pixels"]
                )
            if "text" in towers:
                row["ms_per_text"], row["cpu_ms_per_text"] = graphs[route].ms_per_text(
                    refs["tokens"]
                )
            speeds.append(row)
            log(f"rep {rep} speed {route}: {row}")
    agreement: dict[str, dict[str, Any]] = {}
    for route in working:
        agreement[route] = {}
        if "image" in towers:
            from xsearch.encoders.onnx_backend.onnx_int8 import run_session

            int8 = run_session(graphs[route].image, refs["pixels"])
            agreement[route]["image"] = _agreement(refs["image"], int8)
        if "text" in towers:
            int8 = graphs[route].text.encode(refs["tokens"])
            agreement[route]["text"] = _agreement(refs["text"], int8)
    return {
        "profile": PROFILE,
        "reps": reps,
        "speed_reps": speed_reps or reps,
        "exports": exports,
        "speeds": speeds,
        "agreement": agreement,
        "ops": {r: graphs[r].ops for r in working},
        "graph_sha256": {r: graphs[r].sha for r in working},
        "summary": _summary(exports, speeds, routes, towers),
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(
    exports: list[dict[str, Any]],
    speeds: list[dict[str, Any]],
    routes: tuple[str, ...],
    towers: tuple[str, ...],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for route in routes:
        out[route] = {}
        for tower in towers:
            done = [e for e in exports if e["route"] == route and e["tower"] == tower]
            good = [e for e in done if "error" not in e]
            out[route][tower] = {
                "export_s": _median([e["export_s"] for e in good]),
                "process_s": _median([e["process_s"] for e in good]),
                "peak_mb": _median([e["peak_mb"] for e in good]),
                **{
                    stage: _median([e[stage] for e in good if stage in e])
                    for stage in ("onnx_export_s", "quantise_s")
                    if any(stage in e for e in good)
                },
                "errors": [e["error"] for e in done if "error" in e],
            }
        mine = [s for s in speeds if s["route"] == route]
        keys = [("image", "images_per_s", ""), ("image", "images_per_cpu_s", "cpu_")]
        keys += [("text", "ms_per_text", ""), ("text", "cpu_ms_per_text", "cpu_")]
        for tower, key, kind in keys:
            if tower in towers:
                out[route][tower][key] = _median([s[key] for s in mine])
                out[route][tower][f"{kind}to_written"] = _median(_ratios(speeds, route, key))
    return out


def _ratios(speeds: list[dict[str, Any]], route: str, key: str) -> list[float]:
    """``route``'s figure over the written graph's of the same round (neighbours in time
    share the machine's load)."""
    by_rep: dict[int, dict[str, float]] = {}
    for s in speeds:
        by_rep.setdefault(s["rep"], {})[s["route"]] = s[key]
    return [r[route] / r["written"] for r in by_rep.values() if route in r and "written" in r]


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(result: dict[str, Any]) -> str:
    """One row per route and tower: medians, and the agreement of the graph with fp32."""
    head = (
        "| route | tower | export s (in process) | process s | peak PSS MB "
        "| int8 speed | cosine min / mean | top-10 kept | nodes (file / run) |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for route, towers in result["summary"].items():
        for tower, s in towers.items():
            agree = result["agreement"].get(route, {}).get(tower)
            ops = result["ops"].get(route, {}).get(tower)
            speed = (
                f"{_fmt(s.get('images_per_s'), '.1f')} images/s"
                if tower == "image"
                else f"{_fmt(s.get('ms_per_text'), '.2f')} ms/text"
            ) + (
                f" ({_fmt(s.get('to_written'), '.3f')}× written; of CPU time "
                f"{_fmt(s.get('cpu_to_written'), '.3f')}×)"
            )
            cos = f"{agree['cosine_min']:.5f} / {agree['cosine_mean']:.5f}" if agree else "–"
            kept = f"{agree['neighbours_kept']:.3f}" if agree else "–"
            run_ops = result["ops"].get(route, {}).get(f"{tower} run")
            nodes = f"{sum(ops.values())} / {sum(run_ops.values())}" if ops and run_ops else "–"
            if s["errors"]:
                speed = f"failed: {s['errors'][0][0][:60]}"
            lines.append(
                f"| {route} | {tower} | {_fmt(s['export_s'], '.1f')} | "
                f"{_fmt(s['process_s'], '.1f')} | {_fmt(s['peak_mb'], '.0f')} | {speed} | "
                f"{cos} | {kept} | {nodes} |"
            )
    return "\n".join(lines)


def op_differences(result: dict[str, Any]) -> str:
    """The op types whose counts differ between the routes' graphs, per tower."""
    lines = []
    ops = result["ops"]
    for tower in (*TOWERS, *(f"{t} run" for t in TOWERS)):
        have = {r: o[tower] for r, o in ops.items() if tower in o}
        kinds = sorted({k for o in have.values() for k in o})
        differing = [k for k in kinds if len({o.get(k, 0) for o in have.values()}) > 1]
        if differing:
            cells = ", ".join(
                f"{k}: " + "/".join(str(have[r].get(k, 0)) for r in have) for k in differing
            )
            lines.append(f"{tower} ({'/'.join(have)}): {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        route, tower, directory = argv[1], argv[2], Path(argv[3])
        cache = Path(os.environ["XSEARCH_MODEL_CACHE"])
        print(json.dumps(export_tower(route, tower, directory, cache)), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.export_routes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    parser.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-export-routes"))
    parser.add_argument(
        "--dynamo-path",
        type=Path,
        default=Path("/tmp/dynamo-site"),
        help="a folder holding onnxscript and onnx_ir (pip install --target) for dynamo",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "export_routes.json")
    parser.add_argument("--speed-reps", type=int, default=None, help="rounds of speed (--reps)")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="keep --out's exports (their graphs still in --workdir), measure speed again",
    )
    args = parser.parse_args(argv)
    earlier = json.loads(args.out.read_text()) if args.speed_only else None
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    result = measure(
        args.workdir,
        reps=args.reps,
        routes=tuple(args.routes),
        towers=tuple(args.towers),
        dynamo_path=args.dynamo_path if args.dynamo_path.is_dir() else None,
        speed_reps=args.speed_reps,
        earlier=earlier,
        log=log,
    )
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    print(op_differences(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
