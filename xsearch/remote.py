"""Reusing a running ``xsearch serve`` from the command line.

A cold ``xsearch query`` imports torch and loads the model and the index: seconds. A server
that holds them already answers in milliseconds. So ``xsearch serve`` advertises itself in
``<store>/server.json`` (an :class:`Advert`, mode 0600, with a secret token), and
``xsearch query`` sends its query there (:func:`ask_server`) while the advert is current,
and searches in-process when it is not.

The answer carries everything the CLI prints: scores and times at full precision and the
exact path bytes (base64), so the table, ``--json`` and ``--paths`` come out byte for byte
as they would in-process. The CLI imports this module before it knows whether it needs
torch, so it uses only the standard library and the small ``config``, ``errors`` and
``hits`` modules.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .config import Settings
from .errors import XSearchError
from .hits import SearchHit, Segment
from .tags import Tag

__all__ = [
    "ADVERT_NAME",
    "CLI_QUERY_PATH",
    "TOKEN_HEADER",
    "Advert",
    "CliQuery",
    "ServerAnswer",
    "ServerQueryError",
    "answer_document",
    "ask_server",
    "error_document",
    "process_alive",
    "read_advert",
    "remove_advert",
    "settings_key",
    "write_advert",
]

#: The file in the store where a running server advertises itself.
ADVERT_NAME = "server.json"
#: The header that carries the advert's token.
TOKEN_HEADER = "X-XSearch-Token"
#: The endpoint that answers ``xsearch query``.
CLI_QUERY_PATH = "/api/cli-query"

# How long the CLI waits for a server to accept the connection (it is local and warm, so
# a slow accept means it is stuck), and then for its answer.
_CONNECT_TIMEOUT_S = 2.0
_ANSWER_TIMEOUT_S = 60.0
# A client connects here when the server listens on every address.
_LOOPBACK_FOR = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}

log = logging.getLogger(__name__)


# -- the advert ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Advert:
    """What ``<store>/server.json`` says about the server of a store."""

    # Process id of the server.
    pid: int
    # Where it listens: http://host:port
    url: str
    # The store it serves, as an absolute path with symbolic links resolved.
    store: str
    # The store's model profile.
    model: str
    # The xsearch version of the server; a CLI of another version does not use it.
    version: str
    # The secret that the CLI endpoint requires in the X-XSearch-Token header.
    token: str
    # When the server started, ISO 8601 in UTC.
    started: str
    # The settings that shape its answers (see settings_key).
    settings: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, doc: Any) -> Advert:
        """Raises ValueError when ``doc`` is not an advert."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = doc.get(f.name)
            wanted: type = int if f.name == "pid" else dict if f.name == "settings" else str
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise ValueError(f"{f.name} is missing or not a {wanted.__name__}")
            values[f.name] = value
        if not all(isinstance(v, str) for v in values["settings"].values()):
            raise ValueError("settings must map names to strings")
        return cls(**values)


def settings_key(settings: Settings) -> dict[str, str]:
    """The settings that make two engines answer a query alike: all but the store and
    where derived model files are cached (an int8 export is the same wherever it lies)."""
    return {
        f.name: str(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if f.name not in ("store", "cache_dir")
    }


def write_advert(store: Path, advert: Advert) -> Path:
    """Write ``<store>/server.json`` atomically, readable by its owner only."""
    target = store / ADVERT_NAME
    temporary = store / f".{ADVERT_NAME}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the file may be left from an earlier run of this pid
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(advert.to_json(), fh, indent=2)
            fh.write("\n")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def read_advert(store: Path) -> Advert | None:
    """The advert in ``store``; None when there is none or it cannot be read."""
    try:
        with open(store / ADVERT_NAME, encoding="utf-8") as fh:
            return Advert.from_json(json.load(fh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.info("ignoring %s: %s", store / ADVERT_NAME, exc)
        return None


def remove_advert(store: Path, advert: Advert) -> None:
    """Remove ``<store>/server.json`` if it is still this advert (another server may have
    replaced it since)."""
    current = read_advert(store)
    if current is not None and current.pid == advert.pid and current.token == advert.token:
        with contextlib.suppress(OSError):
            os.unlink(store / ADVERT_NAME)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        # os.kill would end the process there; a dead server shows up as a refused connection.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the request ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CliQuery:
    """One ``xsearch query`` as the CLI sends it to a server: what the user typed, plus
    where the files it names are, since the server runs in another folder."""

    # The query text (the words of the command line joined by spaces).
    text: str
    # The --image paths, as typed.
    images: tuple[str, ...] = ()
    # Every image path of the query (in the text or --image) as typed, mapped to how the
    # CLI shows it (~ expanded) and to the absolute path that the server reads.
    image_paths: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    limit: int = 10
    media_type: str | None = None
    min_score: float | None = None
    frames: bool = False
    # --under folders, absolute.
    under: tuple[str, ...] = ()
    after: str | None = None
    before: str | None = None
    hybrid: bool = False
    collapse: bool = False

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["image_paths"] = {k: list(v) for k, v in self.image_paths.items()}
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> CliQuery:
        """Raises ValueError naming the first field that is missing or of the wrong type."""
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object")
        paths = doc.get("image_paths", {})
        if not isinstance(paths, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(p, str) for p in v)
            for v in paths.values()
        ):
            raise ValueError("image_paths: expected an object of [shown, absolute] pairs")
        return cls(
            text=_typed(doc, "text", str),
            images=tuple(_strings(doc, "images")),
            image_paths={k: (v[0], v[1]) for k, v in paths.items()},
            limit=_typed(doc, "limit", int),
            media_type=_typed(doc, "media_type", str, optional=True),
            min_score=_typed(doc, "min_score", float, optional=True),
            frames=_typed(doc, "frames", bool),
            under=tuple(_strings(doc, "under")),
            after=_typed(doc, "after", str, optional=True),
            before=_typed(doc, "before", str, optional=True),
            hybrid=_typed(doc, "hybrid", bool),
            collapse=_typed(doc, "collapse", bool),
        )


def _typed(doc: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value: Any = doc.get(name)
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _strings(doc: dict[str, Any], name: str) -> list[str]:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: expected a list of strings")
    return value


# -- the answer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerAnswer:
    """The hits of a query answered by a server, and the notices the CLI should print."""

    hits: list[SearchHit]
    notices: list[str]
    url: str


class ServerQueryError(XSearchError):
    """A server ran the query and it failed: the message and exit code are the ones the
    query would have failed with in-process; ``kind`` names the original error class."""

    def __init__(self, message: str, kind: str, exit_code: int) -> None:
        self.kind = kind
        self.exit_code = exit_code
        super().__init__(message)


def _hit_to_json(hit: SearchHit) -> dict[str, Any]:
    doc = dataclasses.asdict(hit)
    doc["path_bytes"] = base64.b64encode(hit.path_bytes).decode("ascii")
    doc["segments"] = [[s.start, s.end, s.best, s.score] for s in hit.segments]
    doc["duplicates"] = list(hit.duplicates)
    return doc


def _hit_from_json(doc: dict[str, Any]) -> SearchHit:
    return SearchHit(
        **{
            **doc,
            "path_bytes": base64.b64decode(doc["path_bytes"], validate=True),
            "segments": tuple(Segment(*s) for s in doc["segments"]),
            "duplicates": tuple(doc["duplicates"]),
            "tags": tuple(Tag(**t) for t in doc.get("tags", ())),
        }
    )


def answer_document(hits: Sequence[SearchHit], notices: Sequence[str]) -> dict[str, Any]:
    """The server's answer to a :class:`CliQuery` (hits with every field, exact bytes)."""
    return {"hits": [_hit_to_json(h) for h in hits], "notices": list(notices)}


def error_document(exc: XSearchError) -> dict[str, Any]:
    """The server's answer when a :class:`CliQuery` fails."""
    return {"error": str(exc), "kind": type(exc).__name__, "exit_code": exc.exit_code}


# -- the client ------------------------------------------------------------------------------


def ask_server(settings: Settings, query: CliQuery) -> ServerAnswer | None:
    """The answer of the server advertised in the store, or None when there is no usable
    one (the caller then searches in-process). A stale advert (its process is gone) is
    removed. Raises :class:`ServerQueryError` when the server ran the query and it failed.
    """
    advert = read_advert(settings.store)
    if advert is None:
        return None
    problem = _unusable(advert, settings)
    if problem:
        log.info("not using the server at %s: %s", advert.url, problem)
        return None
    # Imported only when a server is there to ask (0.02 s of every in-process query).
    import http.client

    try:
        status, body = _post(advert, query)
        doc = json.loads(body)
        if status == 200:
            hits = [_hit_from_json(h) for h in doc["hits"]]
            answer = ServerAnswer(hits, [str(n) for n in doc["notices"]], advert.url)
            log.info("answered by the server at %s (pid %d)", advert.url, advert.pid)
            return answer
        if isinstance(doc, dict) and {"error", "kind", "exit_code"} <= doc.keys():
            log.info("answered by the server at %s (pid %d)", advert.url, advert.pid)
            raise ServerQueryError(str(doc["error"]), str(doc["kind"]), int(doc["exit_code"]))
        problem = f"it answered HTTP {status}"
    except (OSError, http.client.HTTPException) as exc:
        problem = f"cannot talk to it ({exc or type(exc).__name__})"
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"its answer is malformed ({exc})"
    log.info("not using the server at %s: %s", advert.url, problem)
    return None


def _unusable(advert: Advert, settings: Settings) -> str | None:
    """Why the advertised server must not answer for these settings; None if it may."""
    if not process_alive(advert.pid):
        remove_advert(settings.store, advert)
        return f"its process {advert.pid} is gone (removed the stale {ADVERT_NAME})"
    if advert.version != __version__:
        return f"it runs xsearch {advert.version}, this is {__version__}"
    if advert.store != str(settings.store.resolve()):
        return f"it serves {advert.store}"
    mine = settings_key(settings)
    for name in sorted(mine.keys() | advert.settings.keys()):
        if name == "device" and mine.get(name) == "auto":
            continue
        if mine.get(name) != advert.settings.get(name):
            return f"its {name} is {advert.settings.get(name)}, not {mine.get(name)}"
    return None


def _post(advert: Advert, query: CliQuery) -> tuple[int, bytes]:
    import http.client

    parts = urlsplit(advert.url)
    host = parts.hostname or ""
    conn = http.client.HTTPConnection(
        _LOOPBACK_FOR.get(host, host), parts.port, timeout=_CONNECT_TIMEOUT_S
    )
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(_ANSWER_TIMEOUT_S)
        # ASCII JSON: path arguments that are not UTF-8 travel as surrogate escapes.
        body = json.dumps(query.to_json()).encode("ascii")
        headers = {TOKEN_HEADER: advert.token, "Content-Type": "application/json"}
        conn.request("POST", CLI_QUERY_PATH, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
