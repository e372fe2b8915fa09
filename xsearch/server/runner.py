"""Running the server: listen, advertise to the command line, stop on a signal or when idle.

While it serves, ``<store>/server.json`` tells ``xsearch query`` where it is and the token
it must show (see :mod:`xsearch.remote`). The file is written once the socket listens, so a
CLI that reads it can connect at once, and removed on the way out: after Ctrl-C, SIGTERM or
an idle timeout. A server that is killed leaves it behind; the CLI sees that its process is
gone and removes it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

from .. import __version__
from ..engine import Engine
from ..errors import ConfigError
from ..remote import Advert, remove_advert, settings_key, write_advert
from .app import ServerStats, server_stats

__all__ = ["new_token", "run_server"]


def new_token() -> str:
    """A fresh secret for ServerOptions.cli_token."""
    return secrets.token_urlsafe(32)


class _SigtermError(Exception):
    """SIGTERM arrived: unwind (removing the advert), then die of the signal."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _SigtermError


def run_server(
    app: FastAPI,
    engine: Engine,
    *,
    host: str,
    port: int,
    token: str,
    idle_exit: float | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> bool:
    """Serve ``app`` (made for ``engine`` with ``cli_token=token``) on ``host:port``.

    ``port`` 0 picks a free port; ``on_listening`` gets the URL once the socket listens.
    Runs until Ctrl-C, SIGTERM, or ``idle_exit`` seconds without a request. Returns True
    when it stopped for being idle.
    """
    sock = _listen(host, port)
    url = _url(host, sock.getsockname()[1])
    config = uvicorn.Config(app, host=host, port=sock.getsockname()[1], log_level="warning")
    server = uvicorn.Server(config)
    advert = Advert(
        pid=os.getpid(),
        url=url,
        store=str(engine.location.resolve()),
        model=engine.profile_name(),
        version=__version__,
        token=token,
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        settings=settings_key(engine.settings),
    )
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    watch = _IdleWatch(server, server_stats(app), idle_exit) if idle_exit else None
    try:
        write_advert(engine.location, advert)
        if on_listening is not None:
            on_listening(url)
        if watch is not None:
            watch.start()
        server.run(sockets=[sock])
    except _SigtermError:
        terminated = True
    else:
        terminated = False
    finally:
        if watch is not None:
            watch.stop()
        remove_advert(engine.location, advert)
        sock.close()
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if terminated:
        signal.raise_signal(signal.SIGTERM)
    return watch is not None and watch.fired


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host} port {port}: {exc.strerror or exc}. Choose another "
            "--port (0 picks a free one), or stop the program that uses this one."
        ) from exc
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _IdleWatch:
    """Asks the server to stop once no request has come for ``seconds``."""

    def __init__(self, server: uvicorn.Server, stats: ServerStats, seconds: float) -> None:
        self.server = server
        self.stats = stats
        self.seconds = seconds
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xsearch-idle-exit", daemon=True)

    def start(self) -> None:
        self.stats.last_request = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.seconds / 4)):
            if time.monotonic() - self.stats.last_request >= self.seconds:
                self.fired = True
                self.server.should_exit = True
                return
