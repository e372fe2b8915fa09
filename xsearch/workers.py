"""Decoding in worker processes that may die: a crashed or stuck decoder costs one file.

Native decoders (libjpeg, libtiff, libheif, libav) can segfault, abort, hang inside one C
call or be killed by the kernel for memory. None of that may end a run, so files are
decoded in child processes, one file per process at a time, and the parent watches them:

- a worker that dies takes only the file it held: that file is ``crashed-decoder`` and a
  new worker takes its place;
- a worker past its file's time limit (plus a grace period) is killed: the in-worker
  ``SIGALRM`` limit cannot interrupt a decoder stuck in native code, this can;
- the kernel's OOM killer is told to prefer a worker to the parent.

Why written here, not taken from a library (it is ~150 lines): torch's DataLoader ends the
whole iteration when a worker dies ("worker exited unexpectedly"); the standard
``ProcessPoolExecutor`` turns one death into ``BrokenProcessPool`` for every pending task
and cannot say which task killed it; pebble's workers share one task pipe, so a worker
that dies before the parent reads its acknowledgement leaves the task unattributed ("All
workers expired" aborts every task), and one that dies holding the channel lock stalls the
pool (noxdafox/pebble#163). Here every worker has its own pipe and holds one file, so the
parent always knows which file a dead worker had. Ray Data (``xsearch index --ray``) has
its own retries and maps :func:`xsearch.pipeline.decode_item` directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from . import pipeline
from .pipeline import Decoded, DecodeOptions, Preprocess, WorkItem

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

__all__ = ["DecodeWorkers", "iter_decoded"]

# Seconds a worker may run past the file's own limit before it is killed. The in-worker
# alarm fires first wherever Python code runs; this catches a decoder stuck in C.
GRACE_S = 5.0
# Files decoded ahead of the consumer, per worker (as torch's DataLoader prefetch_factor).
AHEAD_PER_WORKER = 4


@dataclass(frozen=True)
class _Limit:
    """Sent by a worker once it knows how long its file's decoding may take."""

    seconds: float


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    item: WorkItem | None = None
    deadline: float | None = None
    # The seconds the file was given: --file-timeout, plus a video's allowance for its length.
    limit: float = 0.0


def iter_decoded(
    items: Sequence[WorkItem],
    preprocess: Preprocess,
    opts: DecodeOptions,
    *,
    workers: int,
) -> Iterator[Decoded]:
    """Decode ``items`` in order, in ``workers`` child processes (0: in this process).

    With 0 workers nothing isolates a crashing decoder from the caller; it is for debugging
    and for callers that isolate files themselves.
    """
    if workers == 0:
        for item in items:
            yield pipeline.decode_item(item, preprocess, opts)
        return
    with DecodeWorkers(preprocess, opts, workers) as pool:
        yield from pool.decode(items)


class DecodeWorkers:
    """``count`` decoding processes, replaced whenever one dies or is stopped."""

    def __init__(self, preprocess: Preprocess, opts: DecodeOptions, count: int) -> None:
        if count < 1:
            raise ValueError(f"DecodeWorkers needs at least one worker, not {count}")
        self._preprocess = preprocess
        self._opts = opts
        self._count = count
        # fork: the workers inherit the preprocess transform (and any test's decoder hook)
        # without pickling it. Elsewhere spawn, which needs a picklable transform.
        self._forks = sys.platform.startswith("linux")
        self._context: Any = multiprocessing.get_context("fork" if self._forks else "spawn")
        self._workers: list[_Worker] = []
        self.replaced = 0  # workers that died or were stopped and were replaced

    def __enter__(self) -> DecodeWorkers:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def decode(self, items: Sequence[WorkItem]) -> Iterator[Decoded]:
        """Yield one :class:`Decoded` per item, in the order given; never raises for a file."""
        todo = deque(items)
        done: dict[int, Decoded] = {}
        window = self._count * AHEAD_PER_WORKER
        for item in items:
            while item.key not in done:
                self._assign(todo, window - len(done))
                self._collect(done)
            yield done.pop(item.key)

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones are killed."""
        for worker in self._workers:
            if worker.item is None:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
            else:
                worker.process.kill()
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    # -- the parent's side -----------------------------------------------------------------

    def _assign(self, todo: deque[WorkItem], room: int) -> None:
        """Hand the next files to idle workers, keeping at most ``room`` unconsumed results."""
        while len(self._workers) < self._count:
            self._workers.append(self._spawn())
        busy = sum(w.item is not None for w in self._workers)
        for index, worker in enumerate(self._workers):
            if not todo or busy >= room:
                return
            if worker.item is not None:
                continue
            item = todo.popleft()
            try:
                worker.conn.send(item)
            except OSError:
                # It died while idle (the OOM killer picks the largest process, not the
                # busiest): this file was never started, so it goes to a fresh worker.
                todo.appendleft(item)
                self._replace(index)
                continue
            worker.item = item
            worker.deadline = self._deadline(self._opts.timeout)
            worker.limit = self._opts.timeout
            busy += 1

    def _collect(self, done: dict[int, Decoded]) -> None:
        """Wait for a result, a death or a deadline, and record what happened."""
        busy = [(i, w) for i, w in enumerate(self._workers) if w.item is not None]
        if not busy:
            return
        deadlines = [w.deadline for _, w in busy if w.deadline is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ready = set(
            wait([w.conn for _, w in busy] + [w.process.sentinel for _, w in busy], timeout)
        )
        now = time.monotonic()
        for index, worker in busy:
            item = worker.item
            assert item is not None
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    done[item.key] = self._crashed(index, item)
                    continue
                if isinstance(message, _Limit):
                    worker.deadline = self._deadline(message.seconds)
                    worker.limit = message.seconds
                    continue
                done[item.key] = _as_tensors_again(message)
                worker.item, worker.deadline = None, None
            elif worker.process.sentinel in ready:
                done[item.key] = self._crashed(index, item)
            elif worker.deadline is not None and now >= worker.deadline:
                done[item.key] = _failed(item, "timed-out", self._timeout_detail(worker.limit))
                self._replace(index)

    def _crashed(self, index: int, item: WorkItem) -> Decoded:
        process = self._workers[index].process
        process.join(timeout=5)
        detail = f"the decoder's process {_describe_exit(process.exitcode)} while reading it"
        self._replace(index)
        return _failed(item, "crashed-decoder", detail)

    def _replace(self, index: int) -> None:
        old = self._workers[index]
        if old.process.is_alive():
            old.process.kill()
        old.process.join(timeout=5)
        old.conn.close()
        self._workers[index] = self._spawn()
        self.replaced += 1

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe(duplex=True)
        # A forked child holds copies of the parent's ends of every pipe (its own and the
        # other workers'): it closes them, so that the parent's death is an EOF it sees.
        parent_ends = [parent, *(w.conn for w in self._workers)] if self._forks else []
        process = self._context.Process(
            target=_serve,
            args=(child, self._preprocess, self._opts, os.getpid(), parent_ends),
            name="xsearch-decode",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def _deadline(self, limit: float) -> float | None:
        return None if self._opts.timeout <= 0 else time.monotonic() + limit + GRACE_S

    def _timeout_detail(self, limit: float) -> str:
        given = (
            f"{limit:g} s"
            if limit <= self._opts.timeout
            else (
                f"{limit:.0f} s ({self._opts.timeout:g} s and an allowance for the video's length)"
            )
        )
        return (
            f"the decoder was stopped after more than {given} (raise the limit with --file-timeout)"
        )


def _failed(item: WorkItem, reason: str, detail: str) -> Decoded:
    return Decoded(key=item.key, path=item.path, error=(reason, detail))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = {
            "SIGSEGV": " (a segmentation fault)",
            "SIGABRT": " (the decoder aborted)",
            "SIGKILL": " (killed, most often for using too much memory)",
            "SIGBUS": " (a bus error)",
        }.get(name, "")
        return f"died of {name}{why}"
    return f"exited with status {code}"


# -- the worker's side ---------------------------------------------------------------------


def _serve(
    conn: Connection,
    preprocess: Preprocess,
    opts: DecodeOptions,
    parent_pid: int,
    parent_ends: list[Connection],
) -> None:
    """A worker's life: decode the files it is sent, one at a time, until told to stop."""
    for end in parent_ends:
        end.close()
    _die_with_the_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent reports a crash as the file's failure; a dump of this process's stack on
    # the terminal (where faulthandler is on) would only look like xsearch itself crashed.
    faulthandler.disable()
    _volunteer_for_the_oom_killer()
    _one_thread_for_torch()

    def announce(seconds: float) -> None:
        conn.send(_Limit(seconds))

    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        result = pipeline.decode_item(item, preprocess, opts, on_limit=announce)
        try:
            conn.send(_as_plain_arrays(result))
        except (EOFError, OSError):
            return
        except Exception as exc:  # an unpicklable result fails this file alone
            conn.send(_failed(item, "undecodable", pipeline.failure_of(exc, opts)[1]))


def _as_plain_arrays(result: Decoded) -> Decoded:
    """A torch tensor is sent as a numpy array: torch pickles a tensor as a shared-memory
    handle whose file descriptor this process serves, so a worker that died after sending
    would turn a good file into a crash, and every result would hold a descriptor open."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(result.pixels, torch.Tensor):
        return result
    return replace(result, pixels=_TensorAsArray(result.pixels.numpy()))


def _as_tensors_again(result: Decoded) -> Decoded:
    if not isinstance(result.pixels, _TensorAsArray):
        return result
    import torch  # the preprocess that made the tensor is torch's, so it is imported

    return replace(result, pixels=torch.from_numpy(result.pixels.array))


@dataclass(frozen=True)
class _TensorAsArray:
    """Pixels that were a torch tensor in the worker, on their way to the parent."""

    array: Any


def _die_with_the_parent(parent_pid: int) -> None:
    """A worker stuck in native code never reads the EOF of a parent that was SIGKILLed:
    on Linux the kernel kills it too (PR_SET_PDEATHSIG), so no decoder outlives a run.

    The signal follows the thread that forked the worker, which is the thread iterating
    the decode, and that thread closes the workers before it ends.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(0)


def _volunteer_for_the_oom_killer() -> None:
    """Out of memory, the kernel kills the process with the highest score: let it be a
    worker (which costs one file) rather than the parent (which costs the run)."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")


def _one_thread_for_torch() -> None:
    """A worker decodes one file at a time; torch's own thread pool would only contend."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
