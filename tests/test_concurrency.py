"""Issue 5: one writer at a time; queries keep working while an index run is in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from typer.testing import CliRunner

from xsearch import Engine, Settings
from xsearch.cli import app
from xsearch.store.lock import WriterLock

from .conftest import TINY, random_image
from .driver import index_command, media_rows

ROOT = Path(__file__).resolve().parent.parent


def test_second_writer_is_refused_with_the_holder_named(
    runner: CliRunner, photos: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert (
        runner.invoke(app, ["index", str(photos), "--store", str(store), "--model", TINY]).exit_code
        == 0
    )
    with WriterLock(store):
        started = time.monotonic()
        result = runner.invoke(app, ["index", str(photos), "--store", str(store)])
    assert result.exit_code == 3
    assert f"pid {os.getpid()}" in result.output
    assert time.monotonic() - started < 20
    assert runner.invoke(app, ["index", str(photos), "--store", str(store)]).exit_code == 0


def test_queries_during_indexing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(60):
        random_image(photos / f"{i:03d}.jpg", i, size=(320, 240))
    store = tmp_path / "store"
    first_cli, env = index_command(store, photos / "000.jpg")
    cli, _ = index_command(store, photos)
    first = subprocess.run(first_cli, cwd=ROOT, env=env, capture_output=True)
    assert first.returncode == 0, first.stderr
    writer = subprocess.Popen(
        cli, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen: list[int] = []
    refused = None
    try:
        with Engine(Settings(store=store)) as engine:
            while writer.poll() is None:
                hits = engine.search("anything", limit=100)
                assert len({h.id for h in hits}) == len(hits)
                seen.append(len(hits))
                if refused is None and len(hits) > 1:
                    # Decoding is slowed down, so the writer is still busy when this one starts.
                    refused = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True)
                time.sleep(0.05)
            assert writer.wait() == 0
            assert len(engine.search("anything", limit=100)) == 60
    finally:
        if writer.poll() is None:
            writer.send_signal(signal.SIGKILL)
    assert seen == sorted(seen), "a query saw the store go backwards"
    assert any(1 < n < 60 for n in seen), seen
    assert refused is not None and refused.returncode == 3, refused
    assert "Another xsearch process is writing" in refused.stderr


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_keeps_progress_and_says_how_to_resume(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(40):
        random_image(photos / f"{i:03d}.jpg", i, size=(320, 240))
    store = tmp_path / "store"
    cli, env = index_command(store, photos)
    proc = subprocess.Popen(
        cli,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell that starts the tests in the background ignores SIGINT, and a child
        # inherits that (Python then installs no KeyboardInterrupt handler): Ctrl-C as a
        # terminal delivers it is what is tested here.
        preexec_fn=_default_sigint,
    )
    db = store / "xsearch.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and media_rows(db) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command again" in stderr
    assert "Traceback" not in stderr
    kept = media_rows(db)
    assert kept >= 4
    again = subprocess.run(
        cli, cwd=ROOT, env={**env, "XSEARCH_TEST_SLOW_DECODE": "0"}, capture_output=True, text=True
    )
    assert again.returncode == 0
    assert f"{40 - kept} indexed" in again.stderr and f"{kept} unchanged" in again.stderr
