"""What this CPU can do, read from ``/proc/cpuinfo`` (Linux) once; needs no torch."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

__all__ = ["INT8_DOT_FLAGS", "cpu_has_any", "cpu_int8_flags", "cpu_model"]

#: Flags of the x86 instructions that sum u8 x s8 products in 32 bits (VNNI, AMX): without
#: them ONNX Runtime's int8 kernels sum pairs of products in saturating 16 bits.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
# The flags among which ONNX Runtime picks its int8 matrix kernels (x86 and ARM).
_INT8_KERNEL_FLAGS = (*INT8_DOT_FLAGS, "avx512bw", "avx2", "i8mm", "asimddp")


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


def cpu_int8_flags() -> tuple[str, ...]:
    """The flags this CPU lists of those that choose ONNX Runtime's int8 kernels, in a fixed
    order (none where there is no /proc/cpuinfo)."""
    info = _cpuinfo()
    words = set(info.split()) if info is not None else set()
    return tuple(flag for flag in _INT8_KERNEL_FLAGS if flag in words)
