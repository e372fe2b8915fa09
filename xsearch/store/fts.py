"""Keyword search over the words of file paths and EXIF text, in SQLite FTS5.

People name folders and files meaningfully ("2023 京都/", "wedding_final.mp4"), so those
words are evidence too. FTS5's ``unicode61`` tokenizer splits Latin text well but keeps a
run of Chinese or Japanese characters as one token, so such runs are cut here into single
characters and overlapping pairs (as Lucene's CJK analyser does) before SQLite sees them:
"京都市" is indexed as 京 都 市 京都 都市, and a query for 京都 finds it. Porter stemming
lets "weddings" find "wedding".

The table ``media_fts`` (rowid = media id) is created by migration 0002, and migration 0003
gives it a second column, ``tags``: the names of a file's zero-shot tags in both languages
(:func:`apply_tags`), so keyword search finds "海滩" in a picture that shows a beach. A
trigger removes a file's row when the file leaves the store, and :func:`apply` writes rows
in the same transaction as the store's own writes, keeping the tag words of a moved file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "FTS_TABLE",
    "TOKENIZER",
    "FtsDocument",
    "apply",
    "apply_tags",
    "clear_tags",
    "document_words",
    "documents",
    "exif_text",
    "informative_expression",
    "match_expression",
]

FTS_TABLE = "media_fts"
TOKENIZER = "porter unicode61 remove_diacritics 2"

# Han (with extensions and compatibility forms), kana and Hangul syllables.
_CJK = (
    "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
    "\U00020000-\U0003134f"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(rf"[^\W_{_CJK}]+")
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
# Text-bearing EXIF tags: ImageDescription, Artist, XPTitle, XPComment, XPAuthor,
# XPKeywords, XPSubject; UserComment lives in the Exif IFD. Make and Model are left out on
# purpose: "Apple" the camera maker must not find apples.
_TEXT_TAGS = (0x010E, 0x013B, 0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F)
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_MAX_QUERY_TOKENS = 32


@dataclass(frozen=True)
class FtsDocument:
    """The words of one file, to be written for the file stored at ``path``."""

    path: bytes
    words: str


def _cjk_tokens(run: str, *, unigrams: bool) -> list[str]:
    if len(run) == 1:
        return [run]
    pairs = [run[i : i + 2] for i in range(len(run) - 1)]
    return [*run, *pairs] if unigrams else pairs


def _tokens(value: str, *, for_query: bool) -> list[str]:
    out: list[str] = []
    for chunk in re.split(f"([{_CJK}]+)", value):
        if not chunk:
            continue
        if _CJK_RUN.fullmatch(chunk):
            # A query pair must be found as a pair; a lone query character as itself.
            out += _cjk_tokens(chunk, unigrams=not for_query)
            continue
        for word in _WORD.findall(chunk):
            word = word.lower()
            out.append(word)
            # "IMG2023" is also indexed as "img" and "2023", so that a query for 2023 finds it.
            parts = _LETTER_DIGIT.split(word)
            if not for_query and len(parts) > 1:
                out += parts
    return out


def document_words(display_path: str, extra: str = "") -> str:
    """The indexed text of a file: the words of its path (every folder and its name)."""
    return " ".join(_tokens(display_path.replace("/", " ") + " " + extra, for_query=False))


def _quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH expression for free text: any of its words, or None if it has none.

    Each word is quoted, so nothing a user types can be read as FTS5 syntax.
    """
    words = _query_words(query)
    return " OR ".join(_quote(w) for w in words) if words else None


def _query_words(query: str) -> list[str]:
    seen: dict[str, None] = {}
    for token in _tokens(query, for_query=True):
        seen.setdefault(token, None)
    return list(seen)[:_MAX_QUERY_TOKENS]


def informative_expression(scalar: Callable[[str, Sequence[Any]], Any], query: str) -> str | None:
    """Like :func:`match_expression`, leaving out words that every file has.

    Such words (the folders that all paths share, like "home" or "photos") say nothing
    about a file, and matching them would rank the whole store in arbitrary order.
    ``scalar(sql, params)`` runs a query of one value on the store.
    """
    files = scalar("SELECT count(*) FROM media", ()) or 0
    count = f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?"
    words = [w for w in _query_words(query) if scalar(count, (_quote(w),)) < files]
    return " OR ".join(_quote(w) for w in words) if words else None


def exif_text(path: bytes) -> str:
    """The text fields of an image's EXIF data; "" when there are none or it cannot be read."""
    from PIL import Image

    from ..media.images import register_plugins

    register_plugins()
    try:
        with Image.open(os.fsdecode(path)) as im:
            exif = im.getexif()
            values = [exif.get(tag) for tag in _TEXT_TAGS]
            values.append(exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT))
    except Exception:  # EXIF text is a bonus; a file it cannot be read from is still indexed
        return ""
    return " ".join(filter(None, (_exif_string(v) for v in values)))


def _exif_string(value: object) -> str:
    if isinstance(value, str):
        return value.strip("\x00 ")
    if isinstance(value, bytes):
        # XP* tags are UTF-16LE; UserComment starts with an 8-byte character-code header.
        if value[:8] in (b"ASCII\x00\x00\x00", b"UNICODE\x00", b"\x00" * 8):
            codec = "utf-16" if value.startswith(b"UNICODE") else "latin-1"
            return value[8:].decode(codec, errors="ignore").strip("\x00 ")
        return value.decode("utf-16-le", errors="ignore").strip("\x00 ")
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return _exif_string(bytes(value))
    return ""


def documents(
    upserts: Iterable[tuple[bytes, str, str]], moves: Iterable[tuple[bytes, str]]
) -> list[FtsDocument]:
    """Documents for new files ``(path, display path, media type)`` and moved ones.

    Reads EXIF text from image files, so call it before opening a write transaction.
    """
    docs = [
        FtsDocument(path, document_words(shown, exif_text(path) if kind == "image" else ""))
        for path, shown, kind in upserts
    ]
    # A moved file keeps its content, but the EXIF text is re-read: it is cheaper than a lookup.
    docs += [FtsDocument(path, document_words(shown, exif_text(path))) for path, shown in moves]
    return docs


def apply(session: Session, docs: Sequence[FtsDocument]) -> None:
    """Write ``docs`` for files already in ``media`` (inside the caller's transaction)."""
    from sqlalchemy import text

    for doc in docs:
        session.execute(
            text(
                f"INSERT OR REPLACE INTO {FTS_TABLE}(rowid, words, tags) "
                f"SELECT m.id, :words, (SELECT f.tags FROM {FTS_TABLE} f WHERE f.rowid = m.id) "
                "FROM media m WHERE m.path = :path"
            ),
            {"words": doc.words, "path": doc.path},
        )


def apply_tags(session: Session, media_id: int, labels: Iterable[str]) -> None:
    """Make the names of a file's tags its ``tags`` words (inside the caller's transaction)."""
    from sqlalchemy import text

    words = " ".join(_tokens(" ".join(dict.fromkeys(labels)), for_query=False))
    session.execute(
        text(f"UPDATE {FTS_TABLE} SET tags = :words WHERE rowid = :id"),
        {"words": words, "id": media_id},
    )


def clear_tags(session: Session) -> None:
    """Drop the tag words of every file (before the store is tagged anew)."""
    from sqlalchemy import text

    session.execute(text(f"UPDATE {FTS_TABLE} SET tags = NULL"))
