"""Build the emoji glyph atlas that ships in ``xsearch/data/glyphs``.

Renders every glyph of every class in ``xsearch.synth.CLASSES`` with the Noto Color
Emoji font, crops it to its alpha bounding box and writes ``<codepoints>.png``, plus
``classes.json`` with the classes, their names and the CLDR names of their glyphs
(from the ``emoji`` package). Stale PNGs of glyphs no longer used are removed.

The script fails when a glyph's CLDR name is missing from its class's names, so that
``CLASSES`` keeps matching the Unicode names after an ``emoji`` upgrade.

Usage: python scripts/build_glyphs.py [--font PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import emoji

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xsearch.synth import (  # noqa: E402  (needs the repo on sys.path first)
    CLASSES,
    EmojiClass,
    glyph_filename,
    render_glyph_from_font,
)

DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
ATLAS_DIR = REPO / "xsearch" / "data" / "glyphs"
# The atlas is committed; keep it well under a megabyte.
MAX_ATLAS_BYTES = 1_000_000


def cldr_name(glyph: str, language: str) -> str:
    """The CLDR short name of ``glyph`` in ``language``, with spaces for underscores."""
    raw = emoji.demojize(glyph, language=language, delimiters=("", ""))
    if raw == glyph:
        raise SystemExit(f"emoji has no {language} name for {glyph!r}")
    return raw.replace("_", " ").strip()


def class_record(cls: EmojiClass) -> dict[str, Any]:
    """The JSON record of ``cls``; exits when a CLDR name is not among its names."""
    cldr_en = [cldr_name(glyph, "en") for glyph in cls.glyphs]
    cldr_zh = [cldr_name(glyph, "zh") for glyph in cls.glyphs]
    missing = [n for n in cldr_en if n not in cls.en] + [n for n in cldr_zh if n not in cls.zh]
    if missing:
        raise SystemExit(f"class {cls.key}: CLDR names {missing} are not in its names")
    return {
        "key": cls.key,
        "glyphs": list(cls.glyphs),
        "files": [glyph_filename(glyph) for glyph in cls.glyphs],
        "en": list(cls.en),
        "zh": list(cls.zh),
        "cldr_en": cldr_en,
        "cldr_zh": cldr_zh,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--font", type=Path, default=DEFAULT_FONT, help="colour emoji font")
    args = parser.parse_args()
    if not args.font.is_file():
        raise SystemExit(f"font not found: {args.font} (apt-get install fonts-noto-color-emoji)")
    if hasattr(emoji.config, "load_language"):
        emoji.config.load_language("zh")

    ATLAS_DIR.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for cls in CLASSES:
        for glyph in cls.glyphs:
            name = glyph_filename(glyph)
            wanted.add(name)
            render_glyph_from_font(glyph, args.font).save(ATLAS_DIR / name, optimize=True)
    for stale in ATLAS_DIR.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()

    records = [class_record(cls) for cls in CLASSES]
    document = {"font": args.font.name, "emoji_version": emoji.__version__, "classes": records}
    (ATLAS_DIR / "classes.json").write_text(
        json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    total = sum(path.stat().st_size for path in ATLAS_DIR.iterdir())
    print(f"wrote {len(wanted)} glyphs of {len(CLASSES)} classes to {ATLAS_DIR} ({total} bytes)")
    if total > MAX_ATLAS_BYTES:
        raise SystemExit(f"atlas is {total} bytes, over the {MAX_ATLAS_BYTES} byte budget")


if __name__ == "__main__":
    main()
