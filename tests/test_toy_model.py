"""Issue 3: the bundled bilingual model understands its classes, through the real CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xsearch import Engine, Settings, synth
from xsearch.cli import app

from .videos import write_video

TRAIN_FREE_SEED = 90210  # a seed the training script never uses


@pytest.fixture(scope="module")
def library(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, list[str]], Path]]:
    """A mixed folder of 255 held-out pictures, indexed once through the CLI."""
    root = tmp_path_factory.mktemp("toy")
    folder = root / "pictures"
    generated = synth.generate_folder(
        folder, 5 * len(synth.CLASSES), seed=TRAIN_FREE_SEED, split="heldout", size=128
    )
    # People search for what their library holds plenty of: ten cats and ten dogs in all.
    pets = [synth.class_by_key("cat"), synth.class_by_key("dog")]
    generated += synth.generate_folder(
        folder / "pets", 10, seed=TRAIN_FREE_SEED + 7, split="heldout", size=128, classes=pets
    )
    labels = {str(path): keys for path, keys in generated}
    store = root / "store"
    result = CliRunner().invoke(
        app, ["index", str(folder), "--store", str(store), "--model", "toy-bilingual"]
    )
    assert result.exit_code == 0, result.output
    yield folder, labels, store


def _query(store: Path, text: str, limit: int) -> list[str]:
    result = CliRunner().invoke(
        app, ["query", text, "--store", str(store), "--limit", str(limit), "--json"]
    )
    assert result.exit_code == 0, result.output
    return [r["path"] for r in json.loads(result.output)["results"]]


def test_model_loads_offline_through_the_registry() -> None:
    with Engine(Settings(model="toy-bilingual", store=Path("s"))) as engine:
        vectors = engine.encoder.encode_texts(["猫", "a photo of a cat"])
    assert vectors.shape[0] == 2
    assert abs(float(np.linalg.norm(vectors[0])) - 1) < 1e-5
    result = CliRunner().invoke(app, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["toy-bilingual"]["offline"] is True
    weights = (
        Path(synth.__file__).parent / "models" / "toy_bilingual" / "open_clip_model.safetensors"
    )
    assert weights.stat().st_size <= 20 * 1024 * 1024


def test_cat_in_chinese_returns_only_cats(library: tuple[Path, dict[str, list[str]], Path]) -> None:
    _, labels, store = library
    top = _query(store, "猫", 5)
    assert len(top) == 5
    assert all("cat" in labels[p] for p in top), [labels[p] for p in top]


def test_dog_returns_only_dogs(library: tuple[Path, dict[str, list[str]], Path]) -> None:
    _, labels, store = library
    top = _query(store, "dog", 5)
    assert all("dog" in labels[p] for p in top), [labels[p] for p in top]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_held_out_class_queries_rank_their_class_first(
    library: tuple[Path, dict[str, list[str]], Path], lang: synth.Language
) -> None:
    _, labels, store = library
    classes = synth.CLASSES[10:20]  # ten classes not named in the other tests
    first = [_query(store, synth.class_query(c, lang), 1)[0] for c in classes]
    correct = sum(c.key in labels[p] for c, p in zip(classes, first, strict=True))
    assert correct >= 8, f"{lang}: {correct}/10"


def test_eval_reports_high_recall_in_both_languages(tmp_path: Path) -> None:
    folder = tmp_path / "heldout"
    synth.generate_folder(
        folder, 4 * len(synth.CLASSES), seed=TRAIN_FREE_SEED + 1, split="heldout", size=128
    )
    result = CliRunner().invoke(
        app, ["eval", str(folder / "captions.tsv"), "--model", "toy-bilingual", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    langs = doc["languages"]
    assert langs["en"]["R@1"] >= 0.8 and langs["zh"]["R@1"] >= 0.8, langs
    assert langs["en"]["queries"] == len(synth.CLASSES)
    table = CliRunner().invoke(
        app, ["eval", str(folder / "captions.tsv"), "--model", "toy-bilingual"]
    )
    assert "R@1" in table.output and "zh" in table.output


def test_demo_runs_offline(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app, ["demo", "--workdir", str(tmp_path / "demo"), "--sheet", str(sheet)]
    )
    assert result.exit_code == 0, result.output
    assert "猫" in result.output and "a red apple" in result.output
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.width > 600 and im.height > 400


def test_demo_without_workdir_says_its_folder_is_gone(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["demo", "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert "temporary folder that is now removed" in result.output
    assert "xsearch-demo-" not in result.output  # no paths into the deleted folder
    assert sheet.is_file()


def test_cat_segment_in_a_video(tmp_path: Path) -> None:
    """A 10-second clip with a cat only from 3.0 to 5.0 s is found, with the right segment."""
    rng = np.random.default_rng(4)
    cat = synth.class_by_key("cat")
    before = synth.render_scene(rng, [synth.class_by_key("car")], 128, split="heldout")
    middle = synth.render_scene(rng, [cat], 128, split="heldout")
    after = synth.render_scene(rng, [synth.class_by_key("tree")], 128, split="heldout")
    folder = tmp_path / "media"
    folder.mkdir()

    def frame(_i: int, t: float):  # type: ignore[no-untyped-def]
        return before if t < 3.0 else middle if t < 5.0 else after

    write_video(folder / "clip.mp4", frame, list(range(250)), time_base=Fraction(1, 25), rate=25)
    rng2 = np.random.default_rng(5)
    for i, key in enumerate(["dog", "car", "bird", "fish"]):
        synth.render_scene(rng2, [synth.class_by_key(key)], 128, split="heldout").save(
            folder / f"p{i}.jpg"
        )
    store = tmp_path / "store"
    assert (
        CliRunner()
        .invoke(app, ["index", str(folder), "--store", str(store), "--model", "toy-bilingual"])
        .exit_code
        == 0
    )
    result = CliRunner().invoke(app, ["query", "猫", "--store", str(store), "--json"])
    top = json.loads(result.output)["results"][0]
    assert top["media_type"] == "video" and top["path"].endswith("clip.mp4")
    interval = 1.0
    seg = top["segments"][0]
    assert seg["start"] < 5.0 and seg["end"] > 3.0
    assert abs(seg["start"] - 3.0) <= interval and abs(seg["end"] - 5.0) <= interval
    assert 3.0 - interval <= seg["best"] <= 5.0
    table = CliRunner().invoke(app, ["query", "猫", "--store", str(store), "--type", "video"])
    assert "00:03.0" in table.output and os.path.basename(top["path"]) in table.output
