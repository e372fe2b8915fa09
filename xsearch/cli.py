"""The ``xsearch`` command line. The only module (with the server) that prints and exits.

Exit codes: 0 success; 1 error; 2 bad usage, argument or model mismatch; 3 the store is busy;
4 the index run finished but some files failed; 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from . import cli_index, cli_tags, cli_tools
from .cli_common import (
    DeviceOpt,
    IndexKindOpt,
    IndexMemoryOpt,
    StoreOpt,
    clock,
    err,
    make_engine,
    make_settings,
    out,
    prepare_model,
    print_notices,
)
from .config import Settings
from .errors import XSearchError

if TYPE_CHECKING:
    from .querylang import Query
    from .remote import CliQuery


class _Group(TyperGroup):
    """Turns XSearchError into a message and its exit code, for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except XSearchError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    name="xsearch",
    help="Search your photos and videos by describing them, in any language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# `index` first, as in `xsearch --help`; eval, demo, serve and tags join at the end.
cli_index.register(app)


@app.command()
def query(
    text: Annotated[
        list[str] | None,
        typer.Argument(
            help="What to look for: text in any language the model knows, image paths and "
            "id:N, combined with + and - and weights, e.g. '2:beach + ./pool.jpg - night'."
        ),
    ] = None,
    store: StoreOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Refuse a store built by another model than this profile."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many results.")] = 10,
    media_type: Annotated[
        str | None, typer.Option("--type", help="Only 'image' or 'video'.")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option(help="Drop results scoring below this.")
    ] = None,
    frames: Annotated[bool, typer.Option(help="One result per matching video frame.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the documented JSON schema.")
    ] = False,
    paths: Annotated[bool, typer.Option("--paths", help="Print only paths, one per line.")] = False,
    device: DeviceOpt = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="Find pictures like this one (repeatable; adds to TEXT)."),
    ] = None,
    under: Annotated[
        list[Path] | None,
        typer.Option("--under", help="Only files below this folder (repeatable)."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            help="Only files from this time on: 2023, 2023-05, 2023-05-17[T14:30]. "
            "EXIF capture time, else modification time; local time."
        ),
    ] = None,
    before: Annotated[
        str | None, typer.Option(help="Only files from before this time (same forms as --after).")
    ] = None,
    hybrid: Annotated[
        bool,
        typer.Option(
            help="Also match the words of folder and file names and EXIF text, "
            "fused with the picture ranking."
        ),
    ] = False,
    collapse: Annotated[
        bool, typer.Option(help="Fold near-duplicates (bursts, copies) into one result.")
    ] = False,
    no_server: Annotated[
        bool,
        typer.Option(
            "--no-server",
            help="Search in this process even when `xsearch serve` runs on the store "
            "(by default that server answers: no model to load, much faster).",
        ),
    ] = False,
) -> None:
    """Search the store; prints a table, JSON (--json) or bare paths (--paths).

    When `xsearch serve` is running on the same store, it answers the query (-v says so).
    """
    from .filters import make_filters
    from .hits import results_document
    from .querylang import ImagePath, build_query, describe_query
    from .remote import ask_server

    words = " ".join(text or [])
    images = [str(p) for p in image or []]
    typed = build_query(words, [ImagePath(p) for p in images])
    search_query = typed.map_paths(os.path.expanduser)
    filters = make_filters(
        media_type=media_type, under=under or [], after=after, before=before, min_score=min_score
    )
    settings = make_settings(store, device=device)
    if model is not None:
        _check_store_model(settings.with_(model=model))
    options: dict[str, Any] = {
        "limit": limit,
        "frames": frames,
        "hybrid": hybrid,
        "collapse": collapse,
    }
    request = _server_request(
        typed,
        text=words,
        images=images,
        media_type=media_type,
        min_score=min_score,
        under=under or [],
        after=after,
        before=before,
        **options,
    )
    answer = None if no_server or request is None else ask_server(settings, request)
    if answer is not None:
        hits, notices = answer.hits, answer.notices
    else:
        with make_engine(settings) as engine:
            hits = engine.search(search_query, filters=filters, **options)
            notices = engine.notices
    for notice in notices:
        err.print(f"[yellow]note:[/] {notice}")
    if as_json:
        doc = results_document(describe_query(search_query), hits)
        out.print_json(json.dumps(doc, ensure_ascii=False))
        return
    if paths:
        for h in hits:
            sys.stdout.buffer.write(h.path_bytes + b"\n")
        return
    _print_hits(hits)


def _check_store_model(settings: Settings) -> None:
    """Raise ModelMismatchError when the store was built by another model than the one
    named. Checked here, not by the engine that answers, so that a model that matches
    leaves the settings (and so a running server's answer) as they are."""
    from .encoders.profiles import get_profile

    get_profile(settings.model or "")  # an unknown name is refused even on an empty store
    with make_engine(settings) as engine:
        engine.store()


def _server_request(typed: Query, *, under: list[Path], **fields: Any) -> CliQuery | None:
    """The query for a running server: image paths and --under folders spelled out for a
    process that runs in another folder. None when this folder is gone."""
    from .querylang import ImagePath
    from .remote import CliQuery

    try:
        cwd = os.getcwd()
    except OSError:
        return None
    image_paths: dict[str, tuple[str, str]] = {}
    for term in typed.terms:
        if isinstance(term.term, ImagePath):
            shown = os.path.expanduser(term.term.path)
            image_paths[term.term.path] = (shown, os.path.join(cwd, shown))
    folders = tuple(os.path.join(cwd, os.fsdecode(u)) for u in under)
    return CliQuery(image_paths=image_paths, under=folders, **fields)


def _print_hits(hits: list[Any]) -> None:
    if not hits:
        err.print("No results. Is the store empty? `xsearch info` shows what it holds.")
        return
    table = Table(show_header=True, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("file", overflow="fold")
    table.add_column("where")
    for rank, h in enumerate(hits, 1):
        where = ""
        if h.media_type == "video":
            if h.t is not None:
                where = clock(h.t)
            else:
                where = ", ".join(f"{clock(s.start)}–{clock(s.end)}" for s in h.segments[:3])
        folded = f"  (+{len(h.duplicates)} similar)" if h.duplicates else ""
        table.add_row(str(rank), f"{h.score:.3f}", escape(h.path) + folded, where)
    out.print(table)


@app.command("rebuild-index")
def rebuild_index(
    store: StoreOpt = None,
    index_kind: IndexKindOpt = None,
    index_memory: IndexMemoryOpt = None,
) -> None:
    """Build the vector index anew now: kind chosen again (or --index-kind), recall re-tuned."""
    settings = make_settings(store, index_kind=index_kind, index_memory_mb=index_memory)
    started = time.perf_counter()
    with make_engine(settings) as engine:
        info = engine.rebuild_index()
        print_notices(engine)
    recall = info.index_recall_at_10
    measured = f", recall@10 {recall:.3f}" if recall is not None else " (exact)"
    params = f", {info.index_params}" if info.index_params else ""
    err.print(
        f"Rebuilt the vector index as {info.index_kind}: {info.index_vectors} vectors"
        f"{measured}{params}, in {time.perf_counter() - started:.1f} s."
    )


@app.command()
def info(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Also verify store and index agree.")
    ] = False,
) -> None:
    """Where the store is, which model built it, what it holds."""
    settings = make_settings(store)
    with make_engine(settings) as engine:
        if check:
            _doctor(engine)
        data = engine.info().to_json()
        print_notices(engine)
    if as_json:
        out.print_json(json.dumps(data, ensure_ascii=False))
        return
    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    out.print(table)


@app.command()
def doctor(store: StoreOpt = None) -> None:
    """Check that the vector index agrees with the store, and repair it if not."""
    with make_engine(make_settings(store)) as engine:
        _doctor(engine)


def _doctor(engine: Any) -> None:
    from .maintenance import check_store

    result = check_store(engine)
    for line in result.lines:
        out.print(line)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def models(
    download: Annotated[
        str | None,
        typer.Option(
            help="Download this profile's weights now, and prepare it for this machine "
            "(on a CPU, its one-time int8 export), so the first indexing run starts at once."
        ),
    ] = None,
    prepare: Annotated[
        bool, typer.Option(help="With --download: also prepare the model for this machine.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The model profiles, and which of them work offline on this machine."""
    from .encoders.model_files import missing_hub_files
    from .encoders.profiles import DEFAULT_PROFILE, get_profile, list_profiles

    settings = make_settings(None)
    if download:
        from .encoders.model_files import HubOptions, resolve_files

        profile = get_profile(download)
        hub = HubOptions(cache_dir=settings.model_cache_dir, endpoint=settings.hub_endpoint)
        resolve_files(profile, None, hub)
        out.print(f"{download}: downloaded; it now loads offline.")
        if prepare:
            prepare_model(settings.with_(model=profile.name), download)
        return
    rows: list[dict[str, Any]] = []
    for p in list_profiles():
        missing = missing_hub_files(p, settings.model_cache_dir)
        rows.append(
            {
                "name": p.name,
                "default": p.name == DEFAULT_PROFILE,
                "tier": p.tier,
                "architecture": f"{p.arch}" + (f" : {p.pretrained}" if p.pretrained else ""),
                "languages": p.languages,
                "licence": p.licence,
                "commercial_use": p.commercial_use,
                "offline": not missing,
                "missing": missing,
                "quality": p.quality,
                "description": p.description,
            }
        )
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table(show_lines=False)
    for col in ("name", "tier", "languages", "licence", "offline", "architecture"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (" (default)" if r["default"] else "")
        table.add_row(
            name,
            r["tier"],
            r["languages"],
            r["licence"],
            "yes" if r["offline"] else "no",
            r["architecture"],
        )
    out.print(table)


def _quiet_libraries(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False,
) -> None:
    _quiet_libraries(verbose)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="xsearch")


# eval, demo and serve live in cli_tools; they join the same app.
cli_tools.register(app)
cli_tags.register(app)
