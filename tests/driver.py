"""Runs the xsearch CLI in a subprocess with the test model profiles registered.

Usage: python -m tests.driver index FOLDER --store S --model tiny-test
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

from tests.conftest import _register_tiny

_register_tiny()


def _slow_down(seconds: float) -> None:
    """Make each file take longer to decode, so tests can act while a run is in progress."""
    from xsearch import pipeline

    real = pipeline.decode_item

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return real(*args, **kwargs)

    pipeline.decode_item = slow


def _fault_on(spec: str) -> None:
    """Make the decoder fail for files whose name contains NAME: ``NAME:abort`` aborts the
    process (as a crashing native decoder does), ``NAME:kill`` SIGKILLs it (as the OOM
    killer does), ``NAME:raise`` raises an exception type no decoder is known for."""
    import signal

    from xsearch import pipeline

    real = pipeline.decode_image
    faults = dict(part.split(":", 1) for part in spec.split(","))

    class OddDecoderError(Exception):
        pass

    def faulty(path: bytes, **kwargs):  # type: ignore[no-untyped-def]
        for name, kind in faults.items():
            if name.encode() in os.path.basename(path):
                if kind == "abort":
                    os.abort()
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise OddDecoderError(f"no decoder expected this ({name})")
        return real(path, **kwargs)

    pipeline.decode_image = faulty


def media_rows(db: Path) -> int:
    """Files committed to a store's database; -1 when there is no readable database yet."""
    if not db.exists():
        return -1
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM media").fetchone()[0])
    except sqlite3.Error:
        return -1


def index_command(store: Path, *paths: Path, slow: float = 0.1) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run `xsearch index` on the tiny model in a subprocess."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "XSEARCH_TEST_SLOW_DECODE": str(slow)}
    argv = [sys.executable, "-m", "tests.driver", "index", *map(str, paths), "--store", str(store)]
    argv += ["--model", "tiny-test", "--workers", "0", "--batch-size", "2"]
    return argv, env


if os.environ.get("XSEARCH_TEST_SLOW_DECODE"):
    _slow_down(float(os.environ["XSEARCH_TEST_SLOW_DECODE"]))

if os.environ.get("XSEARCH_TEST_DECODER_FAULT"):
    _fault_on(os.environ["XSEARCH_TEST_DECODER_FAULT"])

if __name__ == "__main__":
    from xsearch.cli import main

    sys.argv[0] = "xsearch"
    main(sys.argv[1:])
