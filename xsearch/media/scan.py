"""Walking folders: which files are media, with symlink loops, junk and odd names handled.

Paths are bytes throughout, exactly as the OS gives them, so that names that are not valid
UTF-8 round-trip into the store and back.
"""

from __future__ import annotations

import fnmatch
import operator
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import NamedTuple

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ScanEntry",
    "ScanProblem",
    "kind_of",
    "scan",
]

IMAGE_EXTENSIONS = frozenset(
    b".jpg .jpeg .jpe .jfif .png .webp .gif .bmp .dib .tif .tiff .heic .heif .hif .avif "
    b".jp2 .j2k .ico .ppm .pgm .pbm .pnm .tga .psd .dng .mpo .qoi .dds .pcx .sgi .rgb .rgba "
    b".bw".split()
)
VIDEO_EXTENSIONS = frozenset(
    b".mp4 .m4v .mov .qt .mkv .webm .avi .wmv .flv .mpg .mpeg .m2ts .mts .ts .3gp .3g2 "
    b".ogv .vob .mxf .divx .asf .rm .rmvb .f4v".split()
)
_JUNK_NAMES = frozenset(
    [
        b".DS_Store",
        b"Thumbs.db",
        b"desktop.ini",
        b"@eaDir",
        b"$RECYCLE.BIN",
        b"System Volume Information",
        b"lost+found",
    ]
)


class ScanEntry(NamedTuple):
    """A candidate media file and its stat data. A named tuple, not a frozen dataclass: one
    is made per file of every re-index, in 572 ns against 824 (``python -m timeit``)."""

    path: bytes
    size: int
    mtime_ns: int
    # "image" or "video" by extension, "unknown" for files without one (sniffed later).
    kind: str


@dataclass(frozen=True)
class ScanProblem:
    """Something the walk could not use: reported, never fatal."""

    path: bytes
    reason: str
    detail: str


def kind_of(path: bytes) -> str | None:
    """'image', 'video', 'unknown' (no extension) or None (not media) from the name alone."""
    return _kind_of_name(os.path.basename(path))


def _kind_of_name(name: bytes) -> str | None:
    return _KIND_BY_EXTENSION.get(_extension(name))


def _extension(name: bytes) -> bytes:
    """``os.path.splitext(name)[1].lower()``, at a third of its cost (it runs once per file
    of every re-index): leading dots do not start an extension (".jpg" has none)."""
    dot = name.rfind(b".")
    if dot <= 0 or not name[:dot].strip(b"."):
        return b""
    return name[dot:].lower()


_KIND_BY_EXTENSION: dict[bytes, str] = {
    **dict.fromkeys(VIDEO_EXTENSIONS, "video"),
    **dict.fromkeys(IMAGE_EXTENSIONS, "image"),
    b"": "unknown",
}


_NAME = operator.attrgetter("name")


def _is_junk(name: bytes) -> bool:
    # "._x" (macOS resource forks) starts with "." as well.
    return name[:1] == b"." or name in _JUNK_NAMES


def _excluded(rel: bytes, name: bytes, patterns: Sequence[str]) -> bool:
    rel_s = os.fsdecode(rel)
    name_s = os.fsdecode(name)
    return any(fnmatch.fnmatch(rel_s, p) or fnmatch.fnmatch(name_s, p) for p in patterns)


def scan(
    roots: Sequence[Path | bytes],
    *,
    include_hidden: bool = False,
    exclude: Sequence[str] = (),
) -> Iterator[ScanEntry | ScanProblem]:
    """Yield media files below ``roots`` (or the roots themselves when they are files).

    Symlinks are followed, but each real directory is entered once (by device and inode),
    so link loops end. Dangling links and unreadable folders come back as problems.
    """
    visited: set[tuple[int, int]] = set()
    for root in roots:
        root_b = os.fsencode(os.path.abspath(root))
        try:
            st = os.stat(root_b)
        except OSError as exc:
            yield ScanProblem(root_b, "missing", exc.strerror or str(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root_b, visited, include_hidden, exclude)
        else:
            yield ScanEntry(root_b, st.st_size, st.st_mtime_ns, kind_of(root_b) or "unknown")


def _walk(
    root: bytes, visited: set[tuple[int, int]], include_hidden: bool, exclude: Sequence[str]
) -> Iterator[ScanEntry | ScanProblem]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            yield ScanProblem(folder, "unreadable", exc.strerror or str(exc))
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            continue
        visited.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_NAME)
        except OSError as exc:
            yield ScanProblem(folder, "unreadable", f"cannot list folder: {exc.strerror or exc}")
            continue
        subfolders: list[bytes] = []
        # One pass per entry, without a call per file: a no-change re-index of 1M files
        # is this loop (docs/scale.md, "SQLite at 10M rows").
        for entry in entries:
            name = entry.name
            if not include_hidden and _is_junk(name):
                continue
            if exclude and _excluded(os.path.relpath(entry.path, root), name, exclude):
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                yield ScanProblem(entry.path, "dangling-link", "symbolic link to a missing target")
                continue
            except OSError as exc:
                yield ScanProblem(entry.path, "unreadable", exc.strerror or str(exc))
                continue
            mode = st.st_mode
            if S_ISDIR(mode):
                subfolders.append(entry.path)
                continue
            kind = _KIND_BY_EXTENSION.get(_extension(name)) if S_ISREG(mode) else None
            if kind is not None:
                yield ScanEntry(entry.path, st.st_size, st.st_mtime_ns, kind)
        # Reversed so that the stack pops them in name order.
        stack.extend(reversed(subfolders))
