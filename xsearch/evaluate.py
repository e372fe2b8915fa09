"""``xsearch eval``: text→image retrieval quality of a model on a captioned dataset.

It indexes the dataset's images with the normal indexer and runs every caption through the
normal search path, so it measures exactly what users get.

Formats:
- a TSV (``image<TAB>caption``) or JSONL (``{"image": ..., "caption": ..., "lang": ...}``)
  file; image paths are relative to the file's folder (or ``--images``);
- Karpathy-style JSON (Flickr30k/COCO): ``{"images": [{"filename", "filepath"?, "split",
  "sentences": [{"raw"}]}]}``; only the ``test`` split is used unless told otherwise.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EvalDatasetError

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["EvalPair", "EvalResult", "guess_language", "load_pairs", "run_eval"]

KS = (1, 5, 10)


@dataclass(frozen=True)
class EvalPair:
    image: Path
    caption: str
    lang: str


@dataclass
class EvalResult:
    """Per-language recall@K and mean rank of the first relevant image."""

    images: int
    captions: int
    by_lang: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "captions": self.captions, "languages": self.by_lang}


def guess_language(text: str) -> str:
    """A script-based guess: zh, ja, ko, ru, ar, el, he, th, hi, else en."""
    for ch in text:
        name = unicodedata.name(ch, "")
        if name.startswith(("HIRAGANA", "KATAKANA")):
            return "ja"
    for ch in text:
        name = unicodedata.name(ch, "")
        for prefix, lang in (
            ("CJK", "zh"),
            ("HANGUL", "ko"),
            ("CYRILLIC", "ru"),
            ("ARABIC", "ar"),
            ("GREEK", "el"),
            ("HEBREW", "he"),
            ("THAI", "th"),
            ("DEVANAGARI", "hi"),
        ):
            if name.startswith(prefix):
                return lang
    return "en"


def load_pairs(path: Path, *, images: Path | None = None, split: str = "test") -> list[EvalPair]:
    """Read (image, caption, language) pairs from a TSV, JSONL or Karpathy JSON file."""
    if not path.is_file():
        raise EvalDatasetError(f"The dataset file {path} does not exist.")
    base = images or path.parent
    suffix = path.suffix.lower()
    if suffix == ".json":
        pairs = _karpathy(path, base, split)
    elif suffix == ".jsonl":
        pairs = _jsonl(path, base)
    else:
        pairs = _tsv(path, base)
    if not pairs:
        raise EvalDatasetError(f"{path} holds no (image, caption) pairs.")
    for pair in pairs:
        if not pair.image.is_file():
            raise EvalDatasetError(
                f"{path}: image {pair.image} does not exist; pass --images DIR if the images "
                "live elsewhere."
            )
    return pairs


def _tsv(path: Path, base: Path) -> list[EvalPair]:
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            raise EvalDatasetError(f"{path}:{n}: expected 'image<TAB>caption', got {line[:80]!r}")
        lang = parts[2].strip() if len(parts) > 2 and parts[2].strip() else guess_language(parts[1])
        pairs.append(EvalPair(base / parts[0], parts[1].strip(), lang))
    return pairs


def _jsonl(path: Path, base: Path) -> list[EvalPair]:
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            image, caption = doc["image"], doc["caption"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EvalDatasetError(
                f"{path}:{n}: expected a JSON object with 'image' and 'caption' ({exc})"
            ) from exc
        pairs.append(EvalPair(base / image, caption, doc.get("lang") or guess_language(caption)))
    return pairs


def _karpathy(path: Path, base: Path, split: str) -> list[EvalPair]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["images"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalDatasetError(
            f"{path}: not a Karpathy-style JSON file with an 'images' list ({exc})"
        ) from exc
    pairs = []
    for entry in entries:
        if split and entry.get("split", split) != split:
            continue
        image = base / entry.get("filepath", "") / entry["filename"]
        for sentence in entry.get("sentences", []):
            raw = sentence.get("raw", "").strip()
            if raw:
                pairs.append(EvalPair(image, raw, guess_language(raw)))
    return pairs


def run_eval(
    engine: Engine,
    pairs: list[EvalPair],
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Index the images of ``pairs`` into ``engine``'s store, then rank every caption."""
    images = sorted({p.image.resolve() for p in pairs})
    report = engine.index(images)
    if report.counts["failed"]:
        bad = ", ".join(o.display for o in report.problems if o.outcome == "failed")
        raise EvalDatasetError(f"Some dataset images could not be indexed: {bad}")
    relevant: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    for p in pairs:
        relevant[(p.caption, p.lang)].add(os.fsencode(p.image.resolve()))
    ranks: dict[str, list[int]] = defaultdict(list)
    for n, ((caption, lang), wanted) in enumerate(relevant.items(), 1):
        hits = engine.search(caption, limit=len(images))
        rank = next((i for i, h in enumerate(hits, 1) if h.path_bytes in wanted), len(images) + 1)
        ranks[lang].append(rank)
        if on_progress:
            on_progress(n, len(relevant))
    by_lang = {lang: _metrics(r) for lang, r in sorted(ranks.items())}
    by_lang["all"] = _metrics([r for rs in ranks.values() for r in rs])
    return EvalResult(images=len(images), captions=len(relevant), by_lang=by_lang)


def _metrics(ranks: list[int]) -> dict[str, float]:
    n = len(ranks)
    doc = {f"R@{k}": round(sum(r <= k for r in ranks) / n, 4) for k in KS}
    doc["mean_rank"] = round(sum(ranks) / n, 2)
    doc["queries"] = n
    return doc
