"""Answering ``xsearch query`` for the command line, as it would have run in-process.

The CLI runs in another folder than the server: it sends every image path of the query
with the absolute path to read, and the folders of ``--under`` made absolute. Errors come
back with the message the CLI would have printed, which shows paths as the user gave them.
"""

from __future__ import annotations

import os

from ..engine import Engine
from ..errors import QueryError, XSearchError
from ..filters import make_filters
from ..hits import SearchHit
from ..querylang import ImagePath, build_query
from ..remote import CliQuery

__all__ = ["run_cli_query"]


def run_cli_query(engine: Engine, request: CliQuery) -> list[SearchHit]:
    """The hits of ``request``; raises the XSearchError the CLI would have raised."""
    try:
        query = build_query(request.text, [ImagePath(p) for p in request.images])
        unknown = sorted(
            t.term.path
            for t in query.terms
            if isinstance(t.term, ImagePath) and t.term.path not in request.image_paths
        )
        if unknown:
            raise QueryError(f"The request does not say where the image {unknown[0]} is.")
        resolved = query.map_paths(lambda p: request.image_paths[p][1])
        filters = make_filters(
            media_type=request.media_type,
            under=request.under,
            after=request.after,
            before=request.before,
            min_score=request.min_score,
        )
        return engine.search(
            resolved,
            limit=request.limit,
            filters=filters,
            frames=request.frames,
            hybrid=request.hybrid,
            collapse=request.collapse,
        )
    except XSearchError as exc:
        exc.args = (_as_shown(str(exc), request),)
        raise


def _as_shown(message: str, request: CliQuery) -> str:
    """``message`` with each absolute image path put back as the CLI shows it."""
    for shown, absolute in request.image_paths.values():
        if shown == absolute:
            continue
        message = message.replace(absolute, shown)
        # Paths in messages about a file's content are printed from its bytes.
        printed = os.fsencode(absolute).decode("utf-8", errors="replace")
        message = message.replace(printed, os.fsencode(shown).decode("utf-8", errors="replace"))
    return message
