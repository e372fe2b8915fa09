"""The default profile's XLM-R text tower to int8 by the library route (issue 21, item 1).

    python -m bench.export_xlmr [--reps 3]

``mclip-b32``'s text tower (open_clip's ``xlm-roberta-base-ViT-B-32``: XLM-RoBERTa base,
mean-pooled over the real tokens, an MLP projection to 512) has no int8 form in xsearch
today: neither the graph writer nor the traced route takes a Hugging Face tower. This is
what the library route would cost it: in a fresh child process
(``python -m bench.export_xlmr child DIR``, timed and sampled by ``bench.proc.run``), the
tower is built, its fp32 vectors of the probe rows kept as the reference, exported by
``torch.onnx.export`` (TorchScript, any batch and length) and quantised by ONNX Runtime's
``quantize_dynamic`` unpatched (per channel, QInt8 weights, ``reduce_range`` as xsearch picks
for this CPU). Then, in this process, the int8 graph runs one text a call on one thread, as
a query does, and its vectors are held to the reference.

The weights are random (seed 0) in xlm-roberta-base's published architecture, built from its
config without the hub; the probe rows are random token ids of the lengths the CLIP
tokenizer gives xsearch's probe texts (no XLM-R tokenizer here): the arithmetic per query is
the real one, the vectors are not. Writes bench/results/export_xlmr.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .proc import run

RESULTS = Path(__file__).parent / "results"
_ROOT = Path(__file__).resolve().parent.parent
# xlm-roberta-base's config.json, as published with the model.
_XLMR_BASE: dict[str, Any] = {
    "vocab_size": 250002,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
_EMBED_DIM = 512
_SEED = 20261207


def probe_rows() -> list[np.ndarray]:
    """Token rows (1, n) of XLM-R's form (<s> ... </s>), n as the CLIP tokenizer counts
    xsearch's probe texts; random ids, the same on every run."""
    from open_clip.tokenizer import SimpleTokenizer

    from xsearch.encoders.onnx_backend.probes import probe_texts

    tokenizer = SimpleTokenizer()
    rng = np.random.default_rng(_SEED)
    rows = []
    for text in probe_texts():
        n = min(len(tokenizer.encode(text)), 75)
        ids = rng.integers(5, _XLMR_BASE["vocab_size"], size=n)
        rows.append(np.array([[0, *ids.tolist(), 2]], dtype=np.int64))
    return rows


def _tower() -> Any:
    import open_clip.hf_model as hf
    import torch
    from transformers import XLMRobertaConfig

    torch.manual_seed(0)
    config = XLMRobertaConfig(**_XLMR_BASE)
    # open_clip's text_cfg for this model: mean pooler, its default "mlp" projection.
    tower = hf.HFTextEncoder(
        "xlm-roberta-base",
        _EMBED_DIM,
        config=config,
        pooler_type="mean_pooler",
        proj_type="mlp",
        pretrained=False,
    )
    return tower.float().eval()


def _child(directory: Path) -> dict[str, Any]:
    started = time.perf_counter()
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from xsearch.encoders.cpu import INT8_DOT_FLAGS, cpu_has_any
    from xsearch.encoders.onnx_backend.export_steps import give_back_memory

    directory.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    mark = time.perf_counter()
    tower = _tower()
    stages["build_s"] = time.perf_counter() - mark
    rows = probe_rows()
    mark = time.perf_counter()
    torch.set_num_threads(1)  # as xsearch's torch encoder runs a query
    with torch.inference_mode():
        reference = np.concatenate([tower(torch.from_numpy(r)).numpy() for r in rows])
    stages["torch_ms_per_text"] = 1000 * (time.perf_counter() - mark) / len(rows)
    torch.set_num_threads(os.cpu_count() or 1)
    np.save(directory / "reference.npy", reference)
    fp32, int8 = directory / "text.fp32.onnx", directory / "text.int8.onnx"
    mark = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            tower,
            (torch.from_numpy(rows[0]),),
            str(fp32),
            input_names=["tokens"],
            output_names=["vectors"],
            dynamic_axes={"tokens": {0: "batch", 1: "length"}, "vectors": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    stages["onnx_export_s"] = time.perf_counter() - mark
    del tower
    give_back_memory()
    mark = time.perf_counter()
    vnni = cpu_has_any(*INT8_DOT_FLAGS)
    quantize_dynamic(
        str(fp32),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=not (True if vnni is None else vnni),
    )
    stages["quantise_s"] = time.perf_counter() - mark
    fp32.unlink()
    for extra in directory.glob("*.data"):
        extra.unlink()
    return {**stages, "export_s": time.perf_counter() - started}


def _xsearch_child(variant: str, directory: Path, cache: Path) -> dict[str, Any]:
    """Branch issue-18's own export of the tower (``hf_text_export.export_hf_text``) from the
    fake hub, in this process: as it is (``patched``: its quantiser with ``per_channel.py``),
    or with ONNX Runtime's own per-channel loop (``unpatched``)."""
    import contextlib
    import shutil

    from xsearch.encoders.model_files import HubOptions
    from xsearch.encoders.onnx_backend import hf_text_export, onnx_export, per_channel
    from xsearch.encoders.profiles import get_profile
    from xsearch.encoders.torch_backend.openclip import OpenClipEncoder

    if variant == "unpatched":
        per_channel.vectorised_per_channel = contextlib.nullcontext  # type: ignore[assignment]
    spent = {"onnx_export_s": 0.0, "quantise_s": 0.0}
    for name, key in (("_export_onnx", "onnx_export_s"), ("_quantise", "quantise_s")):
        step = getattr(onnx_export, name)

        def timed(*args: Any, _step: Any = step, _key: str = key, **kwargs: Any) -> Any:
            mark = time.perf_counter()
            try:
                return _step(*args, **kwargs)
            finally:
                spent[_key] += time.perf_counter() - mark

        setattr(onnx_export, name, timed)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    encoder = OpenClipEncoder(
        get_profile("mclip-b32"), hub=HubOptions(cache_dir=cache), device="cpu", precision="fp32"
    )
    export = hf_text_export.export_hf_text(encoder, directory)
    assert export is not None, "no int8 form of this text tower"
    a = export.agreement
    return {
        **spent,
        "export_s": time.perf_counter() - started,
        "int8_ms_per_text": export.int8_ms_per_text,
        "fp32_ms_per_text": export.fp32_ms_per_text,
        "own_gate": {"cosine_min": a.cosine_min, "cosine_mean": a.cosine_mean},
        "files_mb": sum(f.stat().st_size for f in directory.iterdir()) / 2**20,
    }


def measure_xsearch(workdir: Path, reps: int, log: Any = print) -> list[dict[str, Any]]:
    """issue-18's export, patched and unpatched in turns, each in a fresh child."""
    from .fakehub import fake_weights

    cache = workdir / "hub"
    fake_weights(cache, "mclip-b32")
    done = []
    for rep in range(reps):
        for variant in ("patched", "unpatched")[:: 1 if rep % 2 == 0 else -1]:
            folder = workdir / f"xlmr-xsearch-{variant}"
            cmd = [sys.executable, "-m", "bench.export_xlmr", "child-xsearch", variant]
            env = {"PYTHONPATH": str(_ROOT), "HF_HUB_OFFLINE": "1"}
            measured = run([*cmd, str(folder), str(cache)], cwd=_ROOT, env=env, timeout=1800)
            if measured.returncode != 0:
                raise RuntimeError(f"the XLM-R export failed: {measured.stderr[-3000:]}")
            doc = json.loads(measured.stdout.strip().splitlines()[-1])
            doc.update(rep=rep, variant=variant, process_s=measured.seconds)
            doc.update(peak_mb=measured.peak_mb, load_average=os.getloadavg()[0])
            done.append(doc)
            log(f"rep {rep} xlmr xsearch {variant}: {doc}")
    return done


def _ms_per_text(session: Any, rows: list[np.ndarray]) -> tuple[float, np.ndarray]:
    name = session.get_inputs()[0].name
    session.run(None, {name: rows[0]})  # the first call allocates
    started = time.perf_counter()
    vectors = np.concatenate([session.run(None, {name: r})[0] for r in rows])
    return 1000 * (time.perf_counter() - started) / len(rows), vectors


def measure(workdir: Path, reps: int, log: Any = print) -> dict[str, Any]:
    import onnx

    from xsearch.encoders.onnx_backend.onnx_int8 import open_session
    from xsearch.encoders.onnx_backend.probes import agreement

    directory = workdir / "xlmr"
    exports = []
    for rep in range(reps):
        cmd = [sys.executable, "-m", "bench.export_xlmr", "child", str(directory)]
        measured = run(cmd, cwd=_ROOT, env={"PYTHONPATH": str(_ROOT)}, timeout=1800)
        if measured.returncode != 0:
            raise RuntimeError(f"the XLM-R export failed: {measured.stderr[-3000:]}")
        doc = json.loads(measured.stdout.strip().splitlines()[-1])
        doc.update(rep=rep, process_s=measured.seconds, peak_mb=measured.peak_mb)
        doc["load_average"] = os.getloadavg()[0]
        exports.append(doc)
        log(f"rep {rep} xlmr library: {doc}")
    rows = probe_rows()
    session = open_session(directory / "text.int8.onnx", threads=1)
    timings = []
    vectors = np.zeros(0)
    for rep in range(reps):
        ms, vectors = _ms_per_text(session, rows)
        timings.append(ms)
        log(f"rep {rep} xlmr int8: {ms:.2f} ms/text")
    a = agreement(np.load(directory / "reference.npy"), vectors)
    graph = onnx.load(str(directory / "text.int8.onnx"), load_external_data=False).graph
    summary = {
        key: statistics.median(e[key] for e in exports)
        for key in ("export_s", "process_s", "peak_mb", "onnx_export_s", "quantise_s")
    }
    summary["torch_ms_per_text"] = statistics.median(e["torch_ms_per_text"] for e in exports)
    summary["int8_ms_per_text"] = statistics.median(timings)
    summary["int8_mb"] = (directory / "text.int8.onnx").stat().st_size / 2**20
    return {
        "exports": exports,
        "int8_ms_per_text": timings,
        "agreement": {
            "texts": a.pictures,
            "cosine_min": a.cosine_min,
            "cosine_mean": a.cosine_mean,
            "neighbours_kept": a.neighbours_kept,
        },
        "ops": dict(sorted(Counter(n.op_type for n in graph.node).items())),
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        print(json.dumps(_child(Path(argv[1]))), flush=True)
        return
    if argv[:1] == ["child-xsearch"]:
        print(json.dumps(_xsearch_child(argv[1], Path(argv[2]), Path(argv[3]))), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.export_xlmr")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xsearch-export-routes"))
    parser.add_argument("--out", type=Path, default=RESULTS / "export_xlmr.json")
    parser.add_argument(
        "--xsearch",
        action="store_true",
        help="instead: xsearch's own export of the tower (hf_text_export), patched and not",
    )
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if args.xsearch:
        runs = measure_xsearch(args.workdir, args.reps, log)
        out = args.out.with_name(args.out.stem + "_xsearch.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=2, default=str))
        for variant in ("patched", "unpatched"):
            mine = [r for r in runs if r["variant"] == variant]
            medians = {
                k: statistics.median(r[k] for r in mine)
                for k in ("export_s", "onnx_export_s", "quantise_s", "process_s", "peak_mb")
            }
            print(f"{variant}: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
        print(f"wrote {out}")
        return
    result = measure(args.workdir, args.reps, log)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    s, a = result["summary"], result["agreement"]
    print(
        f"XLM-R base text tower, library route (median of {args.reps}): export "
        f"{s['export_s']:.1f} s in process ({s['onnx_export_s']:.1f} s torch.onnx.export, "
        f"{s['quantise_s']:.1f} s quantize_dynamic), {s['process_s']:.1f} s and "
        f"{s['peak_mb']:.0f} MB peak PSS for the child; int8 {s['int8_ms_per_text']:.2f} ms "
        f"per text ({s['int8_mb']:.0f} MB graph) against torch fp32 "
        f"{s['torch_ms_per_text']:.2f} ms; cosine min / mean {a['cosine_min']:.5f} / "
        f"{a['cosine_mean']:.5f}, top-10 kept {a['neighbours_kept']:.3f}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
