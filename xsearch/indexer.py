"""The indexing run: plan changes → decode → encode → persist, with honest reporting.

The indexer never prints. It reports through two callbacks: ``on_outcome`` once per file
(for the run report and ``--report FILE.jsonl``) and ``on_progress`` as work gets done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import IndexOptions
from .encoders.base import Encoder, Vectors
from .index.base import read_meta
from .index.manager import IndexManager
from .index_report import FileOutcome, IndexReport, Progress, not_indexed
from .media.hashing import content_hash
from .media.images import display
from .media.scan import ScanEntry, ScanProblem, scan
from .pipeline import Decoded, DecodeOptions, WorkItem, embed_decoded, failure_of
from .store.records import FileState, FrameVector, MediaRecord, WriteBatch
from .store.repository import Store
from .workers import iter_decoded

__all__ = ["EmbedStage", "Embedded", "Indexer"]

#: A decoded file and its frame vectors (None when decoding failed).
Embedded = tuple[Decoded, Vectors | None]
#: Decode and embed somewhere else (a Ray cluster): given the planned work and the encoder
#: the store was claimed for, yield the results in blocks, in any order, each file at least
#: once; the indexer commits them (a file seen twice is committed once).
EmbedStage = Callable[[list[WorkItem], Encoder], Iterable[Sequence[Embedded]]]

# Past this many changed or vanished files, the planner reads every known file's row at once.
_STATES_BY_PATH = 20_000


@dataclass
class _Plan:
    work: list[WorkItem] = field(default_factory=list)
    early: WriteBatch = field(default_factory=WriteBatch)
    outcomes: list[FileOutcome] = field(default_factory=list)
    found: int = 0
    # Files found unchanged by the stat fast path and only counted: no one listens for
    # their outcomes (at 1M unchanged files this and ScanEntry as a named tuple took the
    # run's CPU time from 25.3 s to 16.6 s, docs/scale.md).
    unchanged: int = 0


class Indexer:
    """One run over some folders. Build it through :meth:`xsearch.Engine.index`."""

    def __init__(
        self,
        store: Store,
        index: IndexManager,
        encoder_factory: Callable[[], Encoder],
        options: IndexOptions,
        *,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        embed_stage: EmbedStage | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self._encoder_factory = encoder_factory
        self.options = options
        self._on_outcome = on_outcome
        self._on_progress = on_progress
        self.report = IndexReport()
        self._done = 0  # files of the embed stage persisted so far
        self._embed_stage = embed_stage
        self._committed: set[int] = set()  # keys of the work items persisted in this run

    def _emit(self, outcome: FileOutcome) -> None:
        self.report.count(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self._on_progress is not None:
            self._on_progress(Progress(stage, done, total, self.report.frames))

    def run(self, roots: Sequence[Path]) -> IndexReport:
        _remove_stale_temp_files(self.store.location)
        try:
            plan = self._plan(roots)
            self.report.found = plan.found
            self.report.counts["unchanged"] += plan.unchanged
            if plan.early:
                self.index.apply(self.store.write(plan.early))
            for outcome in plan.outcomes:
                self._emit(outcome)
            if plan.work and self._embed_stage is not None:
                self._embed_elsewhere(plan.work, self._embed_stage)
            elif plan.work:
                self._embed_all(plan.work)
        except KeyboardInterrupt:
            self.report.cancelled = True
        finally:
            if self._index_is_stale():
                self.index.save()
        return self.report

    def _index_is_stale(self) -> bool:
        """Whether the saved index lags the store (a no-change run rewrites nothing)."""
        saved = read_meta(self.index.meta_path)
        return (
            saved is None
            or saved.generation != self.store.generation()
            or not self.index.index_path.exists()
        )

    # -- planning --------------------------------------------------------------------------

    def _plan(self, roots: Sequence[Path]) -> _Plan:
        """Compare the walk with the store. Only (size, mtime) of the known files is read up
        front: at 1M files their full rows cost 2 s more. A file that fails the stat fast
        path is planned after the walk, in its place among the outcomes."""
        plan = _Plan()
        root_bytes = [os.fsencode(os.path.abspath(r)) for r in roots]
        known = self.store.stats_under(root_bytes)
        outcomes: list[FileOutcome | None] = []
        later: list[tuple[int, ScanEntry]] = []  # (place in outcomes, entry)
        seen: set[bytes] = set()
        listened = self._on_outcome is not None
        for entry in scan(
            roots, include_hidden=self.options.include_hidden, exclude=self.options.exclude
        ):
            if isinstance(entry, ScanProblem):
                outcomes.append(FileOutcome(entry.path, "skipped", entry.reason, entry.detail))
                continue
            plan.found += 1
            seen.add(entry.path)
            if plan.found % 1000 == 0:
                self._progress("scan", plan.found, 0)
            if known.get(entry.path) == (entry.size, entry.mtime_ns):
                if listened:
                    outcomes.append(FileOutcome(entry.path, "unchanged"))
                else:
                    plan.unchanged += 1
                continue
            later.append((len(outcomes), entry))
            outcomes.append(None)
        gone = known.keys() - seen  # a set difference in C: 1M paths in a blink
        states = self._states([e.path for _, e in later if e.path in known], gone, root_bytes)
        new = self._plan_later(later, states, outcomes, plan, root_bytes)
        plan.outcomes = [o for o in outcomes if o is not None]
        missing = {path: states[path] for path in known if path in gone} if gone else {}
        self._plan_moves(new, missing, plan)
        for path, state in missing.items():
            plan.early.deletes.append(state.id)
            plan.outcomes.append(FileOutcome(path, "removed"))
        return plan

    def _states(
        self, changed: list[bytes], gone: set[bytes], roots: list[bytes]
    ) -> dict[bytes, FileState]:
        wanted = len(changed) + len(gone)
        if wanted > _STATES_BY_PATH:  # many: one range read beats many IN lists
            return self.store.states_under(roots)
        return self.store.states_of([*changed, *gone]) if wanted else {}

    def _plan_later(
        self,
        later: list[tuple[int, ScanEntry]],
        states: dict[bytes, FileState],
        outcomes: list[FileOutcome | None],
        plan: _Plan,
        roots: list[bytes],
    ) -> list[ScanEntry]:
        """Plan the files that failed the stat fast path; returns the new ones."""
        new: list[ScanEntry] = []
        failed = self.store.failures_under(roots) if later else {}
        for place, entry in later:
            mark = len(plan.outcomes)
            try:
                self._plan_entry(entry, states.get(entry.path), failed.get(entry.path), plan, new)
            except Exception as exc:  # one file's fault while planning is that file's alone
                plan.outcomes.append(FileOutcome(entry.path, "failed", *failure_of(exc)))
            if len(plan.outcomes) > mark:
                outcomes[place] = plan.outcomes.pop()
        return new

    def _plan_entry(
        self,
        entry: ScanEntry,
        state: FileState | None,
        failure: tuple[int, int, str] | None,
        plan: _Plan,
        new: list[ScanEntry],
    ) -> None:
        if state is not None:
            if (entry.size, entry.mtime_ns) == (state.size, state.mtime_ns):
                plan.outcomes.append(FileOutcome(entry.path, "unchanged"))
                return
            if _same_content(entry, state):
                plan.early.touches.append((state.id, entry.size, entry.mtime_ns))
                plan.outcomes.append(FileOutcome(entry.path, "unchanged", None, "touched"))
                return
            plan.work.append(_work(len(plan.work), entry))
            return
        if failure is not None and failure[:2] == (entry.size, entry.mtime_ns):
            plan.outcomes.append(
                FileOutcome(
                    entry.path,
                    not_indexed(failure[2]),
                    failure[2],
                    "unchanged since the last attempt",
                )
            )
            return
        new.append(entry)

    def _plan_moves(
        self, new: list[ScanEntry], missing: dict[bytes, FileState], plan: _Plan
    ) -> None:
        """New paths whose content equals a vanished file's are moves: they keep their vectors."""
        by_size: dict[int, list[bytes]] = {}
        for path, state in missing.items():
            by_size.setdefault(state.size, []).append(path)
        for entry in new:
            candidates = by_size.get(entry.size)
            moved_from = None
            if candidates:
                digest = _hash_or_none(entry.path, entry.size)
                moved_from = next(
                    (p for p in candidates if missing[p].content_hash == digest), None
                )
            if moved_from is None:
                plan.work.append(_work(len(plan.work), entry))
                continue
            state = missing.pop(moved_from)
            by_size[entry.size].remove(moved_from)
            plan.early.moves.append(
                (state.id, entry.path, display(entry.path), entry.size, entry.mtime_ns)
            )
            plan.outcomes.append(
                FileOutcome(entry.path, "moved", None, f"from {display(moved_from)}")
            )

    # -- decode, embed, persist ------------------------------------------------------------

    def _embed_all(self, work: list[WorkItem]) -> None:
        self._progress("model", 0, len(work))
        encoder = self._encoder_factory()
        device_type = getattr(getattr(encoder, "device", None), "type", "cpu")
        opts = self.options
        batch_size = opts.batch_size or (256 if device_type == "cuda" else 32)
        workers = (
            opts.workers if opts.workers is not None else _default_workers(len(work), device_type)
        )
        decode_opts = DecodeOptions(
            max_pixels=opts.max_image_pixels,
            timeout=opts.file_timeout,
            video_interval=opts.video_interval,
            draft_size=_draft_size(encoder),
        )
        preprocess = encoder.preprocess  # resolved here, in this thread (it may export)
        pending: list[Decoded] = []
        frames = 0
        self._progress("embed", 0, len(work))
        # One batch is encoded in a thread while this one decodes the next and writes the
        # one before: the towers (ONNX Runtime, torch) release the GIL, and so do Pillow's
        # decoders. Decoding stays in this thread, where its time limits can use signals.
        encoding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xsearch-encode")
        in_flight: _InFlight | None = None
        try:
            for decoded in iter_decoded(work, preprocess, decode_opts, workers=workers):
                pending.append(decoded)
                frames += decoded.frames
                if frames >= batch_size or len(pending) >= opts.commit_every:
                    in_flight = self._hand_over(encoding, encoder, pending, in_flight, work)
                    pending, frames = [], 0
            if pending:
                in_flight = self._hand_over(encoding, encoder, pending, in_flight, work)
            if in_flight is not None:
                self._persist(in_flight, work)
            encoding.shutdown(wait=True)  # idle by now: no thread outlives a finished run
        finally:
            # On Ctrl-C or an error the batch being encoded is dropped; what was persisted stays.
            encoding.shutdown(wait=False, cancel_futures=True)

    def _embed_elsewhere(self, work: list[WorkItem], stage: EmbedStage) -> None:
        """Commit what ``stage`` returns, ``commit_every`` files at a time."""
        self._progress("model", 0, len(work))
        encoder = self._encoder_factory()
        self._progress("embed", 0, len(work))
        pending: list[Embedded] = []
        for block in stage(work, encoder):
            pending.extend(block)
            if len(pending) >= self.options.commit_every:
                self.commit(pending, work)
                pending = []
        if pending:
            self.commit(pending, work)

    def _hand_over(
        self,
        encoding: ThreadPoolExecutor,
        encoder: Encoder,
        pending: list[Decoded],
        previous: _InFlight | None,
        work: list[WorkItem],
    ) -> _InFlight:
        """Start encoding ``pending``, then persist the batch encoded before it."""
        good = [d for d in pending if d.error is None]
        vectors = encoding.submit(embed_decoded, encoder, good) if good else None
        if good:
            self.report.encoder_calls += 1
        if previous is not None:
            self._persist(previous, work)
        return _InFlight(pending, good, vectors)

    def _persist(self, batch_in_flight: _InFlight, work: list[WorkItem]) -> None:
        """Write an encoded batch (and its failures) and report its files."""
        pending, good = batch_in_flight.pending, batch_in_flight.good
        vectors = batch_in_flight.vectors.result() if batch_in_flight.vectors else []
        results: list[Embedded] = list(zip(good, vectors, strict=True))
        results += [(d, None) for d in pending if d.error is not None]
        self.commit(results, work)

    def commit(self, results: Sequence[Embedded], work: Sequence[WorkItem]) -> None:
        """Write decoded files with their vectors (and the failures) in one transaction, and
        report them. A file already committed in this run is ignored: a retried task
        delivers the same key again and must not write a second row."""
        batch = WriteBatch()
        outcomes: list[FileOutcome] = []
        for decoded, vecs in _first_of_each(results, self._committed):
            item = work[decoded.key]
            if decoded.error is not None or vecs is None:
                reason, detail = decoded.error or ("undecodable", "no vectors came back")
                batch.failures.append(
                    (item.path, display(item.path), item.size, item.mtime_ns, reason, detail)
                )
                outcomes.append(FileOutcome(item.path, not_indexed(reason), reason, detail))
                continue
            frames = _frames(decoded, vecs, self.options.video_dedup_threshold)
            self.report.frames += len(frames)
            batch.upserts.append((_record(item, decoded), frames))
            note = decoded.partial_note
            outcomes.append(
                FileOutcome(item.path, "partial" if note else "indexed", note and "partial", note)
            )
        if not outcomes:
            return
        self.index.apply(self.store.write(batch))
        self._committed.update(d.key for d, _ in results)
        for outcome in outcomes:
            self._emit(outcome)
        self._done += len(outcomes)
        self._progress("embed", self._done, len(work))


def _first_of_each(results: Sequence[Embedded], committed: set[int]) -> Iterator[Embedded]:
    """Each key once, and none that an earlier commit of this run wrote."""
    seen = set(committed)
    for result in results:
        if result[0].key not in seen:
            seen.add(result[0].key)
            yield result


@dataclass
class _InFlight:
    """A decoded batch whose good files' vectors are being computed."""

    pending: list[Decoded]
    good: list[Decoded]
    vectors: Future[list[Vectors]] | None


def _remove_stale_temp_files(location: Path) -> None:
    """Temporary files of an atomic write that a killed run left behind (we hold the lock)."""
    for stale in location.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _work(key: int, entry: ScanEntry) -> WorkItem:
    return WorkItem(
        key=key, path=entry.path, size=entry.size, mtime_ns=entry.mtime_ns, kind=entry.kind
    )


def _hash_or_none(path: bytes, size: int) -> str | None:
    """The content hash, or None when the file cannot be read now (decoding reports why)."""
    try:
        return content_hash(path, size)
    except OSError:
        return None


def _same_content(entry: ScanEntry, state: FileState) -> bool:
    return entry.size == state.size and _hash_or_none(entry.path, entry.size) == state.content_hash


def _default_workers(n_items: int, device_type: str = "cpu") -> int:
    """Decode worker processes: always at least one, so that a decoder that crashes or
    hangs costs its file and not the run; more only where there are cores to spare.

    On a CPU the image tower's threads use all cores, so a machine of 2 cores gets one
    worker; larger CPUs give decoding a quarter of their cores; with a GPU, the cores are
    all free for decoding.
    """
    cores = os.cpu_count() or 1
    if device_type == "cpu":
        return 1 if cores <= 4 or n_items < 16 else cores // 4
    return 1 if n_items < 16 else max(1, min(8, cores - 1))


def _draft_size(encoder: Encoder) -> int | None:
    """Decode JPEGs at the smallest DCT scale that still covers the model's input.

    Vectors from that scale agree with full-size decoding to a cosine of 0.99999 (ViT-B-32-256,
    48 photos of 1600x1200), and decoding costs less: ViT-B-32-256 bf16 indexes 19.1 images/s
    against 17.2 at twice the input size.
    """
    size = getattr(encoder, "input_size", None)
    return int(size) if size else None


def _record(item: WorkItem, decoded: Decoded) -> MediaRecord:
    return MediaRecord(
        path=item.path,
        display_path=display(item.path),
        size=item.size,
        mtime_ns=item.mtime_ns,
        content_hash=decoded.content_hash,
        media_type=decoded.media_type,
        width=decoded.width,
        height=decoded.height,
        duration=decoded.duration,
        fps=decoded.fps,
        captured_at=decoded.captured_at,
        status="partial" if decoded.partial_note else "ok",
        note=decoded.partial_note,
    )


def _frames(decoded: Decoded, vectors: Vectors, threshold: float) -> list[FrameVector]:
    """Frame vectors; for videos, a frame nearly identical to the last kept one is dropped
    and the kept frame's time range stretched over it instead."""
    if decoded.media_type != "video":
        return [FrameVector(vectors[0])]
    kept: list[list[object]] = []
    last: np.ndarray | None = None
    for vec, (t, t_start, t_end) in zip(vectors, decoded.times, strict=True):
        if last is not None and float(vec @ last) >= threshold:
            kept[-1][3] = t_end
            continue
        kept.append([vec, t, t_start, t_end])
        last = vec
    return [FrameVector(k[0], k[1], k[2], k[3]) for k in kept]  # type: ignore[arg-type]
