"""What this CPU can do, read from ``/proc/cpuinfo`` (Linux) once; needs no torch."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

__all__ = ["cpu_has_any", "cpu_model"]


@lru_cache(maxsize=1)
def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None


def cpu_has_any(*flags: str) -> bool | None:
    """Whether the CPU lists any of ``flags``; None where there is no /proc/cpuinfo."""
    info = _cpuinfo()
    if info is None:
        return None
    words = set(info.split())
    return any(flag in words for flag in flags)


def cpu_model() -> str:
    """The CPU's model name, or the platform's description of the processor."""
    for line in (_cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
