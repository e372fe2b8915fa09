"""Generated bilingual emoji pictures: the data behind the toy CLIP model and the demo.

Every picture shows one or two emoji glyphs (from the glyph atlas shipped in
``xsearch/data/glyphs``) on a random background. Each :class:`EmojiClass` carries
English and Chinese names, so the same pictures feed an English and a Chinese
caption set. The module only needs Pillow and numpy at run time; the emoji font
is needed only by ``scripts/build_glyphs.py``, which builds the atlas.

Two splits exist. ``"train"`` backgrounds are solid colours, linear gradients,
pixel noise and random shapes in independent random colours; ``"heldout"``
backgrounds are radial gradients, stripes, checkerboards and smooth clouds in
themed palettes, so a held-out evaluation measures recognition of the objects
rather than memory of the backgrounds. The backgrounds are drawn by
``xsearch.synth_backgrounds``; this module holds the classes, their captions, the
glyph atlas and the composition of the pictures.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .synth_backgrounds import BACKGROUNDS

__all__ = [
    "CLASSES",
    "GLYPH_FONT_SIZE",
    "LANGUAGES",
    "SPLITS",
    "EmojiClass",
    "Language",
    "Split",
    "captions",
    "class_by_key",
    "class_query",
    "generate_folder",
    "glyph_filename",
    "glyph_image",
    "render_glyph_from_font",
    "render_picture",
    "render_scene",
]

Language = Literal["en", "zh"]
Split = Literal["train", "heldout"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
SPLITS: tuple[Split, ...] = ("train", "heldout")

#: Noto Color Emoji is a bitmap font with a single strike; other sizes fail to load.
GLYPH_FONT_SIZE = 109


@dataclass(frozen=True)
class EmojiClass:
    """One searchable concept and the emoji glyphs that depict it.

    ``en[0]`` and ``zh[0]`` are the plain short names (the held-out queries); the
    other names include the Unicode CLDR name of every glyph, as the ``emoji``
    package spells it with underscores replaced by spaces.
    """

    # Stable ASCII identifier, used in labels and metrics.
    key: str
    # Fully qualified emoji strings (with U+FE0F where Unicode requires it).
    glyphs: tuple[str, ...]
    # English names, plain name first.
    en: tuple[str, ...]
    # Chinese names, plain name first.
    zh: tuple[str, ...]

    def names(self, lang: Language) -> tuple[str, ...]:
        """The names of this class in ``lang``."""
        return self.en if lang == "en" else self.zh


def _cls(key: str, glyphs: str, en: str, zh: str) -> EmojiClass:
    """Build a class from space-separated glyphs and comma-separated names."""
    return EmojiClass(
        key=key,
        glyphs=tuple(glyphs.split()),
        en=tuple(name.strip() for name in en.split(",")),
        zh=tuple(name.strip() for name in zh.split(",")),
    )


# Glyphs were picked to look different from each other at 64 pixels (an early model
# mixed up 🐮/🐶 and 🎈/❤️, so those are gone), and names that contain another class's
# Chinese name (熊猫 holds 猫, 火箭 holds 火) were left out.
CLASSES: tuple[EmojiClass, ...] = (
    _cls("cat", "🐱 🐈", "cat, kitten, cat face", "猫, 小猫, 猫脸"),
    _cls("dog", "🐶 🐕", "dog, puppy, dog face", "狗, 小狗, 狗脸"),
    _cls("car", "🚗", "car, automobile", "汽车, 轿车"),
    _cls("tree", "🌳", "tree, deciduous tree", "树, 落叶树, 大树"),
    _cls("apple", "🍎", "apple, red apple", "苹果, 红苹果"),
    _cls("house", "🏠", "house, home", "房子, 房屋"),
    _cls("fish", "🐟", "fish", "鱼, 小鱼"),
    _cls("bird", "🐦", "bird", "鸟, 小鸟"),
    _cls("flower", "🌸 🌷", "flower, cherry blossom, tulip", "花, 樱花, 郁金香, 花朵"),
    _cls("airplane", "✈️", "airplane, plane, aeroplane", "飞机"),
    _cls("banana", "🍌", "banana", "香蕉"),
    _cls("grapes", "🍇", "grapes", "葡萄"),
    _cls("watermelon", "🍉", "watermelon", "西瓜"),
    _cls("strawberry", "🍓", "strawberry", "草莓"),
    _cls("carrot", "🥕", "carrot", "胡萝卜"),
    _cls("pizza", "🍕", "pizza", "披萨, 比萨"),
    _cls("bicycle", "🚲", "bicycle, bike", "自行车, 单车"),
    _cls("ship", "🚢", "ship, boat", "船, 轮船"),
    _cls("rocket", "🚀", "rocket", "火箭"),
    _cls("horse", "🐴", "horse, horse face", "马, 马头"),
    _cls("top_hat", "🎩", "top hat, hat", "礼帽, 帽子"),
    _cls("pig", "🐷", "pig, pig face", "猪, 猪头"),
    _cls("frog", "🐸", "frog", "青蛙"),
    _cls("monkey", "🐵", "monkey, monkey face", "猴子, 猴头"),
    _cls("chicken", "🐔", "chicken, hen", "鸡, 母鸡"),
    _cls("penguin", "🐧", "penguin", "企鹅"),
    _cls("turtle", "🐢", "turtle, tortoise", "乌龟, 龟"),
    _cls("butterfly", "🦋", "butterfly", "蝴蝶"),
    _cls("snail", "🐌", "snail", "蜗牛"),
    _cls("elephant", "🐘", "elephant", "大象"),
    _cls("rabbit", "🐰", "rabbit, bunny, rabbit face", "兔子, 兔子头"),
    _cls("bear", "🐻", "bear", "熊"),
    _cls("sun", "☀️", "sun", "太阳"),
    _cls("moon", "🌙", "moon, crescent moon", "月亮, 弯月"),
    _cls("star", "⭐", "star", "星星"),
    _cls("umbrella", "☂️", "umbrella", "雨伞, 伞"),
    _cls("clock", "⏰", "alarm clock, clock", "闹钟, 钟"),
    _cls("guitar", "🎸", "guitar", "吉他"),
    _cls("soccer_ball", "⚽", "soccer ball, football", "足球"),
    _cls("basketball", "🏀", "basketball", "篮球"),
    _cls("heart", "❤️", "heart, red heart", "爱心, 红心"),
    _cls("mushroom", "🍄", "mushroom", "蘑菇"),
    _cls("cactus", "🌵", "cactus", "仙人掌"),
    _cls("gem", "💎", "gem, gem stone, diamond", "宝石, 钻石"),
    _cls("tent", "⛺", "tent", "帐篷"),
    _cls("hamburger", "🍔", "hamburger, burger", "汉堡, 汉堡包"),
    _cls("snowman", "⛄", "snowman, snowman without snow", "雪人"),
    _cls("rainbow", "🌈", "rainbow", "彩虹"),
    _cls("ice_cream", "🍦", "ice cream, soft ice cream", "冰淇淋, 圆筒冰激凌"),
)

_BY_KEY: dict[str, EmojiClass] = {cls.key: cls for cls in CLASSES}


def class_by_key(key: str) -> EmojiClass:
    """The class called ``key``; raises ``KeyError`` for an unknown key."""
    return _BY_KEY[key]


# ---------------------------------------------------------------------------
# Captions

# "{an}" is the name with its English article ("an apple", "grapes"), "{n}" the bare name.
_EN_TEMPLATES = (
    "{n}",
    "{an}",
    "a photo of {an}",
    "a picture of {an}",
    "an image of {an}",
    "an emoji of {an}",
    "a drawing of {an}",
    "a cartoon {n}",
    "{an} on a colorful background",
    "the {n}",
)
# "{m}" is the measure word that goes with the noun (一只猫, 一辆汽车).
_ZH_TEMPLATES = (
    "{n}",
    "一{m}{n}",
    "一{m}{n}的照片",
    "一张{n}的图片",
    "{n}的照片",
    "{n}的图片",
    "{n}的表情",
    "一幅{n}的画",
    "彩色背景上的{n}",
    "这是一{m}{n}",
)
_ZH_MEASURE_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ["cat", "dog", "bird", "chicken", "penguin", "turtle", "butterfly", "snail", "rabbit"], "只"
    ),
    **dict.fromkeys(["frog", "monkey", "bear"], "只"),
    **dict.fromkeys(("pig", "elephant"), "头"),
    **dict.fromkeys(("car", "bicycle"), "辆"),
    **dict.fromkeys(("tree", "cactus"), "棵"),
    **dict.fromkeys(("flower", "mushroom"), "朵"),
    **dict.fromkeys(("umbrella", "guitar"), "把"),
    **dict.fromkeys(("star", "heart", "strawberry", "gem"), "颗"),
    **dict.fromkeys(("banana", "carrot"), "根"),
    "fish": "条",
    "house": "栋",
    "airplane": "架",
    "ship": "艘",
    "rocket": "枚",
    "horse": "匹",
    "grapes": "串",
    "pizza": "块",
    "rainbow": "道",
    **dict.fromkeys(("top_hat", "tent"), "顶"),
}


def _with_article(name: str) -> str:
    """English noun phrase for ``name``: plurals go bare, others take a/an."""
    if name.endswith("s") and not name.endswith(("ss", "us")):
        return name
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def captions(cls: EmojiClass, lang: Language) -> list[str]:
    """All captions of ``cls`` in ``lang``, without duplicates.

    The first caption is the plain class name (:func:`class_query`); the rest
    combine every name of the class with every template of the language.
    """
    out: dict[str, None] = {class_query(cls, lang): None}
    for name in cls.names(lang):
        if lang == "en":
            for template in _EN_TEMPLATES:
                out[template.format(n=name, an=_with_article(name))] = None
        else:
            measure = _ZH_MEASURE_WORDS.get(cls.key, "个")
            for template in _ZH_TEMPLATES:
                out[template.format(n=name, m=measure)] = None
    return list(out)


def class_query(cls: EmojiClass, lang: Language) -> str:
    """The plain name of ``cls`` in ``lang``: the query used for held-out evaluation."""
    return cls.names(lang)[0]


# ---------------------------------------------------------------------------
# Glyphs


def glyph_filename(glyph: str) -> str:
    """Atlas file name of ``glyph``: its code points in lower-case hex, e.g. ``2708-fe0f.png``."""
    return "-".join(f"{ord(char):x}" for char in glyph) + ".png"


@functools.cache
def _load_atlas_glyph(glyph: str) -> Image.Image:
    path = resources.files("xsearch") / "data" / "glyphs" / glyph_filename(glyph)
    with path.open("rb") as handle:
        image = Image.open(handle)
        image.load()
    return image.convert("RGBA")


def glyph_image(glyph: str) -> Image.Image:
    """The RGBA picture of ``glyph`` from the shipped atlas, cropped to its alpha box.

    Returns a fresh copy that the caller may modify. Raises ``FileNotFoundError``
    for a glyph that is not in the atlas (rebuild it with ``scripts/build_glyphs.py``).
    """
    return _load_atlas_glyph(glyph).copy()


def render_glyph_from_font(glyph: str, font_path: str | Path) -> Image.Image:
    """Render ``glyph`` with a colour emoji font, cropped to its alpha bounding box.

    This is how the atlas is built, so ``glyph_image(g)`` equals this for the
    Noto Color Emoji font. Raises ``ValueError`` when the font draws nothing.
    """
    font = ImageFont.truetype(str(font_path), GLYPH_FONT_SIZE)
    # The canvas is larger than the 136x128 strike so that no part is clipped.
    canvas = Image.new("RGBA", (2 * GLYPH_FONT_SIZE + 64,) * 2, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((32, 32), glyph, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise ValueError(f"font {font_path} has no glyph for {glyph!r}")
    return canvas.crop(box)


# ---------------------------------------------------------------------------
# Pictures


def _place_glyph(
    rng: np.random.Generator,
    canvas: Image.Image,
    glyph: str,
    region: tuple[int, int, int, int],
    scale_range: tuple[float, float],
) -> None:
    """Paste ``glyph`` scaled, rotated and maybe mirrored, fully inside ``region``."""
    x0, y0, x1, y1 = region
    side = min(x1 - x0, y1 - y0)
    sprite = glyph_image(glyph)
    target = max(4, int(side * rng.uniform(*scale_range)))
    ratio = target / max(sprite.size)
    new_size = (max(1, round(sprite.width * ratio)), max(1, round(sprite.height * ratio)))
    sprite = sprite.resize(new_size, Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    sprite = sprite.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BICUBIC, expand=True)
    # Rotation can make the sprite larger than the region; shrink it back to fit.
    if sprite.width > x1 - x0 or sprite.height > y1 - y0:
        sprite.thumbnail((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
    left = x0 + int(rng.integers(0, x1 - x0 - sprite.width + 1))
    top = y0 + int(rng.integers(0, y1 - y0 - sprite.height + 1))
    canvas.paste(sprite, (left, top), sprite)


def _recompress(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(15, 90)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def render_scene(
    rng: np.random.Generator,
    scene: Sequence[EmojiClass],
    size: int = 224,
    *,
    split: Split = "train",
) -> Image.Image:
    """Draw exactly the classes in ``scene`` (one or two) on a background of ``split``.

    A random glyph of each class is used. Two objects go in opposite halves of the
    picture so that both stay visible. Half of the pictures are re-encoded as JPEG
    at a random quality. The result depends only on the state of ``rng``.
    """
    if split not in BACKGROUNDS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not 1 <= len(scene) <= 2:
        raise ValueError(f"a scene holds one or two classes, not {len(scene)}")
    families = BACKGROUNDS[split]
    canvas = families[int(rng.integers(0, len(families)))](rng, size)
    if len(scene) == 1:
        regions = [(0, 0, size, size)]
        scale_range = (0.35, 0.85)
    else:
        half = size // 2
        if rng.random() < 0.5:
            regions = [(0, 0, half, size), (half, 0, size, size)]
        else:
            regions = [(0, 0, size, half), (0, half, size, size)]
        scale_range = (0.6, 0.95)
    for cls, region in zip(scene, regions, strict=True):
        glyph = cls.glyphs[int(rng.integers(0, len(cls.glyphs)))]
        _place_glyph(rng, canvas, glyph, region, scale_range)
    if rng.random() < 0.5:
        canvas = _recompress(rng, canvas)
    return canvas


def render_picture(
    rng: np.random.Generator,
    classes: Sequence[EmojiClass],
    size: int = 224,
    *,
    split: Split = "train",
    two_object_prob: float = 0.25,
) -> tuple[Image.Image, list[str]]:
    """A random picture of one class, or of two different classes, from ``classes``.

    Returns the RGB picture (``size`` x ``size``) and the keys of the classes it
    shows, in drawing order. Deterministic given the state of ``rng``.
    """
    if not classes:
        raise ValueError("classes must not be empty")
    count = 2 if len(classes) > 1 and rng.random() < two_object_prob else 1
    picked = rng.choice(len(classes), size=count, replace=False)
    scene = [classes[int(i)] for i in picked]
    return render_scene(rng, scene, size, split=split), [cls.key for cls in scene]


def generate_folder(
    out_dir: str | Path,
    n: int,
    *,
    seed: int,
    split: Split = "train",
    size: int = 224,
    classes: Sequence[EmojiClass] = CLASSES,
    two_object_prob: float = 0.2,
) -> list[tuple[Path, list[str]]]:
    """Write ``n`` JPEG pictures and a ``captions.tsv`` into ``out_dir``.

    Files are named ``img_00000.jpg`` … so that no path reveals the class. Main
    classes are dealt round-robin over shuffled ``classes``, so every class appears
    ``n // len(classes)`` or one more times; a second, different class is added with
    probability ``two_object_prob``. ``captions.tsv`` has no header and holds one
    ``relative_path<TAB>caption`` line per single-object picture and language, the
    caption being the plain class name; two-object pictures get no caption.
    Returns ``(path, class keys)`` per picture, in file order.
    """
    if not classes:
        raise ValueError("classes must not be empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rounds = -(-n // len(classes))
    order = np.concatenate([rng.permutation(len(classes)) for _ in range(rounds)])[:n]
    written: list[tuple[Path, list[str]]] = []
    rows: list[tuple[str, str]] = []
    for index, main in enumerate(order):
        scene = [classes[int(main)]]
        if len(classes) > 1 and rng.random() < two_object_prob:
            others = [i for i in range(len(classes)) if i != int(main)]
            scene.append(classes[others[int(rng.integers(0, len(others)))]])
        image = render_scene(rng, scene, size, split=split)
        path = out / f"img_{index:05d}.jpg"
        image.save(path, "JPEG", quality=92)
        written.append((path, [cls.key for cls in scene]))
        if len(scene) == 1:
            rows.extend((path.name, class_query(scene[0], lang)) for lang in LANGUAGES)
    lines = "".join(f"{name}\t{caption}\n" for name, caption in rows)
    (out / "captions.tsv").write_text(lines, encoding="utf-8")
    return written
