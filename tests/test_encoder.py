"""The open_clip adapter: towers loaded on demand, trimmed text encoding, CPU precision."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from xsearch import Engine, IndexOptions, Settings, get_profile
from xsearch.encoders.torch_backend.openclip import OpenClipEncoder, cpu_has_fast_bf16
from xsearch.errors import ConfigError

from .conftest import TINY

TEXTS = ["猫", "a photo of a dog", "一只红色苹果的照片", "a red apple on a table in the kitchen"]


def _whole_model(arch: str, checkpoint: Path | None = None) -> Any:
    """open_clip's own model, loaded the ordinary way, as the reference."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=str(checkpoint) if checkpoint else None)
    model.eval()
    return model


def _normalised(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def _pictures(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(n)]


def _reference(
    encoder: OpenClipEncoder, checkpoint: Path | None, arch: str
) -> tuple[np.ndarray, np.ndarray, list[Image.Image]]:
    model = _whole_model(arch, checkpoint)
    pictures = _pictures(3)
    # The profile's own preprocessing (the toy model squashes), on both sides.
    pixels = torch.stack([encoder.preprocess(p) for p in pictures])
    with torch.inference_mode():
        texts = _normalised(model.encode_text(encoder._tokenizer(TEXTS)))
        images = _normalised(model.encode_image(pixels))
    return texts, images, pictures


def test_towers_load_on_first_use_and_match_the_whole_model() -> None:
    toy = get_profile("toy-bilingual")
    encoder = OpenClipEncoder(toy, device="cpu", precision="fp32")
    assert encoder.loaded_towers() == frozenset()
    texts = encoder.encode_texts(TEXTS)
    assert encoder.loaded_towers() == {"text"}
    ref_texts, ref_images, pictures = _reference(encoder, toy.weights_file, toy.arch)
    images = encoder.encode_images(torch.stack([encoder.preprocess(p) for p in pictures]))
    assert encoder.loaded_towers() == {"text", "image"}
    # Text is encoded over the real tokens only; a causal tower gives the same vectors.
    np.testing.assert_allclose(texts, ref_texts, atol=1e-5)
    np.testing.assert_allclose(images, ref_images, atol=1e-6)


def test_a_checkpoint_that_is_not_safetensors_takes_open_clip_s_loader(tmp_path: Path) -> None:
    tiny = get_profile(TINY)
    OpenClipEncoder(tiny, device="cpu")  # registers the tiny config with open_clip
    model = _whole_model(tiny.arch)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint
    )
    encoder = OpenClipEncoder(tiny, device="cpu", checkpoint=checkpoint, precision="fp32")
    ref_texts, ref_images, pictures = _reference(encoder, checkpoint, tiny.arch)
    images = encoder.encode_images(torch.stack([encoder.preprocess(p) for p in pictures]))
    np.testing.assert_allclose(images, ref_images, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), ref_texts, atol=1e-5)


def test_indexing_loads_only_the_image_tower_and_a_text_query_only_the_text_tower(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The torch encoder's towers (fp32: the int8 path encodes images without torch).
    settings = Settings(store=tmp_path / "store", model=TINY, device="cpu", precision="fp32")
    with Engine(settings) as engine:
        engine.index([photos], IndexOptions(tag=False))
        assert engine.encoder.loaded_towers() == {"image"}  # type: ignore[attr-defined]
    monkeypatch.setattr("xsearch.tag_sync._BANKS", {})  # no label vectors from other tests
    with Engine(replace(settings, store=tmp_path / "tagged")) as engine:
        # Tagging needs the text tower once (its label vectors): the image tower goes first.
        engine.index([photos])
        assert engine.encoder.loaded_towers() == {"text"}  # type: ignore[attr-defined]
    with Engine(settings) as engine:
        assert engine.search("anything", limit=3)
        assert engine.encoder.loaded_towers() == {"text"}  # type: ignore[attr-defined]


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16() -> None:
    auto = OpenClipEncoder(get_profile(TINY), device="cpu")
    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert auto.image_dtype == expected
    assert OpenClipEncoder(get_profile(TINY), device="cpu", precision="fp32").image_dtype == (
        torch.float32
    )


def test_an_unknown_precision_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="Unknown precision 'fp8'"):
        Settings(precision="fp8")
    assert Settings.from_env({"XSEARCH_PRECISION": "fp32"}).precision == "fp32"


def test_a_truncated_checkpoint_is_a_clear_model_error(tmp_path: Path) -> None:
    from xsearch.errors import ModelError

    toy = get_profile("toy-bilingual")
    assert toy.weights_file is not None
    data = toy.weights_file.read_bytes()
    broken = tmp_path / "toy.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    encoder = OpenClipEncoder(toy, device="cpu", checkpoint=broken)
    with pytest.raises(ModelError, match="truncated"):
        encoder.encode_images(torch.zeros(1, 3, encoder.input_size, encoder.input_size))
    not_weights = tmp_path / "notes.safetensors"
    not_weights.write_bytes(b"hello")
    with pytest.raises(ModelError, match="is not a safetensors file"):
        OpenClipEncoder(toy, device="cpu", checkpoint=not_weights).encode_texts(["x"])
