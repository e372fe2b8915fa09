"""Walking folders: which files are media, with symlink loops, junk and odd names handled.

Paths are bytes throughout, exactly as the OS gives them, so that names that are not valid
UTF-8 round-trip into the store and back.
"""

from __future__ import annotations

import fnmatch
import operator
import os
import queue
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import NamedTuple

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ScanAhead",
    "ScanEntry",
    "ScanProblem",
    "kind_of",
    "scan",
    "scan_ahead",
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


def scan_ahead(
    roots: Sequence[Path | bytes],
    *,
    include_hidden: bool = False,
    exclude: Sequence[str] = (),
) -> ScanAhead:
    """:func:`scan`, walking in a thread of its own from the moment this is called.

    The caller can do other work (read the store) while the walk runs; the walk's
    syscalls and SQLite's reads both release the GIL, so on a no-change re-index of 1M
    files the two overlap (docs/scale.md gives the figures). Entries come back in the same
    order as from :func:`scan`, and an error in the walk is raised here. Use it as a
    context manager, so that the walk stops when the caller does::

        with scan_ahead(roots) as walk:
            known = read_the_store()
            for entry in walk: ...
    """
    return ScanAhead(scan(roots, include_hidden=include_hidden, exclude=exclude))


_BATCH = 2048  # entries handed over at a time: one queue operation per batch, not per file
_DONE = object()


class ScanAhead:
    """Runs a walk in a daemon thread and hands its entries over in batches."""

    def __init__(self, items: Iterator[ScanEntry | ScanProblem]) -> None:
        self._items = items
        # Bounded, so that a walk far ahead of its consumer holds ~0.5M entries at most.
        self._batches: queue.Queue[object] = queue.Queue(maxsize=256)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="xsearch-scan", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        batch: list[ScanEntry | ScanProblem] = []
        try:
            for item in self._items:
                batch.append(item)
                if len(batch) >= _BATCH:
                    if not self._put(batch):
                        return
                    batch = []
            if batch:
                self._put(batch)
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[ScanEntry | ScanProblem]:
        while True:
            item = self._batches.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the walk (the consumer is done, failed or was interrupted)."""
        self._stop.set()

    def __enter__(self) -> ScanAhead:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


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
