"""Issue 5: hostile inputs each get their documented outcome, and the run completes."""

from __future__ import annotations

import builtins
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xsearch import Engine, IndexOptions, Settings
from xsearch.media.images import decode_image

from .conftest import TINY, random_image
from .hostile import make_corpus, oriented_jpeg, pixel_bomb


def test_hostile_corpus_outcomes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    seen: dict[str, list[str]] = {}
    with Engine(Settings(store=tmp_path / "store", model=TINY)) as engine:
        report = engine.index(
            [corpus],
            IndexOptions(workers=0),
            on_outcome=lambda o: seen.setdefault(Path(o.display).name, []).append(o.outcome),
        )
        assert not report.cancelled
        got = {name: outcomes for name, outcomes in seen.items()}
        for name, outcome in expected.items():
            assert got.get(name) == [outcome], (name, got.get(name))
        # Hidden files and junk are not even looked at; the loop does not index files twice.
        assert ".hidden.jpg" not in got and ".DS_Store" not in got
        assert set(got) == set(expected)
        # The exact bytes of the non-UTF-8 name round-trip through the store.
        raw = os.fsencode(corpus) + b"/latin1-\xe9t\xe9.jpg"
        assert raw in engine.store().states_under([os.fsencode(corpus)])
        hits = engine.search("x", limit=100)
        assert raw in {h.path_bytes for h in hits}
        again = engine.index([corpus], IndexOptions(workers=0))
        assert again.encoder_calls == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    oriented_jpeg(path, orientation)
    image = decode_image(os.fsencode(path), max_pixels=10**8).image
    assert image.size == (64, 48)
    r, _, b = image.getpixel((8, 8))  # type: ignore[misc]
    assert r > 200 and b < 60, f"orientation {orientation} not applied"
    r, _, b = image.getpixel((56, 40))  # type: ignore[misc]
    assert b > 200 and r < 60


def test_pixel_bomb_is_a_fast_skip(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    pixel_bomb(path)
    assert path.stat().st_size == 57
    started = time.monotonic()
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index([path], IndexOptions(workers=0))
    assert report.counts["failed"] == 1
    assert "3000000×48" in (report.problems[0].detail or "")
    assert time.monotonic() - started < 30


def test_pixel_limit_is_named(tmp_path: Path) -> None:
    random_image(tmp_path / "big.png", 1, size=(300, 200), fmt="PNG")
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index(
            [tmp_path / "big.png"], IndexOptions(workers=0, max_image_pixels=10_000)
        )
    problem = report.problems[0]
    assert problem.reason == "too-large" and "10,000" in (problem.detail or "")


def test_exclude_and_include_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    random_image(folder / "keep.jpg", 1)
    random_image(folder / "raw" / "skip.jpg", 2)
    random_image(folder / ".cache" / "hidden.jpg", 3)
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index([folder], IndexOptions(workers=0, exclude=("raw",)))
        assert report.counts["indexed"] == 1
        report = engine.index(
            [folder], IndexOptions(workers=0, exclude=("raw/*",), include_hidden=True)
        )
        assert report.counts["indexed"] == 1 and report.counts["unchanged"] == 1


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "lib"
    random_image(folder / "ok.jpg", 1)
    secret = random_image(folder / "secret.jpg", 2)
    secret.chmod(0)
    if os.geteuid() == 0:
        # Root reads any file whatever its mode, so emulate the EACCES an ordinary user gets.
        real_open = builtins.open

        def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fsencode(file) == os.fsencode(secret):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded)
    seen = {}
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index(
            [folder],
            IndexOptions(workers=0),
            on_outcome=lambda o: seen.__setitem__(Path(o.display).name, o),
        )
    assert seen["secret.jpg"].outcome == "failed" and seen["secret.jpg"].reason == "unreadable"
    assert seen["ok.jpg"].outcome == "indexed"
    assert report.counts["failed"] == 1


def test_modes_convert_to_rgb(tmp_path: Path) -> None:
    deep = (np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)
    from PIL import Image

    Image.fromarray(deep).save(tmp_path / "d.png")
    image = decode_image(os.fsencode(tmp_path / "d.png"), max_pixels=10**8).image
    arr = np.asarray(image)
    assert image.mode == "RGB" and arr.max() > 200 and arr.min() < 10


def test_a_file_that_hangs_is_timed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xsearch import pipeline

    random_image(tmp_path / "lib" / "ok.jpg", 1)
    random_image(tmp_path / "lib" / "hangs.jpg", 2)
    real = pipeline.decode_image

    def stuck(path: bytes, **kwargs: Any) -> Any:
        if path.endswith(b"hangs.jpg"):
            time.sleep(30)
        return real(path, **kwargs)

    monkeypatch.setattr(pipeline, "decode_image", stuck)
    started = time.monotonic()
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index([tmp_path / "lib"], IndexOptions(workers=0, file_timeout=0.5))
    assert time.monotonic() - started < 25
    assert report.counts["indexed"] == 1
    problem = report.problems[0]
    assert problem.reason == "timed-out" and "0.5 s" in (problem.detail or "")
