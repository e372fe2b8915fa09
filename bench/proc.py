"""Running a command while sampling the memory of its whole process tree."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsearch.remote import read_advert

_ROOT = Path(__file__).resolve().parent.parent
# The CLI as a user starts it (the console script runs exactly this).
XSEARCH = [sys.executable, "-c", "from xsearch.cli import main; main()"]


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages of forked workers are counted once in total."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_pss_mb(pid: int) -> float:
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        total += _pss_kb(p)
        todo += _children(p)
    return total / 1024


def run(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> Measured:
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss_mb(proc.pid))
            # smaps_rollup walks every mapping: sampling faster costs the run real CPU.
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
    return Measured(time.perf_counter() - started, peak, proc.returncode, stdout, stderr)


def run_child(*args: str) -> tuple[Measured, dict[str, Any]]:
    """`python -m bench.child ARGS` from the repository root: its measurement and its JSON."""
    import json
    import sys

    m = run([sys.executable, "-m", "bench.child", *args], cwd=Path(__file__).parent.parent)
    if m.returncode != 0:
        raise RuntimeError(f"bench.child {args[0]} failed: {m.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(m.stdout.strip().splitlines()[-1])
    return m, doc


def start_server(
    store: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """`xsearch serve` on a free port; returns once it has advertised itself."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [*XSEARCH, "serve", "--store", str(store), "--port", "0"],
        cwd=_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while time.perf_counter() - started < 600:
        advert = read_advert(store)
        if advert is not None and advert.pid == server.pid:
            return server, time.perf_counter() - started
        if server.poll() is not None:
            assert server.stderr is not None
            raise RuntimeError(f"xsearch serve exited: {server.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("xsearch serve did not start within 10 minutes")
