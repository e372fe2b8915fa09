"""The HTTP API and web gallery: a thin FastAPI layer over one warm :class:`~xsearch.Engine`.

Everything a client names is a query or a file *id*; no endpoint takes a path to read, so
only files that are in the index can ever be served. Errors come back as JSON
``{"error": message, "kind": class name}`` (plus ``position`` for query syntax errors).
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import os
import stat
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine
from ..errors import (
    ConfigError,
    MediaError,
    QueryError,
    QueryParseError,
    StoreNotFoundError,
    XSearchError,
)
from ..filters import make_filters
from ..hits import results_document
from ..querylang import ImageData, build_query, describe_query
from ..remote import CLI_QUERY_PATH, TOKEN_HEADER, CliQuery, answer_document, error_document
from ..store.records import HitRow
from .cli_query import run_cli_query

__all__ = ["ServerOptions", "ServerStats", "create_app", "server_stats"]


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Limits and defaults of the server."""

    # Largest request body (an uploaded query image), in bytes.
    max_upload_bytes: int = 20 * 1024 * 1024
    # Most results one search may ask for.
    max_limit: int = 500
    # Thumbnail size (long side, pixels) when the client does not ask for one.
    thumbnail_size: int = 320
    # The secret that POST /api/cli-query requires (the token of <store>/server.json);
    # None leaves that endpoint out.
    cli_token: str | None = None


@dataclass(kw_only=True)
class ServerStats:
    """What the server has done so far (shown in /api/status)."""

    # Queries answered for the command line (POST /api/cli-query).
    cli_queries: int = 0
    # time.monotonic() of the latest request, or of the start.
    last_request: float = field(default_factory=time.monotonic)


def server_stats(app: FastAPI) -> ServerStats:
    """The stats of an app made by :func:`create_app`."""
    stats: ServerStats = app.state.stats
    return stats


class _BodyLimit:
    """Answers 413 as soon as a request body grows past the limit, before it is parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit_mb = self.max_bytes / (1024 * 1024)
        response = _error(
            413, f"The upload is larger than the server's limit of {limit_mb:g} MiB.", "TooLarge"
        )
        await response(scope, receive, send)


class _BodyTooLargeError(Exception):
    pass


def _error(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind, **extra}, status_code=status)


def _status_of(exc: XSearchError) -> int:
    if isinstance(exc, QueryError | ConfigError):
        return 400
    if isinstance(exc, MediaError):
        return 404
    if isinstance(exc, StoreNotFoundError):
        return 503
    return 500


@dataclass(frozen=True)
class _SearchParams:
    q: str
    limit: int
    type: str | None
    under: list[str]
    after: str | None
    before: str | None
    min_score: float | None
    hybrid: bool
    collapse: bool
    frames: bool


def _search_params(
    q: Annotated[str, Param(description="Query text in the xsearch query language.")] = "",
    limit: Annotated[int, Param(ge=1, description="How many results.")] = 20,
    type: Annotated[str | None, Param(pattern="^(image|video)?$")] = None,
    under: Annotated[list[str] | None, Param(description="Only files below this folder.")] = None,
    after: Annotated[str | None, Param(description="2023, 2023-05, 2023-05-17[T14:30]")] = None,
    before: Annotated[str | None, Param(description="Same forms as after.")] = None,
    min_score: Annotated[float | None, Param(description="Drop results below.")] = None,
    hybrid: Annotated[bool, Param(description="Fuse keyword matches on names.")] = False,
    collapse: Annotated[bool, Param(description="Fold near-duplicates.")] = False,
    frames: Annotated[bool, Param(description="One result per video frame.")] = False,
) -> _SearchParams:
    return _SearchParams(
        q, limit, type, under or [], after, before, min_score, hybrid, collapse, frames
    )


SearchArgs = Annotated[_SearchParams, Depends(_search_params)]


def create_app(engine: Engine, options: ServerOptions | None = None) -> FastAPI:
    """The app serving ``engine``'s store. The caller owns (and closes) the engine."""
    opts = options or ServerOptions()
    app = FastAPI(
        title="xsearch",
        summary="Search photos and videos by describing them, or by showing a picture.",
        version=_version(),
    )
    app.add_middleware(_BodyLimit, max_bytes=opts.max_upload_bytes)
    stats = app.state.stats = ServerStats()
    static = resources.files("xsearch.server") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(XSearchError)
    async def on_xsearch_error(_request: Request, exc: XSearchError) -> JSONResponse:
        extra = {"position": exc.position} if isinstance(exc, QueryParseError) else {}
        return _error(_status_of(exc), str(exc), type(exc).__name__, **extra)

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "HTTPError")

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, f"Invalid request: {problems}", "InvalidRequest")

    @app.middleware("http")
    async def no_sniffing(request: Request, call_next: Any) -> Response:
        stats.last_request = time.monotonic()
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        stats.last_request = time.monotonic()
        return response

    def run(params: _SearchParams, upload: ImageData | None = None) -> dict[str, Any]:
        if params.limit > opts.max_limit:
            raise QueryError(f"limit may be at most {opts.max_limit}, not {params.limit}.")
        query = build_query(params.q, [upload] if upload else [], allow_paths=False)
        filters = make_filters(
            media_type=params.type,
            under=params.under,
            after=params.after,
            before=params.before,
            min_score=params.min_score,
        )
        hits = engine.search(
            query,
            limit=params.limit,
            filters=filters,
            hybrid=params.hybrid,
            collapse=params.collapse,
            frames=params.frames,
        )
        return results_document(describe_query(query), hits)

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html")

    @app.get("/api/search", summary="Search with query text")
    def search(params: SearchArgs) -> dict[str, Any]:
        """The same JSON as ``xsearch query --json``: ``{"query", "results": [...]}``."""
        return run(params)

    @app.post("/api/search", summary="Search with an uploaded image (plus optional text)")
    async def search_by_image(
        params: SearchArgs, image: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        data = await image.read()
        if not data:
            raise QueryError("The uploaded image is empty.")
        upload = ImageData(data, label=image.filename or "uploaded image")
        return await run_in_threadpool(run, params, upload)

    @app.get("/api/media/{media_id}", summary="What the store knows about one file")
    def media_info(media_id: int) -> dict[str, Any]:
        return _describe(_media(engine, media_id))

    @app.get(
        "/api/media/{media_id}/thumbnail",
        summary="A JPEG thumbnail (videos: the frame at t seconds)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(
        media_id: int,
        size: Annotated[int, Param(ge=32, le=1024)] = opts.thumbnail_size,
        t: Annotated[float | None, Param(ge=0)] = None,
    ) -> Response:
        _media(engine, media_id)
        data = engine.thumbnail(media_id, size=size, t=t)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get(
        "/api/media/{media_id}/file",
        summary="The file itself; supports HTTP range requests (video seeking)",
        response_class=FileResponse,
    )
    def media_file(media_id: int) -> FileResponse:
        media = _media(engine, media_id)
        path = os.fsdecode(media.path)
        try:
            is_file = stat.S_ISREG(os.stat(media.path).st_mode)
        except OSError:
            is_file = False
        if not is_file:
            raise MediaError(
                media.display_path, "missing", "the file is no longer there; index again"
            )
        mime = mimetypes.guess_type(media.display_path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=mime, content_disposition_type="inline")

    @app.get("/api/tags", summary="The tags of the store, or below a folder, with file counts")
    def tags(
        under: Annotated[
            str | None, Param(description="Only files at or below this folder (or file).")
        ] = None,
        lang: Annotated[str | None, Param(pattern="^(en|zh)?$")] = None,
        files: Annotated[bool, Param(description="Also list every file with its tags.")] = False,
        limit: Annotated[int, Param(ge=1, le=10_000, description="Most tags counted.")] = 200,
    ) -> dict[str, Any]:
        """``{"counts": [{"key", "lang", "label", "files"}], "files": [...]}``, most
        frequent tag first; ``files`` only when asked for. A path only filters, it is
        never read."""
        listing = engine.tags(under or None)
        counts = [c for c in listing.counts if not lang or c[1] == lang][:limit]
        doc: dict[str, Any] = {
            "counts": [{"key": k, "lang": la, "label": lb, "files": n} for k, la, lb, n in counts],
            "tagged_files": sum(1 for f in listing.files if f.tags),
            "total_files": len(listing.files),
        }
        if files:
            doc["files"] = [f.to_json() for f in listing.files]
        return doc

    @app.get("/api/status", summary="What the store holds, and which model serves it")
    def status() -> dict[str, Any]:
        return {
            **engine.info().to_json(),
            "version": _version(),
            "cli_queries": stats.cli_queries,
        }

    if opts.cli_token is not None:
        _add_cli_query(app, engine, opts.cli_token, stats)
    return app


def _add_cli_query(app: FastAPI, engine: Engine, token: str, stats: ServerStats) -> None:
    """POST /api/cli-query: ``xsearch query`` run here. It may read any image path the
    caller names, so it answers only callers that show the token of server.json."""

    def answer(request: CliQuery) -> Response:
        before = len(engine.notices)
        try:
            hits = run_cli_query(engine, request)
        except XSearchError as exc:
            doc = error_document(exc)
            if isinstance(exc, QueryParseError):
                doc["position"] = exc.position
            return _ascii_json(_status_of(exc), doc)
        return _ascii_json(200, answer_document(hits, engine.notices[before:]))

    @app.post(CLI_QUERY_PATH, include_in_schema=False)
    async def cli_query(request: Request) -> Response:
        shown = request.headers.get(TOKEN_HEADER)
        if not shown:
            raise HTTPException(401, f"This endpoint needs the {TOKEN_HEADER} header.")
        if not hmac.compare_digest(shown.encode(), token.encode()):
            raise HTTPException(403, f"Wrong {TOKEN_HEADER}.")
        try:
            parsed = CliQuery.from_json(json.loads(await request.body()))
        except ValueError as exc:
            return _error(422, f"Invalid request: {exc}", "InvalidRequest")
        stats.cli_queries += 1
        return await run_in_threadpool(answer, parsed)


def _ascii_json(status: int, doc: dict[str, Any]) -> Response:
    # ASCII JSON keeps path text that is not UTF-8 (surrogate escapes) intact.
    return Response(json.dumps(doc).encode("ascii"), status, media_type="application/json")


def _media(engine: Engine, media_id: int) -> HitRow:
    media = engine.media(media_id)
    if media is None:
        raise HTTPException(404, f"There is no file with id {media_id} in the store.")
    return media


def _describe(media: HitRow) -> dict[str, Any]:
    base = f"/api/media/{media.media_id}"
    return {
        "id": media.media_id,
        "path": media.display_path,
        "media_type": media.media_type,
        "width": media.width,
        "height": media.height,
        "duration": media.duration,
        "captured_at": media.captured_at,
        "mtime": media.mtime_ns / 1e9,
        "size": media.size,
        "file": f"{base}/file",
        "thumbnail": f"{base}/thumbnail",
    }


def _version() -> str:
    from .. import __version__

    return __version__
