"""Issue 6: a model's first indexing run exports its int8 towers without torch.

``onnx_graphs.py`` writes open_clip's ViT image tower and CLIP text tower as ONNX graphs
straight from the config and checkpoint. These tests hold the written fp32 graphs to open_clip's
own forward passes on every variant the writer accepts, the written int8 graphs to ONNX
Runtime's quantisation of the fp32 graphs, and the model identity found without torch to the
one the torch encoder computes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from xsearch import Engine, ModelProfile, Settings, register_profile
from xsearch.cli import app
from xsearch.encoders import model_files
from xsearch.encoders.checkpoint import Checkpoint
from xsearch.encoders.model_files import HubOptions, resolve_files
from xsearch.encoders.onnx_backend import (
    direct_export,
    export_steps,
    graph_writer,
    onnx_export,
    onnx_graphs,
    tower_specs,
)
from xsearch.encoders.onnx_backend.export_records import WRITTEN, TextExport
from xsearch.encoders.onnx_backend.onnx_int8 import Int8Encoder
from xsearch.encoders.profiles import get_profile, list_profiles

from .conftest import DATA

ROOT = Path(__file__).resolve().parent.parent
TINY_CFG = json.loads((DATA / "model_configs" / "xsearch-tiny-test.json").read_text())

# Each variant of the tiny config switches on one feature the writer reproduces.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "quick-gelu": {"quick_gelu": True},
    "layer-scale": {"vision_cfg": {"ls_init_value": 0.5}, "text_cfg": {"ls_init_value": 0.5}},
    "average-pool": {"vision_cfg": {"pool_type": "avg"}},
    "average-pool-norm-after": {"vision_cfg": {"pool_type": "avg", "final_ln_after_pool": True}},
    "no-pre-norm": {"vision_cfg": {"no_ln_pre": True}},
    "custom-text-with-bias": {"custom_text": True, "text_cfg": {"proj_bias": True}},
    "two-layers": {"vision_cfg": {"layers": 2}, "text_cfg": {"layers": 2}},
}


def _config(variant: str) -> dict[str, Any]:
    cfg = json.loads(json.dumps(TINY_CFG))
    for key, value in VARIANTS[variant].items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _saved_model(tmp_path: Path, name: str, cfg: dict[str, Any]) -> tuple[Any, Path]:
    """A random open_clip model of ``cfg`` (seeded, made non-trivial) and its checkpoint."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():
        for param in model.parameters():
            # open_clip initialises some weights to exactly 0 or 1 (biases, norms): noise
            # makes every tensor count, so a tensor used in the wrong place shows.
            param.add_(0.05 * torch.randn_like(param))
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def _run(path: Path, feed: dict[str, np.ndarray], optimise: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, feed)[0]
    return out


def _tokens(name: str, texts: list[str]) -> np.ndarray:
    return open_clip.get_tokenizer(name)(texts).numpy().astype(np.int64)


TEXTS = ["a cat", "a photo of a red apple on a wooden table", "", "one two three four five six"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_written_fp32_graphs_compute_open_clip_s_towers(variant: str, tmp_path: Path) -> None:
    name = f"xsearch-graph-{variant}"
    cfg = _config(variant)
    model, path = _saved_model(tmp_path, name, cfg)
    image, text = tower_specs.image_spec(cfg), tower_specs.text_spec(cfg)
    assert image is not None and text is not None
    with Checkpoint(path) as checkpoint:
        assert tower_specs.fits(checkpoint, tower_specs.image_tensors(image), image)
        assert tower_specs.fits(checkpoint, tower_specs.text_tensors(text), text)
        onnx_graphs.write_image_graph(image, checkpoint, tmp_path / "image.onnx")
        onnx_graphs.write_text_graph(text, checkpoint, tmp_path / "text.onnx")
    pixels = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(
        _run(tmp_path / "image.onnx", {"pixels": pixels}), expected, atol=2e-5
    )
    tokens = _tokens(name, TEXTS)
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(tokens)).numpy()
    # The graph takes any length: the full context, each text's own tokens, or a padded
    # length in between (causal: what follows the end-of-text token never changes its row).
    used = [int(np.flatnonzero(t)[-1]) + 1 for t in tokens]
    for lengths in ([tokens.shape[1]] * len(tokens), used, [8] * len(tokens)):
        fitting = [i for i, n in enumerate(lengths) if n >= used[i]]
        assert len(fitting) >= 2
        written = np.concatenate(
            [
                _run(tmp_path / "text.onnx", {"tokens": tokens[i, None, : lengths[i]]})
                for i in fitting
            ]
        )
        np.testing.assert_allclose(written, expected[fitting], atol=2e-5)


def test_the_shipped_toy_model_is_written_as_open_clip_computes_it(tmp_path: Path) -> None:
    files = resolve_files(get_profile("toy-bilingual"), None, HubOptions())
    image, text = direct_export.direct_image_spec(files), direct_export.direct_text_spec(files)
    assert image is not None and text is not None
    with Checkpoint(files.checkpoint) as checkpoint:  # type: ignore[arg-type]
        onnx_graphs.write_image_graph(image, checkpoint, tmp_path / "image.onnx")
        onnx_graphs.write_text_graph(text, checkpoint, tmp_path / "text.onnx")
    open_clip.add_model_config(files.profile.config_dir or ROOT)
    model = open_clip.create_model("xsearch-toy-bilingual", pretrained=str(files.checkpoint))
    model.eval()
    pixels = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(pixels)).numpy()
        tokens = _tokens("xsearch-toy-bilingual", ["猫", "a red apple"])
        expected_text = model.encode_text(torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(
        _run(tmp_path / "image.onnx", {"pixels": pixels}), expected, atol=2e-5
    )
    written = np.concatenate([_run(tmp_path / "text.onnx", {"tokens": t[None]}) for t in tokens])
    np.testing.assert_allclose(written, expected_text, atol=2e-5)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_the_written_int8_graphs_are_onnx_runtime_s_quantisation_of_the_fp32_ones(
    reduce_range: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same integer weights, scales and operators: the same vectors, bit for bit, with
    ONNX Runtime's graph rewrites off (they depend on the order of the nodes)."""
    monkeypatch.setattr(onnx_export, "cpu_has_vnni", lambda: not reduce_range)
    cfg = _config("two-layers")
    _, path = _saved_model(tmp_path, "xsearch-graph-int8", cfg)
    image, text = tower_specs.image_spec(cfg), tower_specs.text_spec(cfg)
    assert image is not None and text is not None

    def keep(weight: str) -> bool:
        return bool(export_steps.TEXT_FP32_WEIGHTS.search(weight))

    plan = graph_writer.Int8Plan(reduce_range=reduce_range)
    text_plan = graph_writer.Int8Plan(reduce_range=reduce_range, keep_fp32=keep)
    with Checkpoint(path) as checkpoint:
        onnx_graphs.write_image_graph(image, checkpoint, tmp_path / "image.fp32.onnx")
        onnx_graphs.write_image_graph(image, checkpoint, tmp_path / "image.int8.onnx", plan)
        onnx_graphs.write_text_graph(text, checkpoint, tmp_path / "text.fp32.onnx")
        onnx_graphs.write_text_graph(text, checkpoint, tmp_path / "text.int8.onnx", text_plan)
    onnx_export._quantise(tmp_path / "image.fp32.onnx", tmp_path / "image.ort.onnx")
    fp32_text = tmp_path / "text.fp32.onnx"
    onnx_export._quantise(
        fp32_text, tmp_path / "text.ort.onnx", keep_fp32=onnx_export._text_fp32_nodes(fp32_text)
    )
    pixels = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    tokens = _tokens("xsearch-graph-int8", TEXTS)
    for optimise in (False, True):
        written = _run(tmp_path / "image.int8.onnx", {"pixels": pixels}, optimise)
        theirs = _run(tmp_path / "image.ort.onnx", {"pixels": pixels}, optimise)
        if optimise:  # fused kernels may sum in another order
            np.testing.assert_allclose(written, theirs, atol=1e-5)
        else:
            np.testing.assert_array_equal(written, theirs)
        for row in tokens:
            written = _run(tmp_path / "text.int8.onnx", {"tokens": row[None]}, optimise)
            theirs = _run(tmp_path / "text.ort.onnx", {"tokens": row[None]}, optimise)
            if optimise:  # fused kernels may sum in another order
                np.testing.assert_allclose(written, theirs, atol=1e-5)
            else:
                np.testing.assert_array_equal(written, theirs)


@pytest.mark.parametrize(
    "change",
    [
        {"vision_cfg": {"attentional_pool": True}},
        {"vision_cfg": {"timm_model_name": "vit_base_patch32_224"}},
        {"vision_cfg": {"layers": [3, 4, 6, 3]}},
        {"vision_cfg": {"pool_type": "none"}},
        {"vision_cfg": {"qk_norm": True}},
        {"vision_cfg": {"something_new": 1}},
        {"init_something": 1},
    ],
)
def test_an_image_tower_the_writer_does_not_know_is_left_to_torch(change: dict[str, Any]) -> None:
    cfg = json.loads(json.dumps(TINY_CFG))
    for key, value in change.items():
        cfg.setdefault(key, {})
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    assert tower_specs.image_spec(cfg) is None


@pytest.mark.parametrize(
    "change",
    [
        {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base"},
        {"pool_type": "last"},
        {"no_causal_mask": True},
        {"embed_cls": True},
        {"tokenizer_kwargs": {"clean": "canonicalize"}},
    ],
)
def test_a_text_tower_the_writer_does_not_know_is_left_to_torch(change: dict[str, Any]) -> None:
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["text_cfg"].update(change)
    assert tower_specs.text_spec(cfg) is None


def test_a_checkpoint_with_a_tensor_the_graph_would_leave_out_is_not_written(
    tmp_path: Path,
) -> None:
    cfg = _config("plain")
    model, path = _saved_model(tmp_path, "xsearch-graph-extra", cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)
    save_file(state, str(path))
    spec = tower_specs.image_spec(cfg)
    assert spec is not None
    with Checkpoint(path) as checkpoint:
        assert not tower_specs.fits(checkpoint, tower_specs.image_tensors(spec), spec)
    del state["visual.transformer.resblocks.0.ls_1.gamma"]
    state["visual.proj"] = torch.ones(64, 16)  # the wrong width of vectors
    save_file(state, str(path))
    with Checkpoint(path) as checkpoint:
        assert not tower_specs.fits(checkpoint, tower_specs.image_tensors(spec), spec) or (
            checkpoint.shape("visual.proj") != (64, cfg["embed_dim"])
        )


def test_bf16_and_fp16_checkpoints_are_read_exactly(tmp_path: Path) -> None:
    weights = torch.randn(5, 7)
    save_file({"a": weights.bfloat16(), "b": weights.half()}, str(tmp_path / "w.safetensors"))
    with Checkpoint(tmp_path / "w.safetensors") as checkpoint:
        np.testing.assert_array_equal(checkpoint.read("a"), weights.bfloat16().float().numpy())
        np.testing.assert_array_equal(checkpoint.read("b"), weights.half().float().numpy())


def test_model_configs_and_tags_read_without_torch_are_open_clip_s() -> None:
    for profile in list_profiles():
        assert model_files.model_config(profile) == model_files._config_from_open_clip(profile)
        if profile.pretrained:
            theirs = open_clip.get_pretrained_cfg(profile.arch, profile.pretrained)
            assert model_files.pretrained_cfg(profile.arch, profile.pretrained) == theirs
    code = (
        "import sys; from xsearch.encoders import model_files as m; "
        "from xsearch.encoders.profiles import get_profile; p = get_profile('mclip-b32'); "
        "m.model_config(p); m.required_hub_files(p); "
        "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_without_open_clip_s_files_the_registry_comes_from_open_clip_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another open_clip layout: the configs and tags come through its own import."""
    profile = get_profile("mclip-b32")
    expected = (
        model_files.model_config(profile),
        model_files.pretrained_cfg(profile.arch, profile.pretrained or ""),
    )
    monkeypatch.setattr(model_files, "open_clip_folder", lambda: None)
    model_files._pretrained_module.cache_clear()
    try:
        assert model_files._config_file(profile) is None
        got = (
            model_files.model_config(profile),
            model_files.pretrained_cfg(profile.arch, profile.pretrained or ""),
        )
        assert model_files._pretrained_module() is open_clip.pretrained
    finally:
        model_files._pretrained_module.cache_clear()
    assert got == expected


def test_the_identity_found_without_torch_is_the_torch_encoder_s(tmp_path: Path) -> None:
    from xsearch.encoders.torch_backend.openclip import OpenClipEncoder

    for name in ("toy-bilingual", "tiny-test"):
        profile = get_profile(name)
        files = resolve_files(profile, None, HubOptions())
        encoder = OpenClipEncoder(profile, device="cpu")
        assert (files.fingerprint, files.dim) == (encoder.fingerprint, encoder.dim)
        assert files.image_size == encoder.input_size


def test_a_first_run_exports_both_towers_without_torch_and_agrees_with_torch(
    tmp_path: Path, photos: Path
) -> None:
    _, path = _saved_model(tmp_path, "xsearch-graph-first-run", _config("two-layers"))
    register_profile(
        ModelProfile(
            name="graph-first-run",
            arch="xsearch-graph-first-run",
            config_dir=tmp_path / "configs",
            weights_file=path,
            tier="test",
        )
    )
    cache = tmp_path / "cache"
    code = (
        "import sys, json; from pathlib import Path; "
        "from xsearch import Engine, Settings, ModelProfile, register_profile; "
        f"register_profile(ModelProfile(name='graph-first-run', arch='xsearch-graph-first-run', "
        f"config_dir=Path({str(tmp_path / 'configs')!r}), weights_file=Path({str(path)!r}), "
        "tier='test')); "
        f"e = Engine(Settings(store=Path({str(tmp_path / 'int8')!r}), model='graph-first-run', "
        f"device='cpu', cache_dir=Path({str(cache)!r}))); r = e.index([sys.argv[1]]); "
        "hits = e.search('a red apple', limit=3); "
        "print(json.dumps([r.counts['indexed'], len(hits), 'torch' in sys.modules, "
        "'open_clip' in sys.modules, e.encoder.image_precision]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(photos)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [7, 3, False, False, "int8"], out.stderr
    settings = Settings(
        store=tmp_path / "int8", model="graph-first-run", device="cpu", cache_dir=cache
    )
    with Engine(settings) as engine:
        assert isinstance(engine.encoder, Int8Encoder)
        assert engine.encoder.image_precision == "int8"  # the cached export, loaded
        export = engine.encoder.export
        assert export is not None and export.made_by == WRITTEN and export.agreement.holds
        text = TextExport.load(export.directory)
        assert text is not None and text.made_by == WRITTEN and text.tokenizer is not None
        int8 = _stored_vectors(engine)
        int8_text = engine.embed_text("a red apple")
    fp32_settings = Settings(
        store=tmp_path / "fp32", model="graph-first-run", device="cpu", precision="fp32"
    )
    with Engine(fp32_settings) as engine:
        engine.index([photos])
        fp32 = _stored_vectors(engine)
        fp32_text = engine.embed_text("a red apple")
    assert int8.keys() == fp32.keys() and len(int8) == 7
    assert min(float(int8[k] @ fp32[k]) for k in int8) > 0.998
    assert float(int8_text @ fp32_text) > 0.998


def _stored_vectors(engine: Engine) -> dict[str, np.ndarray]:
    store = engine.store()
    ids, matrix = next(store.iter_vectors())
    rows = store.hit_rows([int(i) for i in ids])
    return {Path(rows[int(i)].display_path).name: v for i, v in zip(ids, matrix, strict=True)}


def test_models_download_prepares_the_model_so_the_first_index_run_starts_at_once(
    runner: CliRunner, tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XSEARCH_CACHE", str(cache))
    result = runner.invoke(app, ["models", "--download", "toy-bilingual"])
    assert result.exit_code == 0, result.output
    assert "toy-bilingual: prepared; images are encoded by int8 on this machine" in result.output
    assert list(cache.glob("onnx/toy-bilingual-*/visual.int8.onnx"))
    settings = Settings(store=tmp_path / "store", model="toy-bilingual", device="cpu")
    with Engine(settings.with_(cache_dir=cache)) as engine:
        engine.index([photos])
        assert engine.encoder.image_precision == "int8"  # type: ignore[attr-defined]
        assert not any("Prepared" in n for n in engine.notices)
    monkeypatch.setenv("XSEARCH_CACHE", str(tmp_path / "other-cache"))
    result = runner.invoke(app, ["models", "--download", "toy-bilingual", "--no-prepare"])
    assert result.exit_code == 0 and "prepared" not in result.output
    assert not (tmp_path / "other-cache").exists()
