"""Work the benchmarks time in a fresh process (so start-up and peak memory are honest).

    python -m bench.child index --arch ViT-B-32-256 --photos DIR --store DIR [--cache DIR]
                                [--ray local|ADDRESS]
    python -m bench.child prepare --arch ViT-B-32 --store DIR --cache DIR
    python -m bench.child decode --photos DIR --draft 512
    python -m bench.child encode --arch ViT-B-32 --precision bf16

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

WEIGHTS = Path(tempfile.gettempdir()) / "xsearch-bench-weights"


def random_checkpoint(arch: str) -> Path:
    """A saved random-initialised checkpoint of ``arch`` (seed 0), made once.

    Users load real weights from a file, and that path (only the needed tower read from
    the file) is the one to measure, so the bench models load from a checkpoint too.
    """
    path = WEIGHTS / f"{arch}.safetensors"
    if not path.exists():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model(arch, pretrained=None)
        WEIGHTS.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
        partial.rename(path)
    return path


def bench_profile(arch: str) -> str:
    """A profile of an open_clip architecture with random weights saved in a local file."""
    from xsearch import ModelProfile, get_profile, register_profile

    if arch == "toy-bilingual":
        return arch
    name = f"bench-{arch}"
    config_dir = None
    weights = None
    if arch != "tiny":
        weights = random_checkpoint(arch)
    if arch == "tiny":
        # The test suite's tiny random CLIP: for runs that time the plumbing, not the model.
        arch, config_dir = (
            "xsearch-tiny-test",
            Path(__file__).parent.parent / "tests/data/model_configs",
        )
    try:
        get_profile(name)
    except Exception:
        register_profile(
            ModelProfile(
                name=name,
                arch=arch,
                config_dir=config_dir,
                weights_file=weights,
                tier="test",
                languages="en",
                description="bench",
            )
        )
    return name


def cmd_index(args: argparse.Namespace) -> dict[str, Any]:
    from xsearch import Engine, IndexOptions, Progress, Settings

    profile = bench_profile(args.arch)
    settings = Settings(
        store=Path(args.store),
        model=profile,
        device="cpu",
        precision=args.precision,
        cache_dir=Path(args.cache) if args.cache else None,
    )
    ray_s = _start_ray(args.ray, args.ray_cpus) if args.ray else None
    commits: list[tuple[float, int]] = []  # (seconds since the start, files persisted)

    def on_progress(p: Progress) -> None:
        if p.stage == "embed" and p.done:
            commits.append((time.perf_counter() - started, p.done))

    with Engine(settings) as engine:
        started = time.perf_counter()
        report = engine.index(
            [Path(args.photos)],
            IndexOptions(workers=args.workers, batch_size=args.batch),
            on_progress=on_progress,
            ray="auto" if args.ray else None,
        )
        index_s = time.perf_counter() - started
        encoder = engine._encoder
        images_by = getattr(encoder, "image_precision", None) if encoder is not None else None
    steady = None
    # From the first commit past half the files to the last: the model loaded long before,
    # and whatever was queued ahead of the first commit committed by then (a Ray run's
    # results can pile up while its first block is written), so this is the pipeline's pace.
    half = next((c for c in commits if c[1] >= commits[-1][1] / 2), None) if commits else None
    if half is not None and commits[-1][0] > half[0]:
        steady = (commits[-1][1] - half[1]) / (commits[-1][0] - half[0])
    return {
        "index_s": index_s,
        "ray_init_s": ray_s,
        "first_commit_s": commits[0][0] if commits else None,
        "images_per_s_steady": steady,
        "indexed": report.counts["indexed"],
        "unchanged": report.counts["unchanged"],
        "failed": report.counts["failed"],
        "images_by": images_by,
    }


def _start_ray(address: str, cpus: int | None) -> float:
    """Connect to (or start) Ray before the clock of the run starts; returns the seconds."""
    import ray

    started = time.perf_counter()
    if address == "local":
        ray.init(num_cpus=cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return time.perf_counter() - started


def cmd_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Make (or find) the int8 export of a model, as the first indexing run would."""
    from xsearch import Engine, Settings

    settings = Settings(
        store=Path(args.store),
        model=bench_profile(args.arch),
        device="cpu",
        cache_dir=Path(args.cache),
    )
    started = time.perf_counter()
    with Engine(settings) as engine:
        encoder: Any = engine.encoder
        encoder.preprocess  # noqa: B018 - resolving the image path makes the export
        export = encoder.export
    return {
        "seconds": time.perf_counter() - started,
        "images_by": encoder.image_precision,
        "export_seconds": export.export_seconds if export else None,
        "agreement": export.agreement.__dict__ if export else None,
        "int8_images_per_s_probe": export.int8_images_per_s if export else None,
        "fp32_images_per_s_probe": export.fp32_images_per_s if export else None,
    }


def cmd_decode(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from xsearch.pipeline import DecodeOptions, WorkItem, decode_item

    torch.set_num_threads(1)
    import open_clip

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32-256", pretrained=None)
    files = sorted(Path(args.photos).glob("*.jpg"))[: args.limit]
    opts = DecodeOptions(
        max_pixels=178_956_970, timeout=60, video_interval=1.0, draft_size=args.draft or None
    )
    started = time.perf_counter()
    for i, path in enumerate(files):
        raw = os.fsencode(path)
        st = path.stat()
        out = decode_item(WorkItem(i, raw, st.st_size, st.st_mtime_ns, "image"), preprocess, opts)
        assert out.error is None, out.error
    seconds = time.perf_counter() - started
    return {"files": len(files), "seconds": seconds, "images_per_s_one_core": len(files) / seconds}


def cmd_encode(args: argparse.Namespace) -> dict[str, Any]:
    """Image-tower throughput of one precision, and its vectors for agreement checks."""
    import numpy as np
    import torch

    from xsearch import Settings
    from xsearch.engine import Engine

    torch.manual_seed(0)
    pixels = torch.load(args.pixels)
    with Engine(
        Settings(store=Path(args.store), model=bench_profile(args.arch), device="cpu")
    ) as e:
        enc: Any = e.encoder
        model = enc._model
        if args.precision == "int8":
            model = torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
        ctx = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if args.precision == "bf16"
            else torch.autocast("cpu", enabled=False)
        )
        texts = [f"a photo of thing number {i}" for i in range(args.texts)]
        with torch.inference_mode(), ctx:
            model.encode_image(pixels[:4])
            started = time.perf_counter()
            out = [
                model.encode_image(pixels[i : i + args.batch])
                for i in range(0, len(pixels), args.batch)
            ]
            seconds = time.perf_counter() - started
            tokens = enc._tokenizer(texts)
            text_vecs = model.encode_text(tokens).float()
        img = torch.cat(out).float()
        img = torch.nn.functional.normalize(img, dim=-1).numpy()
        txt = torch.nn.functional.normalize(text_vecs, dim=-1).numpy()
    np.save(args.vectors_out, img)
    np.save(args.vectors_out.replace(".npy", "_text.npy"), txt)
    return {"images": len(pixels), "seconds": seconds, "images_per_s": len(pixels) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("index")
    p.add_argument("--arch", required=True)
    p.add_argument("--photos", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="fp32")
    p.add_argument("--cache", default=None)
    p.add_argument("--ray", default=None, help="local, or the address of a running cluster")
    p.add_argument("--ray-cpus", type=int, default=None)
    p = sub.add_parser("prepare")
    p.add_argument("--arch", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--cache", required=True)
    p = sub.add_parser("decode")
    p.add_argument("--photos", required=True)
    p.add_argument("--draft", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)
    p = sub.add_parser("encode")
    p.add_argument("--arch", required=True)
    p.add_argument("--pixels", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--texts", type=int, default=50)
    p.add_argument("--vectors-out", required=True)
    args = parser.parse_args()
    handler = {
        "index": cmd_index,
        "prepare": cmd_prepare,
        "decode": cmd_decode,
        "encode": cmd_encode,
    }[args.cmd]
    print(json.dumps(handler(args)))


if __name__ == "__main__":
    main()
