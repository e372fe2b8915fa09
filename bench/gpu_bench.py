"""The CUDA part of the benchmarks, run by bench/gpu.sh on a GPU machine.

    python -m bench.gpu_bench --out results/gpu.json            # on the GPU machine
    python -m bench.gpu_bench --device cpu --tiny --out x.json  # dry run anywhere

Measures: the image tower alone (bf16 autocast, channels-last, pinned non-blocking
copies) per architecture; JPEG decoding by PIL with draft mode on CPU workers against
torchvision's nvJPEG on the GPU; xsearch indexing end to end on generated photos; and exact
search through torch on the GPU (xsearch.index.torch_index) at 1M vectors, checked
against the numpy oracle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tower(arch: str, device: str, batch: int, batches: int) -> dict[str, Any]:
    import open_clip
    import torch

    model = open_clip.create_model(arch, pretrained=None).eval().to(device)
    size = model.visual.image_size
    side = int(size[0] if isinstance(size, tuple | list) else size)
    on_cuda = device.startswith("cuda")
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    host = torch.randn(batch, 3, side, side)
    if on_cuda:
        host = host.pin_memory()
    dtype = torch.bfloat16
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=on_cuda):
        for _ in range(3):
            model.encode_image(host.to(device, non_blocking=True))
        _sync(device)
        started = time.perf_counter()
        for _ in range(batches):
            x = host.to(device, non_blocking=True)
            if on_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            model.encode_image(x)
        _sync(device)
        seconds = time.perf_counter() - started
    return {"arch": arch, "batch": batch, "images_per_s": batch * batches / seconds}


def _make_photo(args: tuple[Path, int, int, int]) -> None:
    from bench.data import photo_like

    path, seed, w, h = args
    if not path.exists():
        photo_like(np.random.default_rng(seed), w, h).save(path, "JPEG", quality=90)


def make_photos(folder: Path, n: int, w: int, h: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"photo_{i:05d}.jpg", i, w, h) for i in range(n)]
    with ProcessPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1)) as pool:
        list(pool.map(_make_photo, jobs, chunksize=8))
    return [j[0] for j in jobs]


def _pil_decode(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (448, 448))
        im = im.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        return im.size[0]


def decode_paths(files: list[Path], device: str) -> list[dict[str, Any]]:
    rows = []
    workers = max(1, (os.cpu_count() or 2) - 1)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_pil_decode, files, chunksize=8))
    rows.append(
        {
            "path": f"PIL draft, {workers} processes",
            "images_per_s": len(files) / (time.perf_counter() - started),
        }
    )
    if not device.startswith("cuda"):
        rows.append({"path": "torchvision nvJPEG", "skipped": "no CUDA device"})
        return rows
    import torch
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2.functional import resize

    datas = [read_file(str(f)) for f in files]
    for batch in (32, 128):
        torch.cuda.synchronize()
        started = time.perf_counter()
        for i in range(0, len(datas), batch):
            imgs = decode_jpeg(datas[i : i + batch], device=device)
            [resize(im, [224, 224], antialias=True) for im in imgs]
        torch.cuda.synchronize()
        rows.append(
            {
                "path": f"torchvision nvJPEG, batch {batch} (file bytes read beforehand)",
                "images_per_s": len(datas) / (time.perf_counter() - started),
            }
        )
    return rows


def index_end_to_end(folder: Path, device: str, arch: str) -> dict[str, Any]:
    from bench.child import bench_profile
    from xsearch import Engine, IndexOptions, Settings

    store = Path(tempfile.mkdtemp(prefix="xs-gpu-store-"))
    try:
        with Engine(Settings(store=store, model=bench_profile(arch), device=device)) as engine:
            started = time.perf_counter()
            _ = engine.encoder.preprocess  # builds and loads the image tower
            load_s = time.perf_counter() - started
            started = time.perf_counter()
            report = engine.index([folder], IndexOptions())
            seconds = time.perf_counter() - started
        return {
            "arch": arch,
            "files": report.counts["indexed"],
            "seconds": seconds,
            "images_per_s": report.counts["indexed"] / seconds,
            "model_load_s": load_s,
        }
    finally:
        shutil.rmtree(store, ignore_errors=True)


def search(n: int, device: str, queries: int) -> dict[str, Any]:
    import torch

    from bench.data import clip_like, pushed
    from xsearch.index.exact import NumpyIndex, exact_search
    from xsearch.index.torch_index import TorchExactIndex

    vectors = clip_like(n)
    ids = np.arange(1, n + 1, dtype=np.int64)
    base = NumpyIndex(512)
    base.add(ids, vectors)
    started = time.perf_counter()
    index = TorchExactIndex.mirror(base, 512, device=device)
    index.search(vectors[:1], 10)
    upload_s = time.perf_counter() - started
    q = pushed(clip_like(queries, seed=1), 2.0)
    times = []
    for row in q[:200]:
        t = time.perf_counter()
        index.search(row[None, :], 10)
        times.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    _, got = index.search(q, 10)
    batch_s = time.perf_counter() - t
    _, truth = exact_search(vectors, ids, q[:50], 10)
    agree = float(np.mean(got[:50] == truth))
    return {
        "vectors": n,
        "device": device,
        "dtype": str(index._half).replace("torch.", ""),
        "upload_s": upload_s,
        "p50_ms": statistics.median(times),
        "p99_ms": float(np.percentile(times, 99)),
        "batch_queries": len(q),
        "batch_queries_per_s": len(q) / batch_s,
        "ids_equal_to_oracle": agree,
        "gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="dry run sizes")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "xs-gpu-bench"
    )
    args = parser.parse_args()
    import torch

    doc: dict[str, Any] = {
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))

    tiny = args.tiny
    steps = [
        (
            "tower",
            lambda: [
                tower(a, args.device, 8 if tiny else 512, 2 if tiny else 30)
                for a in ("ViT-B-32", "ViT-B-32-256")
            ],
        ),
        (
            "search",
            lambda: [
                search(n, args.device, 64 if tiny else 4096)
                for n in ((5_000,) if tiny else (100_000, 1_000_000))
            ],
        ),
    ]
    for name, step in steps:
        _log(f"{name} starts")
        try:
            doc[name] = step()
        except Exception as exc:  # keep what the other steps measured
            doc[name] = {"error": repr(exc)}
        _log(f"{name}: {doc[name]}")
        save()
    _log("photos")
    files = make_photos(args.workdir / "photos", 40 if tiny else 3000, 1600, 1200)
    for name, step2 in (
        ("decode", lambda: decode_paths(files, args.device)),
        (
            "index_end_to_end",
            lambda: [index_end_to_end(args.workdir / "photos", args.device, "ViT-B-32")],
        ),
    ):
        _log(f"{name} starts")
        try:
            doc[name] = step2()
        except Exception as exc:
            doc[name] = {"error": repr(exc)}
        _log(f"{name}: {doc[name]}")
        save()


if __name__ == "__main__":
    main()
