"""``xsearch serve``: the HTTP API and web gallery over a warm engine."""

from __future__ import annotations

from .app import ServerOptions, ServerStats, create_app, server_stats

__all__ = ["ServerOptions", "ServerStats", "create_app", "server_stats"]
