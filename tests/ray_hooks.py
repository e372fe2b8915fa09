"""Run in every Ray worker of the Ray tests (``worker_process_setup_hook``): registers the
test model profiles and makes the decoder misbehave for files named for it.

``boom`` in a file's name aborts the decoding process (as a crashing native decoder does);
``slow`` makes its decoding take 0.1 s longer, so that a test can act while a run is going.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.conftest import _register_tiny

SLOW_S = 0.1


def setup() -> None:
    _register_tiny()
    from xsearch import pipeline

    real = pipeline.decode_image

    def misbehaving(path: bytes, **kwargs: Any) -> Any:
        name = os.path.basename(path)
        if b"boom" in name:
            os.abort()
        if b"slow" in name:
            time.sleep(SLOW_S)
        return real(path, **kwargs)

    pipeline.decode_image = misbehaving
