"""What every command module of the CLI shares: consoles, common options, settings.

It sits below ``cli`` and ``cli_tools`` so that neither imports the other for these.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .config import Settings

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_PARTIAL = 4  # the index run finished but some files failed

StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", "-s", help="Store folder [env: XSEARCH_HOME; default: ./index_data]."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Model profile for a new store (`xsearch models` lists them)."
    ),
]
CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", help="Load the model's weights from this local file.")
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps [env: XSEARCH_DEVICE]."),
]


IndexKindOpt = Annotated[
    str | None,
    typer.Option(
        "--index-kind",
        help="Vector index: auto (by size and memory budget), flat, ivf-flat, ivf-sq8, hnsw, "
        "ivfpq, ivfpq-disk (lists and refine vectors memory-mapped from files), exact-torch, "
        "numpy [env: XSEARCH_INDEX_KIND].",
    ),
]
IndexMemoryOpt = Annotated[
    int | None,
    typer.Option(
        "--index-memory",
        help="MiB the automatically chosen index may use (1024) [env: XSEARCH_INDEX_MEMORY_MB].",
        metavar="MIB",
    ),
]


def make_settings(store: Path | None, model: str | None = None, **extra: Any) -> Settings:
    return Settings.from_env(store=store, model=model, **extra)


def make_engine(settings: Settings) -> Any:
    from .engine import Engine

    return Engine(settings)


def prepare_model(settings: Settings, name: str) -> None:
    """The model's one-time preparation, outside any store (a store's own model would
    otherwise be the one prepared)."""
    with (
        tempfile.TemporaryDirectory() as nowhere,
        make_engine(settings.with_(store=Path(nowhere) / "store")) as engine,
    ):
        with err.status("preparing the model for this machine (once per model)"):
            used = engine.prepare_model()
        print_notices(engine)
    out.print(f"{name}: prepared; images are encoded by {used} on this machine.")


def print_notices(engine: Any) -> None:
    for notice in engine.notices:
        err.print(f"[yellow]note:[/] {notice}")


def clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes:02d}:{secs:04.1f}"
