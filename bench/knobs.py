"""The CPU pipeline's knobs, one at a time (issue 6): what chose the defaults.

    python -m bench.knobs pipeline WORKERS DRAFT_FACTOR THREADS   # images/s, ViT-B-32-256 bf16
    python -m bench.knobs draft                                   # draft decoding vs full size
    python -m bench.knobs text                                    # one query's text encoding

``pipeline`` indexes the 300 generated 1600×1200 photos of ``python -m bench --only
indexing`` with decode workers, JPEG draft size (a multiple of the model's input; 0: full
size) and torch threads as given. ``draft`` compares image vectors from draft decoding at
1× and 2× the input size with full-size decoding. ``text`` times ViT-B-32's text tower for
one 11-token query in fp32 and bf16, on one and on two threads. Run each alone: the numbers
are what the machine gives at that moment.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PHOTOS = Path("/tmp/xsearch-bench/photos_300_1600x1200")


def pipeline(workers: int, factor: float, threads: int) -> None:
    import torch

    import xsearch.indexer as indexer
    from xsearch import Engine, IndexOptions, Settings

    from .child import bench_profile

    torch.set_num_threads(threads)
    indexer._draft_size = lambda enc: int(enc.input_size * factor) if factor else None  # type: ignore[attr-defined]
    store = Path("/tmp/xsearch-bench/store_knobs")
    shutil.rmtree(store, ignore_errors=True)
    name = bench_profile("ViT-B-32-256")
    with Engine(Settings(store=store, model=name, device="cpu", precision="bf16")) as engine:
        started = time.perf_counter()
        report = engine.index([PHOTOS], IndexOptions(workers=workers))
        seconds = time.perf_counter() - started
    rate = report.counts["indexed"] / seconds
    print(f"workers={workers} draft={factor}x threads={threads}: {rate:.1f} images/s indexing")


def draft() -> None:
    import torch

    from xsearch import get_profile
    from xsearch.encoders.torch_backend.openclip import OpenClipEncoder
    from xsearch.media.images import decode_image

    from .child import bench_profile

    encoder = OpenClipEncoder(
        get_profile(bench_profile("ViT-B-32-256")), device="cpu", precision="fp32"
    )
    files = sorted(PHOTOS.glob("*.jpg"))[:48]

    def vectors(size: int | None) -> np.ndarray:
        pictures = [
            decode_image(bytes(str(f), "utf-8"), max_pixels=10**9, draft_size=size).image
            for f in files
        ]
        return encoder.encode_images(torch.stack([encoder.preprocess(p) for p in pictures]))

    full = vectors(None)
    for factor in (2, 1):
        cos = np.sum(vectors(encoder.input_size * factor) * full, axis=1)
        print(f"draft {factor}x input: cosine to full-size decoding min {cos.min():.6f}")


def text() -> None:
    import copy

    import open_clip
    import torch

    from xsearch.encoders.torch_backend.text_encoding import encode_text_trimmed

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    model.visual = None
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    texts = [f"a photo of thing {i} on a sunny day" for i in range(20)]
    for name, tower in (("fp32", model), ("bf16", copy.deepcopy(model).to(torch.bfloat16))):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times = []
            with torch.inference_mode():
                for query in texts:
                    tokens = tokenizer([query])
                    started = time.perf_counter()
                    encode_text_trimmed(tower, tokens)
                    times.append((time.perf_counter() - started) * 1e3)
            print(f"{name}, {threads} thread(s): {statistics.median(times[2:]):.1f} ms per query")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "pipeline" and len(sys.argv) == 5:
        pipeline(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
    elif what == "draft":
        draft()
    elif what == "text":
        text()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
