"""``xsearch demo``: the whole product offline, with the bundled toy model.

Generates a small folder of emoji pictures, indexes it (which tags them), runs a few
queries in Chinese and English and one by tag, and draws a contact sheet of the top hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .config import IndexOptions, Settings
from .engine import Engine
from .hits import SearchHit
from .index_report import IndexReport
from .querylang import Query
from .tag_sync import TagListing

__all__ = ["DEMO_QUERIES", "DEMO_TAG_QUERY", "DemoResult", "contact_sheet", "run_demo"]

DEMO_QUERIES = ("猫", "汽车", "a red apple", "dog")
#: Run in the query language: the pictures tagged dog.
DEMO_TAG_QUERY = "tag:狗"
_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
)


@dataclass
class DemoResult:
    folder: Path
    store: Path
    report: IndexReport
    results: dict[str, list[SearchHit]]
    sheet: Path
    # The tags of every picture, and how many pictures carry each.
    tags: TagListing


def run_demo(
    workdir: Path,
    *,
    store: Path | None = None,
    pictures: int = 120,
    queries: Sequence[str] = DEMO_QUERIES,
    limit: int = 5,
    sheet: Path | None = None,
    seed: int = 7,
) -> DemoResult:
    """Generate ``pictures`` pictures under ``workdir``, index and query them."""
    from . import synth

    folder = workdir / "pictures"
    if not folder.exists():
        synth.generate_folder(folder, pictures, seed=seed, split="heldout", size=160)
    store = store or workdir / "store"
    settings = Settings(store=store, model="toy-bilingual", device="cpu")
    with Engine(settings) as engine:
        report = engine.index([folder], IndexOptions(workers=0))
        results = {q: engine.search(q, limit=limit) for q in queries}
        results[DEMO_TAG_QUERY] = engine.search(Query.parse(DEMO_TAG_QUERY), limit=limit)
        tags = engine.tags(folder)
    sheet = sheet or workdir / "contact-sheet.png"
    contact_sheet(results, sheet)
    return DemoResult(folder, store, report, results, sheet, tags)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for candidate in _CJK_FONTS:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def contact_sheet(results: dict[str, list[SearchHit]], out: Path, *, thumb: int = 128) -> Path:
    """One row per query: its text, then its hits as thumbnails with their scores."""
    cols = max((len(h) for h in results.values()), default=1)
    label_w, pad, caption_h = 200, 8, 22
    width = label_w + cols * (thumb + pad) + pad
    height = len(results) * (thumb + caption_h + pad) + pad
    sheet = Image.new("RGB", (width, max(height, thumb)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(20)
    score_font = _font(14)
    for row, (query, hits) in enumerate(results.items()):
        y = pad + row * (thumb + caption_h + pad)
        draw.text((pad, y + thumb // 2 - 10), query, fill="black", font=font)
        for col, hit in enumerate(hits):
            x = label_w + col * (thumb + pad)
            try:
                with Image.open(hit.path) as source:
                    small = source.convert("RGB")
                small.thumbnail((thumb, thumb))
                sheet.paste(small, (x, y))
            except OSError:
                draw.rectangle((x, y, x + thumb, y + thumb), outline="red")
            draw.text((x, y + thumb + 2), f"{hit.score:.3f}", fill="black", font=score_font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
