"""What an indexing run reports: one outcome per file, progress, and the run's summary.

:class:`~xsearch.indexer.Indexer` hands a :class:`FileOutcome` to ``on_outcome`` once per
file and a :class:`Progress` to ``on_progress`` as work gets done, and counts every outcome
in its :class:`IndexReport`. They are values with no behaviour of their own, so the CLI
and the public API (``xsearch.FileOutcome``, ``IndexReport``, ``Progress``) take them from
here without loading the indexer's scan, decode and store modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .media.images import display

__all__ = ["OUTCOMES", "SKIP_REASONS", "FileOutcome", "IndexReport", "Progress", "not_indexed"]

OUTCOMES = ("indexed", "partial", "unchanged", "moved", "removed", "skipped", "failed")
# Files that are simply not media xsearch can use are skipped; damaged ones have failed.
SKIP_REASONS = frozenset({"unsupported", "no-video-stream"})


def not_indexed(reason: str) -> str:
    return "skipped" if reason in SKIP_REASONS else "failed"


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file. ``reason`` is a short category for skipped/failed/partial."""

    path: bytes
    outcome: str
    reason: str | None = None
    detail: str | None = None

    @property
    def display(self) -> str:
        return display(self.path)

    def to_json(self) -> dict[str, str | None]:
        return {
            "path": self.display,
            "outcome": self.outcome,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Progress:
    # "scan"; "model" (loading it); "prepare" (its one-time int8 export for this CPU, which
    # the Engine reports); "embed"; "tag" (the files' tags, after indexing).
    stage: str
    done: int
    total: int
    frames: int = 0


@dataclass
class IndexReport:
    """Summary of one run. ``problems`` lists every file that was not indexed cleanly."""

    found: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    problems: list[FileOutcome] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0  # set by Engine.index: the whole call, loading the model included
    cancelled: bool = False
    encoder_calls: int = 0
    tagged: int = 0  # files given their tags after indexing (set by Engine.index)
    # On Ray: node id → how many files it decoded and embedded ("decoded", "embedded").
    work_by_node: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.counts["failed"] == 0 and not self.cancelled

    def count(self, outcome: FileOutcome) -> None:
        self.counts[outcome.outcome] += 1
        if outcome.outcome in ("failed", "skipped", "partial"):
            self.problems.append(outcome)
