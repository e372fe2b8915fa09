"""Tests of the generated bilingual emoji dataset (xsearch.synth) and its glyph atlas."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xsearch import synth

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
ATLAS = resources.files("xsearch") / "data" / "glyphs"


def test_there_are_at_least_40_classes_with_unique_keys_and_query_names() -> None:
    keys = [cls.key for cls in synth.CLASSES]
    assert len(keys) >= 40
    assert len(set(keys)) == len(keys)
    for lang in synth.LANGUAGES:
        queries = [synth.class_query(cls, lang) for cls in synth.CLASSES]
        assert len(set(queries)) == len(queries), lang


def test_no_query_name_hides_inside_another_class_name() -> None:
    # 猫 inside 熊猫 (panda) would make "猫" an ambiguous query, so such classes are left out.
    for cls in synth.CLASSES:
        for lang in synth.LANGUAGES:
            query = synth.class_query(cls, lang)
            for other in synth.CLASSES:
                if other is cls:
                    continue
                for name in other.names(lang):
                    inside = query in name.split() if lang == "en" else query in name
                    assert not inside, (lang, cls.key, other.key, name)


def test_no_two_classes_share_a_glyph() -> None:
    glyphs = [glyph for cls in synth.CLASSES for glyph in cls.glyphs]
    assert len(set(glyphs)) == len(glyphs)


@pytest.mark.parametrize(
    ("key", "glyphs", "en", "zh"),
    [
        ("cat", ("🐱", "🐈"), "cat", "猫"),
        ("dog", ("🐶", "🐕"), "dog", "狗"),
        ("car", ("🚗",), "car", "汽车"),
        ("tree", ("🌳",), "tree", "树"),
        ("apple", ("🍎",), "apple", "苹果"),
        ("house", ("🏠",), "house", "房子"),
        ("fish", ("🐟",), "fish", "鱼"),
        ("bird", ("🐦",), "bird", "鸟"),
        ("flower", ("🌸",), "flower", "花"),
        ("airplane", ("✈️",), "airplane", "飞机"),
    ],
)
def test_required_classes_have_their_glyphs_and_plain_names_first(
    key: str, glyphs: tuple[str, ...], en: str, zh: str
) -> None:
    cls = synth.class_by_key(key)
    assert set(glyphs) <= set(cls.glyphs)
    assert cls.en[0] == en
    assert cls.zh[0] == zh
    assert synth.class_query(cls, "en") == en
    assert synth.class_query(cls, "zh") == zh


def test_apple_is_the_red_apple() -> None:
    apple = synth.class_by_key("apple")
    assert apple.glyphs == ("🍎",)
    assert {"apple", "red apple"} <= set(apple.en)
    assert {"苹果", "红苹果"} <= set(apple.zh)


def test_captions_cover_both_languages_and_start_with_the_plain_name() -> None:
    cat = synth.class_by_key("cat")
    en, zh = synth.captions(cat, "en"), synth.captions(cat, "zh")
    assert en[0] == "cat"
    assert zh[0] == "猫"
    assert {"a photo of a cat", "a cat", "a photo of a kitten"} <= set(en)
    assert {"一只猫的照片", "一张猫的图片", "一只猫"} <= set(zh)
    assert "an apple" in synth.captions(synth.class_by_key("apple"), "en")
    assert len(set(en)) == len(en)
    assert all(not any("\u4e00" <= ch <= "\u9fff" for ch in caption) for caption in en)
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in caption) for caption in zh)


def test_render_picture_is_deterministic_given_the_seed() -> None:
    def render(seed: int) -> list[tuple[bytes, list[str]]]:
        rng = np.random.default_rng(seed)
        out = []
        for split in synth.SPLITS:
            for _ in range(4):
                image, keys = synth.render_picture(
                    rng, synth.CLASSES, 64, split=split, two_object_prob=0.5
                )
                out.append((image.tobytes(), keys))
        return out

    first = render(3)
    assert first == render(3)
    assert first != render(4)


def test_render_picture_returns_an_rgb_square_and_distinct_class_keys() -> None:
    rng = np.random.default_rng(0)
    known = {cls.key for cls in synth.CLASSES}
    for _ in range(10):
        image, keys = synth.render_picture(rng, synth.CLASSES, 80, two_object_prob=0.5)
        assert image.mode == "RGB"
        assert image.size == (80, 80)
        assert 1 <= len(keys) <= 2
        assert len(set(keys)) == len(keys)
        assert set(keys) <= known


def test_render_picture_rejects_an_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        synth.render_picture(np.random.default_rng(0), synth.CLASSES, 64, split="test")  # type: ignore[arg-type]


@pytest.mark.parametrize("glyph", ["🐱", "🐈", "✈️", "⭐"])
def test_atlas_glyph_equals_the_font_rendering(glyph: str) -> None:
    if not FONT.is_file():
        pytest.fail(
            f"{FONT} is missing: install fonts-noto-color-emoji to check the glyph atlas "
            "(the atlas itself ships in xsearch/data/glyphs)"
        )
    atlas = synth.glyph_image(glyph)
    font = synth.render_glyph_from_font(glyph, FONT)
    assert atlas.mode == font.mode == "RGBA"
    assert atlas.size == font.size
    assert atlas.tobytes() == font.tobytes()


def test_atlas_has_every_glyph_and_stays_small() -> None:
    for cls in synth.CLASSES:
        for glyph in cls.glyphs:
            image = synth.glyph_image(glyph)
            assert image.mode == "RGBA", glyph
            assert min(image.size) > 32, glyph
    total = sum(entry.stat().st_size for entry in Path(str(ATLAS)).iterdir())
    assert total < 1_000_000


def test_classes_json_matches_classes_and_cldr_names_are_included() -> None:
    document = json.loads((ATLAS / "classes.json").read_text(encoding="utf-8"))
    records = {record["key"]: record for record in document["classes"]}
    assert list(records) == [cls.key for cls in synth.CLASSES]
    for cls in synth.CLASSES:
        record = records[cls.key]
        assert tuple(record["glyphs"]) == cls.glyphs
        assert set(record["cldr_en"]) <= set(cls.en)
        assert set(record["cldr_zh"]) <= set(cls.zh)


def test_generate_folder_writes_class_neutral_jpegs_and_captions(tmp_path: Path) -> None:
    classes = [synth.class_by_key(k) for k in ("cat", "dog", "apple", "car")]
    written = synth.generate_folder(
        tmp_path, 10, seed=1, split="heldout", size=64, classes=classes, two_object_prob=0.3
    )
    assert [path.name for path, _ in written] == [f"img_{i:05d}.jpg" for i in range(10)]
    main_classes = [keys[0] for _, keys in written]
    assert {main_classes.count(cls.key) for cls in classes} <= {2, 3}
    names = {name.lower() for cls in synth.CLASSES for name in (*cls.en, *cls.zh, cls.key)}
    for path, keys in written:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (64, 64)
        assert not any(name in path.name.lower() for name in names)
        assert set(keys) <= {cls.key for cls in classes}

    lines = (tmp_path / "captions.tsv").read_text(encoding="utf-8").splitlines()
    single = [(path, keys[0]) for path, keys in written if len(keys) == 1]
    expected = [
        f"{path.name}\t{synth.class_query(synth.class_by_key(key), lang)}"
        for path, key in single
        for lang in synth.LANGUAGES
    ]
    assert lines == expected
    assert 0 < len(single) < 10


def test_generate_folder_is_deterministic(tmp_path: Path) -> None:
    first = synth.generate_folder(tmp_path / "a", 4, seed=9, size=48)
    second = synth.generate_folder(tmp_path / "b", 4, seed=9, size=48)
    assert [keys for _, keys in first] == [keys for _, keys in second]
    for (a, _), (b, _) in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
