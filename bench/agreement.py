"""CPU precision: fp32 against bf16 and int8 (torch dynamic, and xsearch's ONNX path) (issue 6).

For each precision: image-tower throughput (batch 32, this process's threads), the cosine
between its image vectors and fp32's, and how much of fp32's top 10 it keeps when the same
text queries rank the same images. A fast path may only become the default where these
agree; see the verdict in bench/README.md.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def _precision(name: str) -> Iterator[None]:
    import torch

    if name == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def _encode(
    model: Any, pixels: Any, tokens: Any, precision: str, batch: int
) -> tuple[np.ndarray, np.ndarray, float]:
    import copy

    import torch

    visual = model.visual
    if precision == "int8-onnx":
        return _encode_onnx(model, pixels, tokens, batch)
    if precision in ("fp32-onnx-written", "int8-onnx-written"):
        return _encode_written(model, pixels, tokens, batch, int8=precision.startswith("int8"))
    if precision == "int8":
        # Only the image tower: open_clip's text tower reads its weights' dtype, which a
        # quantised Linear no longer has (and query text is encoded one string at a time).
        visual = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(visual), {torch.nn.Linear}, dtype=torch.qint8
        )
    text_model = model
    if precision == "bf16-weights":
        # What xsearch runs on a bf16 CPU: both towers' weights in bf16.
        visual = copy.deepcopy(visual).to(torch.bfloat16)
        pixels = pixels.to(torch.bfloat16)
        text_model = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode(), _precision(precision):
        visual(pixels[:batch])  # warm-up: kernels, caches
        started = time.perf_counter()
        image = torch.cat([visual(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])
        seconds = time.perf_counter() - started
        text = text_model.encode_text(tokens)
    image = torch.nn.functional.normalize(image.float(), dim=-1).numpy()
    text = torch.nn.functional.normalize(text.float(), dim=-1).numpy()
    return image, text, len(pixels) / seconds


def _encode_onnx(model: Any, pixels: Any, tokens: Any, batch: int) -> tuple[Any, Any, float]:
    """xsearch's int8 path: the image tower exported and quantised as the product does it,
    run by ONNX Runtime in the product's chunks; texts in fp32 (what differs is images)."""
    import tempfile

    from xsearch.encoders.onnx_backend.onnx_export import _export_onnx, _quantise
    from xsearch.encoders.torch_backend.openclip import _ImageTower

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        _export_onnx(_ImageTower(model).eval(), pixels[:2], fp32_path)
        _quantise(fp32_path, int8_path)
        img, rate = _run_graph(int8_path, pixels.numpy(), batch)
    return img, _fp32_texts(model, tokens), rate


def _encode_written(
    model: Any, pixels: Any, tokens: Any, batch: int, *, int8: bool
) -> tuple[Any, Any, float]:
    """The image tower as the product writes it from a checkpoint without torch
    (``onnx_graphs.py``), fp32 or int8, run by ONNX Runtime like ``_encode_onnx``."""
    import tempfile

    from safetensors.torch import save_file

    from xsearch.encoders.checkpoint import Checkpoint
    from xsearch.encoders.onnx_backend.export_steps import cpu_has_vnni
    from xsearch.encoders.onnx_backend.graph_writer import Int8Plan
    from xsearch.encoders.onnx_backend.onnx_graphs import write_image_graph
    from xsearch.encoders.onnx_backend.tower_specs import image_spec

    with tempfile.TemporaryDirectory() as tmp:
        weights, graph = Path(tmp) / "w.safetensors", Path(tmp) / "visual.onnx"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        spec = image_spec(model.bench_cfg)
        assert spec is not None
        plan = Int8Plan(reduce_range=not cpu_has_vnni()) if int8 else None
        with Checkpoint(weights) as checkpoint:
            write_image_graph(spec, checkpoint, graph, plan)
        img, rate = _run_graph(graph, pixels.numpy(), batch)
    return img, _fp32_texts(model, tokens), rate


def _run_graph(path: Path, pixels: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """Unit image vectors of an ONNX image graph, in the product's chunks, and images/s."""
    from xsearch.encoders.base import l2_normalise
    from xsearch.encoders.onnx_backend.onnx_int8 import open_session, run_session

    session = open_session(path)
    run_session(session, pixels[:2])
    started = time.perf_counter()
    img = np.concatenate(
        [run_session(session, pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    )
    return l2_normalise(img), len(pixels) / (time.perf_counter() - started)


def _fp32_texts(model: Any, tokens: Any) -> np.ndarray:
    """Unit text vectors of the torch model in fp32 (what differs between these rows is
    the image tower)."""
    import torch

    from xsearch.encoders.base import l2_normalise

    with torch.inference_mode():
        return l2_normalise(model.encode_text(tokens).float().numpy())


def _top10_kept(
    ref_img: np.ndarray, ref_txt: np.ndarray, img: np.ndarray, txt: np.ndarray
) -> float:
    ref = np.argsort(-(ref_txt @ ref_img.T), axis=1)[:, :10]
    got = np.argsort(-(txt @ img.T), axis=1)[:, :10]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, got, strict=True)]))


def run(
    photos: Path, archs: list[str], *, n_images: int = 96, batch: int = 32, log: Any = print
) -> dict[str, Any]:
    import open_clip
    import torch

    from xsearch.media.images import decode_image

    files = sorted(photos.glob("*.jpg"))[:n_images]
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        model.eval()
        model.bench_cfg = open_clip.get_model_config(arch)
        pixels = torch.stack(
            [
                preprocess(
                    decode_image(bytes(str(f), "utf-8"), max_pixels=10**9, draft_size=512).image
                )
                for f in files
            ]
        )
        texts = [
            f"a photo of {w}"
            for w in (
                "a cat",
                "a dog",
                "the sea",
                "a city",
                "food",
                "a car",
                "snow",
                "a child",
                "flowers",
                "a party",
            )
            * 5
        ]
        tokens = open_clip.get_tokenizer(arch)(texts)
        ref_img, ref_txt, ref_rate = _encode(model, pixels, tokens, "fp32", batch)
        rows.append(
            {
                "arch": arch,
                "precision": "fp32",
                "images_per_s": ref_rate,
                "cos_min": 1.0,
                "cos_mean": 1.0,
                "top10_kept": 1.0,
                "speedup": 1.0,
            }
        )
        for precision in (
            "bf16",
            "bf16-weights",
            "int8",
            "int8-onnx",
            "fp32-onnx-written",
            "int8-onnx-written",
        ):
            img, txt, rate = _encode(model, pixels, tokens, precision, batch)
            cos = np.sum(img * ref_img, axis=1)
            row = {
                "arch": arch,
                "precision": precision,
                "images_per_s": rate,
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
                "top10_kept": _top10_kept(ref_img, ref_txt, img, txt),
                "speedup": rate / ref_rate,
            }
            rows.append(row)
            log(f"agreement: {row}")
    return {"rows": rows, "images": len(files), "batch": batch, "threads": torch.get_num_threads()}


def run_trained(workdir: Path, *, n_pictures: int = 392, log: Any = print) -> dict[str, Any]:
    """bf16 against fp32 with *trained* weights: the bundled toy model on held-out pictures.

    Random weights make every image vector nearly the same, so their top 10 is decided by
    noise; the toy model is the one trained model available offline. Retrieval runs through
    the product (``Engine`` with ``Settings.precision``, the ``xsearch eval`` code), and the
    vectors are compared on the same pixels.
    """
    import torch
    from PIL import Image

    from xsearch import Engine, Settings, synth
    from xsearch.evaluate import load_pairs, run_eval

    pictures = workdir / f"toy_heldout_{n_pictures}"
    if not (pictures / "captions.tsv").is_file():
        synth.generate_folder(pictures, n_pictures, seed=90211, split="heldout", size=128)
    pairs = load_pairs(pictures / "captions.tsv")
    recall: dict[str, Any] = {}
    encoders: dict[str, Any] = {}
    for precision in ("fp32", "bf16", "int8"):
        store = workdir / f"toy_store_{precision}"
        shutil.rmtree(store, ignore_errors=True)
        settings = Settings(
            store=store,
            model="toy-bilingual",
            device="cpu",
            precision=precision,
            cache_dir=workdir / "xsearch_cache",
        )
        with Engine(settings) as engine:
            recall[precision] = run_eval(engine, pairs).to_json()["languages"]
            encoders[precision] = engine.encoder
        log(f"agreement (toy-bilingual, {precision}): {recall[precision]}")

    fp32 = encoders["fp32"]
    files = sorted(pictures.glob("*.jpg"))
    pixels = torch.stack([fp32.preprocess(Image.open(f).convert("RGB")) for f in files])
    names = sorted({p.caption for p in pairs})
    ref, text = fp32.encode_images(pixels), fp32.encode_texts(names)
    rows = []
    for precision in ("bf16", "int8"):
        encoder = encoders[precision]
        # The int8 path takes numpy pixels; its preprocessing is bit-identical (tests).
        got = encoder.encode_images(pixels.numpy() if precision == "int8" else pixels)
        got_text = encoder.encode_texts(names)  # int8: texts in "auto" (bf16 here)
        cos = np.sum(ref * got, axis=1)
        text_cos = np.sum(text * got_text, axis=1)
        row = {
            "model": "toy-bilingual",
            "precision": precision,
            "images_by": encoder.image_precision,
            "pictures": len(files),
            "queries": len(names),
            "cos_min": float(cos.min()),
            "cos_mean": float(cos.mean()),
            "text_cos_min": float(text_cos.min()),
            "text_cos_mean": float(text_cos.mean()),
            "top10_kept": _top10_kept(ref, text, got, got_text),
            "recall": recall[precision],
        }
        rows.append(row)
        log(f"agreement (toy-bilingual vectors): {row}")
    return {"rows": rows, "recall_fp32": recall["fp32"]}
