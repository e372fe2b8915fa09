"""Write the generated parts of the tag vocabulary in ``xsearch/data/labels``.

- ``emoji.tsv``: the concepts of the generated emoji pictures (``xsearch.synth.CLASSES``),
  so that the bundled toy model's concepts are always in the vocabulary.
- ``imagenet.tsv``: the 1,000 ImageNet classes, English names from open_clip's
  ``zero_shot_metadata.IMAGENET_CLASSNAMES`` (OpenAI's cleaned names) and Chinese names from
  the ``cn-clip`` package's ``cn_clip/eval/imagenet_zeroshot_templates.py`` (translated by
  the Wukong project), in the same class order. Classes whose English name is already
  in ``emoji.tsv`` or the hand-written ``everyday.tsv`` are left out.

``everyday.tsv`` and ``templates.json`` are written by hand. Usage (needs ``pip install
cn-clip --no-deps``, which is only read, never imported as a model)::

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
    emoji_lines = [f"{c.key}\t{'|'.join(c.en)}\t{'|'.join(c.zh)}\n" for c in synth.CLASSES]
    (OUT / "emoji.tsv").write_text(
        "# The concepts of xsearch.synth's emoji pictures (scripts/build_labels.py).\n"
        + HEADER
        + "".join(emoji_lines),
        encoding="utf-8",
    )
    import open_clip.zero_shot_metadata as meta

    taken_keys, taken_names, taken_zh = set(), set(), set()
    for part in ("emoji.tsv", "everyday.tsv"):
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
        zh_names = _names(zh_text).split("|")
        if en.lower() in taken_names or zh_names[0] in taken_zh - set(lines_zh):
            continue
        zh = "|".join(n for n in zh_names if n not in taken_zh)
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
