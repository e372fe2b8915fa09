"""The ``tags`` command: what is in each file, in words (kept apart from cli.py)."""

# No `from __future__ import annotations`: typer reads these annotations at run time.

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import StoreOpt, make_engine, make_settings, out
from .errors import XSearchError

__all__ = ["register"]

_LANGS = ("en", "zh", "both")


def register(app: typer.Typer) -> None:

    @app.command()
    def tags(
        path: Annotated[
            Path | None, typer.Argument(help="A file or folder in the store (default: all).")
        ] = None,
        store: StoreOpt = None,
        lang: Annotated[
            str, typer.Option(help="Which language's tags to show: en, zh or both.")
        ] = "both",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        top: Annotated[int, typer.Option(help="How many tags the folder summary shows.")] = 30,
    ) -> None:
        """The tags of a file, or of every file below a folder with a count of each tag."""
        if lang not in _LANGS:
            raise XSearchError(f"--lang must be en, zh or both, not {lang!r}.")
        target = os.path.abspath(path) if path is not None else None
        with make_engine(make_settings(store)) as engine:
            listing = engine.tags(target)
        if target is not None and not listing.files:
            raise XSearchError(
                f"{path} is not in the store, or nothing below it is; index it first."
            )
        if as_json:
            out.print_json(json.dumps(listing.to_json(), ensure_ascii=False))
            return
        wanted = None if lang == "both" else lang
        for f in listing.files:
            _print_file(f, wanted)
        if len(listing.files) > 1:
            _print_counts(listing.counts, wanted, top, len(listing.files))


def _print_file(f: Any, lang: str | None) -> None:
    shown = [t for t in f.tags if t.start is None and lang in (None, t.lang)]
    words = ", ".join(f"{t.label} {t.score:.2f}" for t in shown) or "(no tag)"
    out.print(f"{escape(f.path)}  {escape(words)}", soft_wrap=True, highlight=False)
    segments = [t for t in f.tags if t.start is not None and lang in (None, t.lang)]
    for t in segments:
        out.print(
            f"    {t.start:7.1f}–{t.end:7.1f} s  {escape(t.label)} {t.score:.2f}",
            highlight=False,
        )


def _print_counts(counts: Any, lang: str | None, top: int, files: int) -> None:
    table = Table(title=f"Tags of {files} files")
    table.add_column("tag")
    table.add_column("language")
    table.add_column("files", justify="right")
    rows = [c for c in counts if lang in (None, c[1])][:top]
    for _key, tag_lang, label, n in rows:
        table.add_row(escape(label), tag_lang, str(n))
    out.print(table)
