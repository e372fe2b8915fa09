"""Walking folders: which files are media, with symlink loops, junk and odd names handled.

Paths are bytes throughout, exactly as the OS gives them, so that names that are not valid
UTF-8 round-trip into the store and back.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class ScanEntry:
    """A candidate media file and its stat data."""

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
    name = os.path.basename(path)
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return "unknown" if not ext else None


def _is_junk(name: bytes) -> bool:
    return name.startswith(b".") or name.startswith(b"._") or name in _JUNK_NAMES


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
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield ScanProblem(folder, "unreadable", f"cannot list folder: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in entries:
            result = _visit(entry, root, include_hidden, exclude)
            if isinstance(result, bytes):
                subfolders.append(result)
            elif result is not None:
                yield result
        # Reversed so that the stack pops them in name order.
        stack.extend(reversed(subfolders))


def _visit(
    entry: os.DirEntry[bytes], root: bytes, include_hidden: bool, exclude: Sequence[str]
) -> bytes | ScanEntry | ScanProblem | None:
    """A subfolder to enter (bytes), a file entry, a problem, or None to ignore."""
    name = entry.name
    if not include_hidden and _is_junk(name):
        return None
    if exclude and _excluded(os.path.relpath(entry.path, root), name, exclude):
        return None
    try:
        st = entry.stat(follow_symlinks=True)
    except FileNotFoundError:
        return ScanProblem(entry.path, "dangling-link", "symbolic link to a missing target")
    except OSError as exc:
        return ScanProblem(entry.path, "unreadable", exc.strerror or str(exc))
    if stat.S_ISDIR(st.st_mode):
        return entry.path
    if not stat.S_ISREG(st.st_mode):
        return None
    kind = kind_of(entry.path)
    if kind is None:
        return None
    return ScanEntry(entry.path, st.st_size, st.st_mtime_ns, kind)
