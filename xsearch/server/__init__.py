"""``xsearch serve``: the HTTP API and web gallery over a warm engine."""

from __future__ import annotations

from .app import ServerOptions, create_app

__all__ = ["ServerOptions", "create_app"]
