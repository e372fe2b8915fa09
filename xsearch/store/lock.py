"""One writer per store: an advisory lock file that names its holder."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from ..errors import StoreBusyError

__all__ = ["WriterLock"]

LOCK_NAME = "writer.lock"


class WriterLock:
    """A non-blocking exclusive lock; the kernel frees it when the process dies, even by SIGKILL."""

    def __init__(self, location: Path) -> None:
        self.path = location / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise StoreBusyError(self.path.parent, holder) from None
        os.ftruncate(fd, 0)
        cmd = " ".join(sys.argv[:3])
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {cmd}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
