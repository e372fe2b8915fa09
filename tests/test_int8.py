"""Issue 6: the int8 ONNX image tower — the CPU fast path that needs no torch to index.

The export is checked against the fp32 tower before ``auto`` may use it; these tests pin
that gate, the torch-free preprocessing, the cache and its recovery, and that the
vectors it stores agree with torch's.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import open_clip
import pytest
from PIL import Image
from typer.testing import CliRunner

from xsearch import Engine, IndexOptions, Settings
from xsearch.cli import app
from xsearch.encoders.assemble import EncoderAssembly
from xsearch.encoders.onnx_backend import direct_export, export_records, export_steps
from xsearch.encoders.onnx_backend.export_records import TextExport, TowerExport
from xsearch.encoders.onnx_backend.onnx_int8 import Int8Encoder, used_tokens
from xsearch.encoders.onnx_backend.preprocess import ImagePreprocess
from xsearch.encoders.onnx_backend.probes import probe_texts
from xsearch.errors import ConfigError

from .conftest import TINY, random_image

ROOT = Path(__file__).resolve().parent.parent


def _settings(tmp_path: Path, name: str = "store", **kw: object) -> Settings:
    return Settings(store=tmp_path / name, model=TINY, device="cpu", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_numpy_preprocessing_equals_open_clip_s_transform(
    resize_mode: str, interpolation: str
) -> None:
    rng = np.random.default_rng(3)
    mean, std = (0.1, 0.2, 0.3), (0.3, 0.2, 0.1)
    for size in (224, 32):
        theirs = open_clip.image_transform(
            size, False, mean=mean, std=std, resize_mode=resize_mode, interpolation=interpolation
        )
        mine = ImagePreprocess(size, mean, std, resize_mode, interpolation)
        for w, h in [(640, 480), (480, 640), (257, 256), (size, size), (100, 33), (1, 1)]:
            for mode in ("RGB", "L", "RGBA", "P"):
                pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                np.testing.assert_array_equal(mine(image), theirs(image).numpy())


def test_auto_indexes_images_with_the_int8_tower_and_it_agrees_with_fp32(
    photos: Path, tmp_path: Path
) -> None:
    with Engine(_settings(tmp_path, "int8")) as engine:
        engine.index([photos])
        assert isinstance(engine.encoder, Int8Encoder)
        assert engine.encoder.image_precision == "int8"
        export = engine.encoder.export
        assert export is not None and export.agreement.holds
        int8 = _vectors(engine)
    with Engine(_settings(tmp_path, "fp32", precision="fp32")) as engine:
        engine.index([photos])
        fp32 = _vectors(engine)
    assert int8.keys() == fp32.keys() and len(int8) == 7
    cosines = [float(int8[k] @ fp32[k]) for k in int8]
    assert min(cosines) > 0.998


def _vectors(engine: Engine) -> dict[str, np.ndarray]:
    """Each stored file's (first) vector, by the file's name."""
    store = engine.store()
    ids, matrix = next(store.iter_vectors())
    rows = store.hit_rows([int(i) for i in ids])
    return {Path(rows[int(i)].display_path).name: v for i, v in zip(ids, matrix, strict=True)}


def test_the_export_records_its_agreement_and_is_reused(photos: Path, tmp_path: Path) -> None:
    with Engine(_settings(tmp_path, "a")) as engine:
        engine.index([photos])
        export = engine.encoder.export  # type: ignore[attr-defined]
    record = json.loads((export.directory / export_records.RECORD_FILE).read_text())
    assert record["agreement"]["pictures"] == 48
    assert record["agreement"]["cosine_min"] >= export_records.MIN_COSINE
    assert TowerExport.load(export.directory) == export
    modified = export.model_path.stat().st_mtime_ns
    with Engine(_settings(tmp_path, "b")) as engine:
        engine.index([photos])
        assert engine.encoder.export == export  # type: ignore[attr-defined]
        assert not any("Prepared" in n for n in engine.notices)
    assert export.model_path.stat().st_mtime_ns == modified


def _fresh_home(tmp_path: Path) -> dict[str, str]:
    """The environment of a Python subprocess on a machine that has never run xsearch: its
    home folder is empty, so only the cache it is given can hold an export (its user
    site-packages stay where they are)."""
    home = tmp_path / "fresh-home"
    home.mkdir(exist_ok=True)
    user_base = site.getuserbase()
    return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "PYTHONUSERBASE": user_base}


def test_indexing_with_a_cached_export_imports_neither_torch_nor_open_clip(
    photos: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, "first")
    with Engine(settings) as engine:
        engine.index([photos])  # makes the export
    # Issue 17: Settings() in the subprocess looked in ~/.cache/xsearch, not in the tests'
    # cache, and found an export only where an earlier run had left one for this CPU there.
    code = (
        "import sys; from pathlib import Path; from xsearch import Engine, Settings; "
        "from tests.conftest import TINY; "
        f"e = Engine(Settings(store=Path({str(tmp_path / 'second')!r}), model=TINY, "
        f"device='cpu', cache_dir=Path({str(settings.resolved_cache_dir)!r}))); "
        "r = e.index([sys.argv[1]]); "
        "print(r.counts['indexed'], 'torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(photos)],
        env=_fresh_home(tmp_path),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.split() == ["7", "False", "False"], out.stderr
    assert not (tmp_path / "fresh-home" / ".cache" / "xsearch").exists()


def _cpuinfo(flags: str, model: str = "AMD EPYC 9555 64-Core Processor") -> str:
    return f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: fpu sse2 {flags}\n"


def test_an_export_is_kept_per_int8_instruction_set_and_found_again_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xsearch.encoders import cpu

    def on(info: str) -> Path:
        monkeypatch.setattr(cpu, "_cpuinfo", lambda: info)
        return export_records.export_directory(tmp_path, TINY, None)

    epyc = on(_cpuinfo("avx2 avx512bw avx512_vnni avx512_bf16"))
    assert export_steps.cpu_has_vnni()  # full-range int8 weights
    # BF16 and VP2INTERSECT choose no int8 kernel: the same export.
    assert on(_cpuinfo("avx2 avx512bw avx512_vnni avx512_bf16 avx512_vp2intersect")) == epyc
    # The same model name with VNNI masked (a virtual machine): 7-bit weights, its own export.
    assert on(_cpuinfo("avx2 avx512bw avx512_bf16")) != epyc
    assert not export_steps.cpu_has_vnni()
    monkeypatch.undo()
    here = export_records.export_directory(tmp_path, TINY, None)
    code = (
        "import sys; from pathlib import Path; from xsearch.encoders.onnx_backend import export_records; "
        "print(export_records.export_directory(Path(sys.argv[1]), sys.argv[2], None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), TINY],
        env=_fresh_home(tmp_path),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == str(here), out.stderr


def test_a_text_query_never_exports_and_an_image_query_matches_the_indexed_vector(
    photos: Path, tmp_path: Path, session_cache: Path
) -> None:
    with Engine(_settings(tmp_path, precision="fp32")) as engine:
        engine.index([photos])
    settings = _settings(tmp_path, cache_dir=tmp_path / "fresh-cache")
    with Engine(settings) as engine:
        assert engine.search("anything", limit=3)
        assert not (tmp_path / "fresh-cache").exists()
    with Engine(_settings(tmp_path, "int8")) as engine:
        engine.index([photos])
        hits = engine.search(vector=engine.embed_image(photos / "p3.jpg"), limit=1)
        assert hits[0].path.endswith("p3.jpg") and hits[0].score > 0.9999


def test_a_tower_that_disagrees_is_not_used_unless_asked_for(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_records, "MIN_COSINE", 1.01)  # no tower can agree this well
    settings = _settings(tmp_path, cache_dir=tmp_path / "cache")
    with Engine(settings) as engine:
        engine.index([photos])
        assert engine.encoder.image_precision in ("bf16", "fp32")  # type: ignore[attr-defined]
        assert any("does not agree closely enough" in n for n in engine.notices)
    with Engine(settings.with_(precision="int8", store=tmp_path / "forced")) as engine:
        engine.index([photos])
        assert engine.encoder.image_precision == "int8"  # type: ignore[attr-defined]


def test_a_damaged_or_stale_export_is_made_again(photos: Path, tmp_path: Path) -> None:
    toy = Path(__file__).resolve().parent.parent / "xsearch/models/toy_bilingual"
    checkpoint = tmp_path / "toy.safetensors"
    checkpoint.write_bytes((toy / "open_clip_model.safetensors").read_bytes())
    settings = Settings(
        store=tmp_path / "s1",
        model="toy-bilingual",
        checkpoint=checkpoint,
        device="cpu",
        cache_dir=tmp_path / "cache",
    )
    # (Without tags: tagging drops the indexing encoder, whose export is looked at here.)
    no_tags = IndexOptions(tag=False)
    with Engine(settings) as engine:
        engine.index([photos], no_tags)
        export = engine.encoder.export  # type: ignore[attr-defined]
    export.model_path.write_bytes(b"not an onnx model")
    with Engine(settings.with_(store=tmp_path / "s2")) as engine:
        engine.index([photos], no_tags)
        assert engine.encoder.image_precision == "int8"  # type: ignore[attr-defined]
    assert export.model_path.stat().st_size > 1000
    os.utime(checkpoint, ns=(1, 1))  # the weights changed: the export no longer matches
    assert TowerExport.load(export.directory) is not None
    assert not TowerExport.load(export.directory).current()  # type: ignore[union-attr]
    with Engine(settings.with_(store=tmp_path / "s2")) as engine:
        assert engine.info().image_encoding == (
            f"torch until an indexing run exports the int8 tower (the export cached at "
            f"{export.directory} was made from {checkpoint.resolve()}, which has changed since)"
        )
    with Engine(settings.with_(store=tmp_path / "s3")) as engine:
        engine.index([photos])
        assert any("Prepared" in n and "has changed since" in n for n in engine.notices)


def test_parallel_decoding_gives_the_serial_vectors_on_the_int8_path(
    photos: Path, tmp_path: Path
) -> None:
    for i in range(10):
        random_image(photos / f"more{i}.jpg", 100 + i, size=(90, 70))
    results = []
    for name, workers in (("serial", 0), ("parallel", 2)):
        with Engine(_settings(tmp_path, name)) as engine:
            engine.index([photos], IndexOptions(workers=workers, batch_size=8))
            results.append(_vectors(engine))
    serial, parallel = results
    assert serial.keys() == parallel.keys()
    for key in serial:
        np.testing.assert_array_equal(serial[key], parallel[key])


def test_int8_is_a_cpu_precision() -> None:
    with pytest.raises(ConfigError, match="int8"):
        Settings(precision="int8", device="cuda")


@pytest.mark.parametrize("made_by", [export_records.WRITTEN, export_records.TRACED])
def test_texts_go_through_the_int8_text_tower_once_it_is_exported(
    made_by: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if made_by == export_records.TRACED:  # as for a model the graph writer does not know
        monkeypatch.setattr(direct_export, "direct_image_spec", lambda files: None)
        monkeypatch.setattr(direct_export, "direct_text_spec", lambda files: None)
    texts = [
        "猫",
        "a photo of a dog",
        # Longer than the shortest graph (16 tokens): runs the full-context one.
        "a long caption about a red apple lying on a wooden kitchen table next to a cup of tea",
    ]
    toy = {"model": "toy-bilingual", "cache_dir": tmp_path / "cache"}  # context: 32 tokens
    with Engine(_settings(tmp_path, precision="fp32").with_(**toy)) as engine:
        reference = engine.encoder.encode_texts(texts)
    settings = _settings(tmp_path, "int8").with_(**toy)
    with Engine(settings) as engine:
        assert engine.encoder.text_precision == "torch"  # type: ignore[attr-defined]
        engine.index([photos])  # exports both towers
        assert any("int8 text tower" in n for n in engine.notices)
    with Engine(settings) as engine:
        encoder = engine.encoder
        assert encoder.text_precision == "int8"  # type: ignore[attr-defined]
        got = encoder.encode_texts(texts)
        tokens = encoder._torch_encoder().tokenize(texts)  # type: ignore[attr-defined]
        assert (tokens[2] != 0).sum() > 16
        assert np.all(np.sum(got * reference, axis=1) > 0.998)
        # Each text alone gives what it gives in a batch.
        np.testing.assert_allclose(encoder.encode_texts(texts[2:]), got[2:], atol=1e-6)
        assert engine.search("a photo of a dog", limit=3)
        text = TextExport.load(
            export_records.export_directory(settings.resolved_cache_dir, "toy-bilingual", None)
        )
        probes = encoder._torch_encoder().tokenize(probe_texts())  # type: ignore[attr-defined]
    assert text is not None and text.made_by == made_by
    # Traced graphs have fixed lengths (16 and the context); a written one takes any length.
    assert text.lengths == ((16, 32) if made_by == export_records.TRACED else (32,))
    assert text.dynamic == (made_by == export_records.WRITTEN)
    # The probe texts reach every graph, and each graph was measured.
    used = [used_tokens(row, text.pad_id) for row in probes]
    assert min(used) <= 16 < max(used)
    assert text.agreement.pictures == len(used) and text.agreement.holds
    for length in text.lengths:
        graph = onnx.load(str(text.model_path(length))).graph
        if made_by == export_records.TRACED:
            products = {n.name: n.op_type for n in graph.node}
            fp32 = {name for name, op in products.items() if op == "MatMul"}
            int8 = {name for name, op in products.items() if op == "MatMulInteger"}
            # The toy's two blocks: attention outputs and the text projection stay fp32.
            assert {f"/transformer/resblocks.{i}/attn/Gemm_MatMul" for i in (0, 1)} <= fp32
            assert "/MatMul" in fp32
            assert {f"/transformer/resblocks.{i}/mlp/c_fc/MatMul_quant" for i in (0, 1)} <= int8
        else:  # the written graph's products are named by their weights
            fp32 = {n.input[1] for n in graph.node if n.op_type == "MatMul"}
            int8 = {n.input[1] for n in graph.node if n.op_type == "MatMulInteger"}
            block = "transformer.resblocks.{}."
            assert {block.format(i) + "attn.out_proj.weight.T" for i in (0, 1)} <= fp32
            assert "text_projection" in fp32
            assert {block.format(i) + "mlp.c_fc.weight.T_quantized" for i in (0, 1)} <= int8


def test_the_torch_free_tokenizer_gives_open_clip_s_ids(tmp_path: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    from xsearch.encoders.onnx_backend.clip_tokenizer import ClipTokenizer, build_clip_tokenizer
    from xsearch.encoders.onnx_backend.onnx_export import _TRICKY_TEXTS
    from xsearch.encoders.onnx_backend.probes import probe_texts

    build_clip_tokenizer(Path(default_bpe()), tmp_path / "tokenizer.json")
    texts = [*probe_texts(), *_TRICKY_TEXTS, "A Photo of a CAT", "猫"]
    for context in (77, 16):
        mine = ClipTokenizer(tmp_path / "tokenizer.json", context)(texts)
        theirs = SimpleTokenizer(context_length=context)(texts).numpy()
        np.testing.assert_array_equal(mine, theirs)


def test_a_cold_text_query_on_the_int8_path_imports_no_torch_open_clip_or_sqlalchemy(
    photos: Path, tmp_path: Path
) -> None:
    toy = {"model": "toy-bilingual", "cache_dir": tmp_path / "cache"}
    with Engine(_settings(tmp_path).with_(**toy)) as engine:
        engine.index([photos])  # exports both towers and the tokenizer
        expected = engine.encoder.encode_texts(["a photo of a cat"])
    code = (
        "import sys; import numpy as np; from pathlib import Path; "
        "from xsearch import Engine, Settings; "
        f"e = Engine(Settings(store=Path({str(tmp_path / 'store')!r}), "
        f"cache_dir=Path({str(tmp_path / 'cache')!r}), device='cpu')); "
        "hits = e.search('a photo of a cat', limit=3); "
        "np.save(sys.argv[1], e.embed_text('a photo of a cat')); "
        "print(len(hits), 'torch' in sys.modules, 'open_clip' in sys.modules, "
        "'sqlalchemy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "v.npy")],
        env=_fresh_home(tmp_path),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    # SQLAlchemy neither: the reads go through sqlite3 (a quarter of a second less).
    assert out.stdout.split() == ["3", "False", "False", "False"], out.stderr
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected[0], atol=1e-6)


def test_a_damaged_text_graph_falls_back_to_torch_with_a_notice(
    photos: Path, tmp_path: Path
) -> None:
    toy = {"model": "toy-bilingual", "cache_dir": tmp_path / "cache"}
    with Engine(_settings(tmp_path).with_(**toy)) as engine:
        engine.index([photos])
        directory = engine.encoder._export_dir  # type: ignore[attr-defined]
        expected = engine.encoder.encode_texts(["a cat"])
    text = TextExport.load(directory)
    assert text is not None
    text.model_path(text.length_for(4)).write_bytes(b"garbage")
    with Engine(_settings(tmp_path).with_(**toy)) as engine:
        got = engine.embed_text("a cat")
        assert any("Texts are encoded by torch instead" in n for n in engine.notices)
    assert float(got @ expected[0]) > 0.998


def test_a_failed_export_leaves_auto_on_torch_and_stops_a_forced_int8_with_a_message(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization

    from xsearch.errors import ModelError

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", broken)
    settings = _settings(tmp_path, cache_dir=tmp_path / "cache")
    with Engine(settings) as engine:
        report = engine.index([photos])
        assert report.counts["indexed"] == 7
        assert engine.encoder.image_precision in ("bf16", "fp32")  # type: ignore[attr-defined]
        assert any("quantiser exploded" in n for n in engine.notices)
    with (
        Engine(settings.with_(precision="int8", store=tmp_path / "forced")) as engine,
        pytest.raises(ModelError, match="Could not quantise"),
    ):
        engine.index([photos])


def test_an_unwritable_cache_leaves_auto_on_torch(photos: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    with Engine(_settings(tmp_path, cache_dir=blocker)) as engine:
        assert engine.index([photos]).counts["indexed"] == 7
        assert engine.encoder.image_precision in ("bf16", "fp32")  # type: ignore[attr-defined]
        assert any("export the int8 image tower" in n for n in engine.notices)


def test_info_says_what_encodes_images_and_texts_without_loading_a_model(
    photos: Path, tmp_path: Path
) -> None:
    toy = {"model": "toy-bilingual", "cache_dir": tmp_path / "cache"}
    settings = _settings(tmp_path).with_(**toy)
    with Engine(settings) as engine:
        engine.index([photos])
    with Engine(settings.with_(model=None)) as engine:
        info = engine.info()
        assert engine._encoder is None  # nothing was loaded to answer
    assert info.image_encoding.startswith("int8 (cosine to fp32")
    assert info.image_encoding.endswith("; written from the checkpoint)")
    assert info.text_encoding.startswith("int8 (") and "texts" in info.text_encoding
    with Engine(settings.with_(model=None, precision="bf16")) as engine:
        assert engine.info().image_encoding == "torch bf16"
    with Engine(settings.with_(model=None, cache_dir=tmp_path / "empty")) as engine:
        assert engine.info().image_encoding.startswith("torch until an indexing run")


def test_info_says_why_a_cached_export_is_not_used_on_this_cpu(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    cache = tmp_path / "cache"
    settings = _settings(tmp_path, cache_dir=cache)
    with Engine(settings) as engine:
        engine.index([photos])
    # Read from the cache: the engine's encoder may have been replaced by the query one
    # (tagging drops the indexing encoder), which has not opened the export.
    made = export_records.current_export(export_records.export_directory(cache, TINY, None))
    assert made is not None and made.machine == export_records.this_machine()
    here = made.machine

    def image_encoding() -> str:
        with Engine(settings.with_(model=None)) as engine:
            return engine.info().image_encoding

    # The same store and cache on a CPU with other int8 kernels: flags that differ from
    # whatever CPU runs the test (an AVX2-only one lists exactly ("avx2",)).
    other = ("avx512_vnni", "avx512bw", "avx2") if "avx512_vnni" not in here else ("avx2",)
    monkeypatch.setattr(export_records, "cpu_int8_flags", lambda: other)
    elsewhere = export_records.this_machine()
    assert elsewhere != here
    assert image_encoding() == (
        f"torch until an indexing run exports the int8 tower (the export cached at "
        f"{made.directory} was made for another CPU ({here}); this one ({elsewhere}) needs "
        "its own)"
    )
    monkeypatch.setenv("XSEARCH_CACHE", str(cache))
    shown = runner.invoke(app, ["info", "--store", str(settings.store), "--json"])
    assert json.loads(shown.output)["image_encoding"] == image_encoding()
    with Engine(settings.with_(store=tmp_path / "other-cpu")) as engine:
        engine.index([photos])
        assert engine.encoder.image_precision == "int8"  # type: ignore[attr-defined]
        assert any("made anew because" in n and "another CPU" in n for n in engine.notices)
    assert image_encoding().startswith("int8 (")
    # Its own int8 kernels may round that export below the gate (as VNNI might).
    monkeypatch.setattr(export_records, "MIN_COSINE", 1.01)
    mine = export_records.export_directory(cache, TINY, None)
    low = TowerExport.load(mine).agreement.cosine_min  # type: ignore[union-attr]
    assert image_encoding() == (
        f"torch: the int8 tower cached at {mine} misses the agreement gate on this CPU, "
        f"{elsewhere} (cosine to fp32 {low:.5f} (min) < 1.01; "
        f"{TowerExport.load(mine).agreement.describe()}); "  # type: ignore[union-attr]
        "--precision int8 uses it anyway"
    )
    monkeypatch.undo()  # back on the first CPU: its export is still there, and used
    assert image_encoding().startswith("int8 (")
    (made.directory / export_records.RECORD_FILE).write_text("{")
    assert f"cached at {made.directory} has no record this xsearch" in image_encoding()
    with Engine(settings.with_(model=None, cache_dir=tmp_path / "empty")) as engine:
        assert engine.info().image_encoding == (
            "torch until an indexing run exports the int8 tower (none is cached in "
            f"{tmp_path / 'empty' / 'onnx'} for this CPU yet)"
        )


def test_a_text_tower_that_cannot_be_exported_is_recorded_and_not_retried(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xsearch.encoders.torch_backend.openclip import OpenClipEncoder

    monkeypatch.setattr(OpenClipEncoder, "fp32_text_model", lambda self: None)
    settings = _settings(tmp_path, cache_dir=tmp_path / "cache")
    with Engine(settings) as engine:
        engine.index([photos])
        assert engine.encoder.text_precision == "torch"  # type: ignore[attr-defined]
        assert "only causal CLIP text towers" in engine.info().text_encoding

    def no_torch(*_args: object) -> None:
        raise AssertionError("the torch encoder was built")

    monkeypatch.setattr(EncoderAssembly, "torch_encoder", no_torch)
    with Engine(settings.with_(store=tmp_path / "second")) as engine:
        assert engine.index([photos]).counts["indexed"] == 7


@pytest.mark.parametrize("reduce_range", [False, True])
def test_the_vectorised_per_channel_step_writes_onnx_runtime_s_graph_byte_for_byte(
    tmp_path: Path, reduce_range: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from xsearch.encoders.onnx_backend import per_channel

    calls: list[tuple[int, ...]] = []
    original = per_channel.quantise_channels

    def counted(weights: np.ndarray, axis: int, reduce: bool) -> object:
        calls.append(weights.shape)
        return original(weights, axis, reduce)

    monkeypatch.setattr(per_channel, "quantise_channels", counted)

    rng = np.random.default_rng(7)
    first = rng.normal(size=(16, 8)).astype(np.float32)
    first[:, 3] = 0.0  # a channel of zeros: scale 1
    first[:, 5] = np.abs(first[:, 5])  # only positive values: the range still includes 0
    second = (rng.normal(size=(6, 8)) * 1e-3).astype(np.float32)  # Gemm, transposed
    bias = rng.normal(size=6).astype(np.float32)
    kept = rng.normal(size=(6, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "first"], ["h"], name="first"),
            helper.make_node("Gemm", ["h", "second", "bias"], ["g"], name="second", transB=1),
            helper.make_node("MatMul", ["g", "kept"], ["y"], name="kept"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [
            numpy_helper.from_array(first, "first"),
            numpy_helper.from_array(second, "second"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(kept, "kept"),
        ],
    )
    source = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)

    def quantised(name: str) -> bytes:
        quantize_dynamic(
            str(source),
            str(tmp_path / name),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            nodes_to_exclude=["kept"],
        )
        return (tmp_path / name).read_bytes()

    theirs = quantised("theirs.onnx")
    assert not calls
    with per_channel.vectorised_per_channel():
        mine = quantised("mine.onnx")
    assert sorted(calls) == [(8, 6), (16, 8)]  # both quantised (the Gemm's transposed), not "kept"
    assert mine == theirs
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer

    assert "quantize_weight_per_channel_impl" not in vars(ONNXQuantizer)  # put back as it was
    # A case it does not reproduce (or another release's quantiser) goes to ONNX Runtime's loop.
    monkeypatch.setattr(per_channel, "_reproduced_case", lambda *_: None)
    with per_channel.vectorised_per_channel():
        assert quantised("theirs-again.onnx") == theirs
    assert len(calls) == 2


def test_indexing_reports_loading_and_the_one_time_preparation_as_stages(
    photos: Path, tmp_path: Path
) -> None:
    def stages(store: str) -> list[str]:
        seen: list[str] = []
        settings = _settings(tmp_path, store, cache_dir=tmp_path / "own-cache")
        with Engine(settings) as engine:
            engine.index([photos], on_progress=lambda p: seen.append(p.stage))
        return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]

    first = stages("first")
    assert first.index("model") < first.index("prepare") < first.index("embed")
    again = stages("second")  # the export is cached now: nothing to prepare
    assert "prepare" not in again and again.index("model") < again.index("embed")
