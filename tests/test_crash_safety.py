"""Issue 5: SIGKILL at random moments never loses or duplicates data."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xsearch import Engine, Settings
from xsearch.index.base import read_meta
from xsearch.index.faiss_index import FaissIndex

from .conftest import TINY, random_image
from .driver import media_rows

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 20


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.driver", *args]


def _assert_consistent(store: Path, expected: set[bytes]) -> None:
    with Engine(Settings(store=store)) as engine:
        s = engine.store()
        states = s.states_under([os.fsencode(store.parent / "photos")])
        assert set(states) == expected
        ids = s.vector_ids()
        assert len(ids) == len(expected) == len(np.unique(ids))
        meta = read_meta(store / "index.json")
        assert meta is not None
        held = FaissIndex.load(store / "index.faiss", meta.kind).ids()
        assert sorted(held.tolist()) == ids.tolist(), "saved index disagrees with the store"
        hits = engine.search("anything", limit=100)
        assert len(hits) == len(expected)
        assert len({h.id for h in hits}) == len(hits)
        # Tagging comes after the writes: a run killed in it leaves files that the
        # re-run tags, and none twice.
        assert s.untagged_media_ids() == []


@pytest.mark.slow
def test_sigkill_at_random_points(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(16):
        random_image(photos / f"img{i:02d}.jpg", i, size=(96, 72))
    expected = {os.fsencode(p) for p in photos.iterdir()}
    store = tmp_path / "store"
    # Decoding is slowed a little so that the writing phase is long enough to aim at.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XSEARCH_TEST_SLOW_DECODE": "0.05"}
    args = _cli(
        "index",
        str(photos),
        "--store",
        str(store),
        "--model",
        TINY,
        "--batch-size",
        "2",
        "--workers",
        "0",
    )
    # How long a full run takes, and how long its writing phase lasts (from the moment the
    # database appears), set the windows the kills are drawn from.
    started = time.monotonic()
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    db_seen = _wait_for(store / "xsearch.db", proc)
    assert proc.wait() == 0
    full = time.monotonic() - started
    writing = max(time.monotonic() - db_seen, 0.2)
    rng = random.Random(20261129)
    failures = []
    left_behind: list[int] = []
    for trial in range(TRIALS):
        for p in store.glob("*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if trial % 4 == 1:
            # A quarter land just after the first rows are committed, whatever the load on
            # the machine: part of the files are in, the rest is still to come.
            _wait_for_rows(store / "xsearch.db", proc)
        elif trial % 2:
            # Half the kills land while the run is writing: after the database appears.
            _wait_for(store / "xsearch.db", proc)
            time.sleep(rng.uniform(0.0, writing))
        else:
            time.sleep(rng.uniform(0.2, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left_behind.append(media_rows(store / "xsearch.db"))
        rerun = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if rerun.returncode != 0:
            failures.append((trial, rerun.stderr[-500:]))
            continue
        try:
            _assert_consistent(store, expected)
        except AssertionError as exc:
            failures.append((trial, str(exc)))
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "crash-trials.json").write_text(
        json.dumps(
            {
                "trials": TRIALS,
                "files": len(expected),
                "rows_after_kill": left_behind,
                "failures": failures,
            }
        )
    )
    assert not failures, failures
    # The kills must land at different stages, some of them part-way through the writes.
    assert any(0 < n < len(expected) for n in left_behind), left_behind


def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit: float = 60.0) -> float:
    """Poll until ``path`` exists or ``proc`` ends; returns the moment it was seen."""
    deadline = time.monotonic() + limit
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return time.monotonic()


def _wait_for_rows(db: Path, proc: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    """Poll until the run has committed its first files, or ends."""
    deadline = time.monotonic() + limit
    while media_rows(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def test_doctor_finds_and_repairs_a_stale_index(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xsearch.cli import app

    photos = tmp_path / "photos"
    for i in range(5):
        random_image(photos / f"{i}.jpg", i)
    store = tmp_path / "store"
    runner = CliRunner()
    assert (
        runner.invoke(app, ["index", str(photos), "--store", str(store), "--model", TINY]).exit_code
        == 0
    )
    ok = runner.invoke(app, ["doctor", "--store", str(store)])
    assert ok.exit_code == 0 and "agrees with the store" in ok.output
    saved = (store / "index.faiss").read_bytes()
    random_image(photos / "new.jpg", 99)
    assert runner.invoke(app, ["index", str(photos), "--store", str(store)]).exit_code == 0
    (store / "index.faiss").write_bytes(saved)  # as if the run died before saving the index
    repaired = runner.invoke(app, ["doctor", "--store", str(store)])
    assert repaired.exit_code == 0
    assert "1 missing" in repaired.output and "Repaired" in repaired.output
    again = runner.invoke(app, ["info", "--check", "--store", str(store)])
    assert "0 missing" in again.output and "agrees with the store" in again.output
