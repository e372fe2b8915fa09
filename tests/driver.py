"""Runs the xsearch CLI in a subprocess with the test model profiles registered.

Usage: python -m tests.driver index FOLDER --store S --model tiny-test
"""

from __future__ import annotations

import os
import sys
import time

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


if os.environ.get("XSEARCH_TEST_SLOW_DECODE"):
    _slow_down(float(os.environ["XSEARCH_TEST_SLOW_DECODE"]))

if __name__ == "__main__":
    from xsearch.cli import main

    sys.argv[0] = "xsearch"
    main(sys.argv[1:])
