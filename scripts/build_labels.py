"""Write the generated parts of the tag vocabulary in ``xsearch/data/labels``.

- ``emoji.tsv``: the concepts of the generated emoji pictures (``xsearch.synth.CLASSES``),
  so that the bundled toy model's concepts are always in the vocabulary.
- ``imagenet.tsv``: the 1,000 ImageNet classes, English names from open_clip's
  ``zero_shot_metadata.IMAGENET_CLASSNAMES`` (OpenAI's cleaned names) and Chinese names from
  the ``cn-clip`` package's ``cn_clip/eval/imagenet_zeroshot_templates.py`` (translated by
  the Wukong project), in the same class order, with the wrong ones replaced (``ZH_FIXES``).
  Classes whose English name (or shown Chinese name) is already in ``emoji.tsv`` or the
  hand-written ``everyday.tsv`` and ``everyday_more.tsv`` are left out.

``everyday.tsv``, ``everyday_more.tsv`` and ``templates.json`` are written by hand. Usage
(needs ``pip install cn-clip --no-deps``, which is only read, never imported as a model)::

    python scripts/build_labels.py
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xsearch import synth  # noqa: E402  (needs the repo on sys.path first)

OUT = REPO / "xsearch" / "data" / "labels"
HEADER = "# key<TAB>English names<TAB>Chinese names; names separated by '|', the first one shown.\n"

# cn-clip names that are wrong, not merely unusual: another species or object (a robin is
# not a bunting, a coyote is not any wolf, 红太狼 is a cartoon character), or a different
# thing altogether (tights are not a swimsuit, a notebook computer is not a tablet). Each
# replaces cn-clip's names for that class entirely, so the wrong name is no synonym either.
# Found by reading every English/Chinese pair of imagenet.tsv (December 2026). Where the
# right name is already shown by a hand-written concept (tights, mask, notebook computer,
# space heater), the class is then left out like any other duplicate.
ZH_FIXES = {
    "American robin": "旅鸫|美洲知更鸟",
    "bulbul": "鹎|鹎鸟",
    "spoonbill": "琵鹭",
    "great egret": "大白鹭",
    "American coot": "美洲骨顶",
    "killer whale": "虎鲸|逆戟鲸",
    "Pekingese": "京巴犬|北京犬",
    "Papillon": "蝴蝶犬",
    "Clumber Spaniel": "克伦伯猎犬",
    "Bloodhound": "寻血猎犬",
    "Miniature Pinscher": "迷你杜宾犬|迷你品犬",
    "Affenpinscher": "猴面梗|艾芬品犬",
    "coyote": "郊狼|丛林狼",
    "red wolf or maned wolf": "红狼|鬃狼",
    "polar bear": "北极熊",
    "tiger cat": "虎猫",
    "porcupine": "豪猪",
    "llama": "羊驼|美洲驼",
    "Alpine ibex": "阿尔卑斯羱羊|羱羊",
    "Asian elephant": "亚洲象",
    "sea cucumber": "海参",
    "sea slug": "海蛞蝓",
    "ground beetle": "步甲|步行虫",
    "leaf beetle": "叶甲|叶甲虫",
    "axolotl": "美西螈|六角恐龙",
    "eastern hog-nosed snake": "东部猪鼻蛇|猪鼻蛇",
    "worm snake": "蚯蚓蛇",
    "station wagon": "旅行车|旅行轿车",
    "china cabinet": "瓷器柜",
    "bell or wind chime": "风铃",
    "wheelbarrow": "手推车|独轮手推车",
    "can opener": "开罐器",
    "barrel": "木桶",
    "tandem bicycle": "双人自行车",
    "tights": "连裤袜|紧身裤",
    "one-piece bathing suit": "连体泳衣",
    "hair dryer": "吹风机|电吹风",
    "hand-held computer": "掌上电脑",
    "notebook computer": "笔记本电脑",
    "mask": "面具",
    "mortar and pestle": "研钵|研钵和杵",
    "graduation cap": "学位帽|学士帽",
    "baby pacifier": "安抚奶嘴|奶嘴",
    "railroad car": "火车车厢|铁路客车",
    "farm plow": "犁",
    "CRT monitor": "显像管显示器|CRT显示器",
    "grand piano": "三角钢琴",
    "meatloaf": "肉糕|烘肉卷",
    "agaric": "伞菌",
    "sailboat": "帆船",
    "schooner": "纵帆船",
    "moped": "轻便摩托车",
    "solar thermal collector": "太阳能集热器",
    "space heater": "取暖器|电暖器",
    "steel drum": "钢鼓",
    "toilet seat": "马桶座圈|马桶",
    "hot tub": "热水浴缸",
    "scarf": "围巾",
    "knot": "绳结",
    "lab coat": "实验服",
    "butternut squash": "奶油南瓜",
    "thatched roof": "茅草屋顶",
}


def _cn_clip_names() -> list[str]:
    """cn_clip's Chinese ImageNet names, read from its source file without importing it."""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install cn-clip --no-deps first (its ImageNet names are read).")
    path = Path(next(iter(spec.submodule_search_locations))) / "eval"
    source = (path / "imagenet_zeroshot_templates.py").read_text(encoding="utf-8")
    namespace: dict[str, object] = {}
    exec(compile(source, str(path), "exec"), namespace)  # a list of strings and lambdas
    names = namespace["imagenet_classnames"]
    assert isinstance(names, list) and len(names) == 1000
    return [str(n) for n in names]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _names(text: str) -> str:
    """Chinese synonyms are separated by '；' in cn_clip; xsearch uses '|'."""
    parts = [p.strip() for p in re.split(r"[；;]", text) if p.strip()]
    return "|".join(dict.fromkeys(parts))


def _read_names(path: Path) -> tuple[set[str], set[str], set[str]]:
    """Keys, English names and Chinese names of a TSV part."""
    keys, en_names, zh_names = set(), set(), set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, en, zh = line.split("\t")
            keys.add(key)
            en_names.update(n.lower() for n in en.split("|"))
            zh_names.update(zh.split("|"))
    return keys, en_names, zh_names


def main() -> None:
    import open_clip.zero_shot_metadata as meta

    # Checked before anything is written, so a misspelt fix leaves the files as they were.
    unused = set(ZH_FIXES) - set(meta.IMAGENET_CLASSNAMES)
    if unused:
        raise SystemExit(f"ZH_FIXES names no ImageNet class: {sorted(unused)}")
    emoji_lines = [f"{c.key}\t{'|'.join(c.en)}\t{'|'.join(c.zh)}\n" for c in synth.CLASSES]
    (OUT / "emoji.tsv").write_text(
        "# The concepts of xsearch.synth's emoji pictures (scripts/build_labels.py).\n"
        + HEADER
        + "".join(emoji_lines),
        encoding="utf-8",
    )
    taken_keys, taken_names, taken_zh = set(), set(), set()
    for part in ("emoji.tsv", "everyday.tsv", "everyday_more.tsv"):
        keys, names, zh_names = _read_names(OUT / part)
        taken_keys |= keys
        taken_names |= names
        taken_zh |= zh_names
    lines: list[str] = []
    lines_zh: set[str] = set()
    for en, zh_text in zip(meta.IMAGENET_CLASSNAMES, _cn_clip_names(), strict=True):
        # A Chinese name that another concept shows would make that tag ambiguous (cn-clip
        # gives several elephants the one name 大象): such names are left out, and so is a
        # class whose shown Chinese name belongs to an earlier, hand-written concept.
        zh_names = _names(ZH_FIXES.get(en, zh_text)).split("|")
        if en.lower() in taken_names or zh_names[0] in taken_zh - set(lines_zh):
            continue
        zh = "|".join(n for n in zh_names if n not in taken_zh)
        if not zh:
            raise SystemExit(f"{en!r} has no Chinese name left; give it one in ZH_FIXES.")
        taken_zh.update(zh_names)
        lines_zh.update(zh_names)
        key = base = _slug(en)
        n = 2
        while key in taken_keys:
            key, n = f"{base}_{n}", n + 1
        taken_keys.add(key)
        taken_names.add(en.lower())
        lines.append(f"{key}\t{en}\t{zh}\n")
    (OUT / "imagenet.tsv").write_text(
        "# ImageNet classes: English from open_clip's zero_shot_metadata, Chinese from cn-clip\n"
        "# (scripts/build_labels.py).\n" + HEADER + "".join(lines),
        encoding="utf-8",
    )
    print(f"emoji.tsv: {len(emoji_lines)} concepts, imagenet.tsv: {len(lines)}")


if __name__ == "__main__":
    main()
