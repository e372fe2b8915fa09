"""The walk: scan_ahead is scan, in a thread of its own."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from xsearch.media import scan as scan_module
from xsearch.media.scan import ScanAhead, ScanEntry, ScanProblem, scan, scan_ahead


def _tree(root: Path) -> Path:
    for folder in ("a", "a/b", "c"):
        (root / folder).mkdir(parents=True)
        for n in range(4):
            (root / folder / f"{n}.jpg").write_bytes(b"x" * n)
    (root / "c" / "notes.txt").write_text("not media")
    (root / "c" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    return root


def test_scan_ahead_gives_what_scan_gives_in_its_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path)
    monkeypatch.setattr(scan_module, "_BATCH", 3)  # several hand-overs, one part-filled
    expected = list(scan([root]))
    with scan_ahead([root]) as walk:
        got = list(walk)
    assert got == expected
    assert sum(isinstance(e, ScanEntry) for e in got) == 12
    assert any(isinstance(e, ScanProblem) and e.reason == "dangling-link" for e in got)


def test_an_error_in_the_walk_is_raised_to_the_caller() -> None:
    def failing() -> Iterator[ScanEntry | ScanProblem]:
        yield ScanEntry(b"/x/1.jpg", 1, 1, "image")
        raise OSError("the disk went away")

    with ScanAhead(failing()) as walk, pytest.raises(OSError, match="went away"):
        list(walk)


def test_a_caller_that_stops_early_stops_the_walk() -> None:
    endless = (ScanEntry(b"/x/%d.jpg" % n, n, n, "image") for n in itertools.count())
    with ScanAhead(endless) as walk:
        first = next(iter(walk))
    assert first.path == b"/x/0.jpg"  # type: ignore[union-attr]
    walk._thread.join(timeout=5)
    assert not walk._thread.is_alive()
