"""The ``index`` command: progress while it runs, a summary and the files that failed.

Kept apart from cli.py, which holds the query and store commands.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import (
    EXIT_PARTIAL,
    CheckpointOpt,
    DeviceOpt,
    IndexKindOpt,
    IndexMemoryOpt,
    ModelOpt,
    StoreOpt,
    err,
    make_engine,
    make_settings,
    print_notices,
)
from .config import IndexOptions, Settings
from .errors import XSearchError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command()(index)


def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or files to index.")],
    store: StoreOpt = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="How a CPU encodes: auto (images by an int8 ONNX tower where it agrees "
            "with fp32, checked once per model; else bf16 where the CPU has native bf16, "
            "else fp32), int8, bf16 or fp32 [env: XSEARCH_PRECISION]."
        ),
    ] = None,
    index_kind: IndexKindOpt = None,
    index_memory: IndexMemoryOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Frames per encoder batch (auto).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Decode worker processes (auto, at least 1); 0 decodes in this process, "
            "where a crashing decoder ends the run."
        ),
    ] = None,
    include_hidden: Annotated[bool, typer.Option(help="Also index dot-files and OS junk.")] = False,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Glob of paths to skip (repeatable).")
    ] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels.")] = 178_956_970,
    file_timeout: Annotated[
        float, typer.Option(help="Seconds one file may take to decode.")
    ] = 60.0,
    video_interval: Annotated[
        float, typer.Option(help="Seconds between sampled video frames.")
    ] = 1.0,
    report: Annotated[
        Path | None, typer.Option(help="Write one JSON line per file to this file.")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Decode and embed on Ray: local (a Ray instance on this machine), auto "
            "($RAY_ADDRESS or the running cluster) or ray://HOST:PORT. Needs the ray extra; "
            "the files must be on a filesystem every node mounts at the same path.",
        ),
    ] = None,
    tags: Annotated[
        bool, typer.Option(help="Tag new and changed files (zero-shot, see 'xsearch tags').")
    ] = True,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="A tag vocabulary file (TSV or JSON) to add to the shipped one; kept in "
            "the store for later runs. Re-tags every file."
        ),
    ] = None,
) -> None:
    """Index images and videos below PATHS; a re-run only looks at what changed."""
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise XSearchError(f"{path} does not exist. Give folders or files that exist.")
    options = IndexOptions(
        batch_size=batch_size,
        workers=workers,
        include_hidden=include_hidden,
        exclude=tuple(exclude or ()),
        max_image_pixels=max_pixels,
        file_timeout=file_timeout,
        video_interval=video_interval,
        tag=tags,
        labels=labels,
    )
    settings = make_settings(
        store,
        model,
        checkpoint=checkpoint,
        device=device,
        precision=precision,
        index_kind=index_kind,
        index_memory_mb=index_memory,
    )
    report_fh = report.open("w", encoding="utf-8") if report else None
    try:
        result = _run_index(settings, paths, options, report_fh, ray)
    finally:
        if report_fh:
            report_fh.close()
    if result.cancelled:
        err.print(
            "[yellow]Interrupted.[/] Everything indexed so far is saved; "
            "run the same command again to resume."
        )
        raise typer.Exit(130)
    if result.counts["failed"]:
        raise typer.Exit(EXIT_PARTIAL)


def _run_index(
    settings: Settings, paths: list[Path], options: IndexOptions, report_fh: Any, ray: str | None
) -> Any:
    from .index_report import FileOutcome, Progress

    def on_outcome(outcome: FileOutcome) -> None:
        if report_fh is not None:
            report_fh.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")

    if ray is not None:
        _quiet_ray()
    with make_engine(settings) as engine, _ProgressView(enabled=sys.stdout.isatty()) as view:

        def on_progress(p: Progress) -> None:
            view.update(p)

        # Without a report no one needs each file's outcome: the run only counts the
        # unchanged ones, which is most of a re-index.
        result = engine.index(
            paths,
            options,
            on_outcome=on_outcome if report_fh is not None else None,
            on_progress=on_progress,
            ray=ray,
        )
        print_notices(engine)
    _print_summary(result)
    return result


def _quiet_ray() -> None:
    """Ray's and Ray Data's console chatter (start-up notes, progress logged to a pipe,
    "progress bars disabled") only interleaves with the run's own progress and summary;
    their warnings and errors still show. Ray Data sets its loggers up when first imported,
    so it is imported first (without the extra, the engine says how to install it)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)


# What the bar says while no file is being embedded yet.
_WAITING_STAGES = {
    "scan": "scanning",
    "model": "loading the model",
    "prepare": "preparing the model for this CPU (once per model)",
    "tag": "tagging",
}


class _ProgressView:
    """A rich progress bar with rate and ETA on a terminal; nothing otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._embedding_since: float | None = None

    def __enter__(self) -> _ProgressView:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("scanning", total=None, rate="")
        return self

    def update(self, p: Any) -> None:
        if self._progress is None:
            return
        if p.stage in _WAITING_STAGES:
            self._progress.update(self._task, description=_WAITING_STAGES[p.stage])
            if p.stage == "scan":
                self._progress.update(self._task, completed=p.done)
            return
        if self._embedding_since is None:
            # The rate counts from the first file on, not from loading the model.
            self._embedding_since = time.monotonic()
        elapsed = max(time.monotonic() - self._embedding_since, 1e-6)
        self._progress.update(
            self._task,
            description="embedding",
            total=p.total,
            completed=p.done,
            rate=f"{p.done / elapsed:.1f} files/s",
        )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _print_summary(result: Any) -> None:
    c = result.counts
    err.print(
        f"found {result.found} files: {c['indexed']} indexed, {c['partial']} partial, "
        f"{c['unchanged']} unchanged, {c['moved']} moved, {c['removed']} removed, "
        f"{c['skipped']} skipped, {c['failed']} failed"
        + (f", {result.tagged} tagged" if result.tagged else "")
        + f"  ({result.seconds:.1f} s)"
    )
    if result.problems:
        table = Table(title="Not indexed cleanly", show_lines=False)
        table.add_column("outcome")
        table.add_column("reason")
        table.add_column("file", overflow="fold")
        table.add_column("detail")
        for p in result.problems[:50]:
            table.add_row(p.outcome, p.reason or "", escape(p.display), escape(p.detail or ""))
        err.print(table)
        if len(result.problems) > 50:
            err.print(
                f"... and {len(result.problems) - 50} more (use --report FILE.jsonl for all)."
            )
