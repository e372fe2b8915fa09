"""The ``eval``, ``demo`` and ``serve`` commands (kept apart from the core commands in cli.py)."""

# No `from __future__ import annotations`: typer reads these annotations at run time, and
# the options they name are defined in the functions' scope inside register().

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import DeviceOpt, ModelOpt, StoreOpt, err, make_settings, out

__all__ = ["register"]


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _print_demo_tags(listing: Any) -> None:
    """The most frequent tags of the demo's pictures, per language."""
    tagged = sum(1 for f in listing.files if f.tags)
    out.print(f"\n[bold]Tags[/] ({tagged} of {len(listing.files)} pictures tagged; most frequent)")
    for lang in ("en", "zh"):
        top = [c for c in listing.counts if c[1] == lang][:12]
        out.print(f"  {lang}: " + escape(", ".join(f"{label} {n}" for _k, _l, label, n in top)))


def register(app: typer.Typer) -> None:

    @app.command("eval")
    def eval_(
        dataset: Annotated[
            Path, typer.Argument(help="TSV, JSONL or Karpathy-style JSON of captions.")
        ],
        images: Annotated[
            Path | None, typer.Option(help="Folder the image paths are relative to.")
        ] = None,
        split: Annotated[str, typer.Option(help="Split of a Karpathy JSON to use.")] = "test",
        store: StoreOpt = None,
        model: ModelOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Measure text→image retrieval (R@1/5/10, mean rank) per caption language."""
        from .engine import Engine
        from .evaluate import load_pairs, run_eval

        pairs = load_pairs(dataset, images=images, split=split)
        with tempfile.TemporaryDirectory(prefix="xsearch-eval-") as tmp:
            settings = make_settings(store or Path(tmp) / "store", model)
            with Engine(settings) as engine:
                result = run_eval(engine, pairs)
                profile = engine.profile_name()
        if as_json:
            doc = {"dataset": str(dataset), "model": profile, **result.to_json()}
            out.print_json(json.dumps(doc, ensure_ascii=False))
            return
        table = Table(
            title=f"{dataset} — model {profile}: {result.images} images, {result.captions} queries"
        )
        for col in ("language", "queries", "R@1", "R@5", "R@10", "mean rank"):
            table.add_column(col, justify="right")
        for lang, m in result.by_lang.items():
            table.add_row(
                lang,
                str(int(m["queries"])),
                f"{m['R@1']:.3f}",
                f"{m['R@5']:.3f}",
                f"{m['R@10']:.3f}",
                f"{m['mean_rank']:.2f}",
            )
        out.print(table)

    @app.command()
    def demo(
        workdir: Annotated[
            Path | None,
            typer.Option(help="Folder for pictures, store and sheet (default: a temp folder)."),
        ] = None,
        store: StoreOpt = None,
        sheet: Annotated[Path, typer.Option(help="Where to write the contact sheet PNG.")] = Path(
            "xsearch-demo.png"
        ),
        limit: Annotated[int, typer.Option(help="Hits per query.")] = 5,
    ) -> None:
        """Offline demo: generate pictures, index them with the bundled model, run queries."""
        from .demo import run_demo

        def show(result: Any, *, kept: bool) -> None:
            c = result.report.counts
            where = result.folder if kept else "a temporary folder"
            err.print(
                f"Indexed {c['indexed']} generated pictures in {result.report.seconds:.1f} s "
                f"({where})."
            )
            for query, hits in result.results.items():
                out.print(f"\n[bold]{escape(query)}[/]")
                for rank, h in enumerate(hits, 1):
                    shown = h.path if kept else Path(h.path).name
                    words = ", ".join(t.label for t in h.tags)
                    out.print(f"  {rank}. {h.score:.3f}  {escape(shown)}  [dim]{escape(words)}[/]")
            _print_demo_tags(result.tags)
            out.print(f"\nContact sheet: {result.sheet}")
            if not kept:
                err.print(
                    "The generated pictures and their store were in a temporary folder that "
                    "is now removed; pass --workdir DIR to keep them and query them yourself."
                )

        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            show(run_demo(workdir, store=store, sheet=sheet, limit=limit), kept=True)
            return
        with tempfile.TemporaryDirectory(prefix="xsearch-demo-") as tmp:
            result = run_demo(Path(tmp), store=store, sheet=sheet, limit=limit)
            show(result, kept=False)

    @app.command()
    def serve(
        store: StoreOpt = None,
        host: Annotated[
            str,
            typer.Option(help="Address to listen on. Anything but 127.0.0.1 exposes your media."),
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
        device: DeviceOpt = None,
        max_upload_mb: Annotated[
            float, typer.Option(help="Largest query image a client may upload, in MiB.")
        ] = 20.0,
        idle_exit: Annotated[
            float | None,
            typer.Option(
                help="Stop after this many minutes without a request (default: never).",
                metavar="MINUTES",
            ),
        ] = None,
    ) -> None:
        """Serve the web gallery and JSON API, keeping the model and index warm.

        While it runs, `xsearch query` on the same store is answered by it (see
        <store>/server.json).
        """
        from .engine import Engine
        from .errors import ConfigError, StoreNotFoundError

        try:
            from .server import ServerOptions, create_app
            from .server.runner import new_token, run_server
        except ImportError as exc:
            raise ConfigError(
                f"`xsearch serve` needs {exc.name}: pip install fastapi uvicorn python-multipart"
            ) from exc
        if idle_exit is not None and idle_exit <= 0:
            raise ConfigError(f"--idle-exit must be a positive number of minutes, not {idle_exit}.")
        settings = make_settings(store, device=device)
        with Engine(settings) as engine:
            if not engine.exists():
                raise StoreNotFoundError(settings.store)
            err.print("Loading the model and the index ...")
            engine.warm_up()
            token = new_token()
            options = ServerOptions(
                max_upload_bytes=int(max_upload_mb * 1024 * 1024), cli_token=token
            )
            app_ = create_app(engine, options)
            if host not in _LOOPBACK:
                err.print(
                    f"[yellow]warning:[/] listening on {host}: anyone who can reach this "
                    "machine can search and view every indexed file. There is no login."
                )

            def announce(url: str) -> None:
                err.print(f"xsearch is serving {settings.store} at {url}/  (Ctrl-C stops)")

            idle = run_server(
                app_,
                engine,
                host=host,
                port=port,
                token=token,
                idle_exit=idle_exit * 60 if idle_exit is not None else None,
                on_listening=announce,
            )
            if idle:
                err.print(f"No request for {idle_exit:g} minutes; stopped.")
