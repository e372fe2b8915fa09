"""Issue 20: the on-disk kind (ivfpq-disk) builds in shards, searches, changes, reopens and
is repaired by `xsearch doctor`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from xsearch import Engine, Settings
from xsearch import engine as engine_module
from xsearch.cli import app
from xsearch.index.build import build_index
from xsearch.index.exact import exact_search
from xsearch.index.ondisk import DISK_KIND, OnDiskIndex, token_files
from xsearch.index.selector import SelectorPolicy, choose_spec, spec_for_kind
from xsearch.index.stream_build import build_ondisk
from xsearch.index.tuning import recall_at_k
from xsearch.maintenance import check_store

from .conftest import TINY, random_image
from .test_index_selector import DIM, SMALL, ArraySource, clustered

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


N = 4_000


def _built(path: Path, *, shards: int = 4) -> tuple[OnDiskIndex, dict[str, int], np.ndarray]:
    vectors = clustered(N)
    ids = (np.arange(N) * 3 + 5).astype(np.int64)
    spec = spec_for_kind(DISK_KIND, N, DIM, SMALL)
    built = build_ondisk(
        ArraySource(ids, vectors),
        DIM,
        spec,
        SMALL,
        path=path,
        train_size=N,
        shard_vectors=N // shards,
    )
    assert built.shards == shards
    assert built.recall >= SMALL.target_recall
    return built.index, built.params, vectors


def test_the_selector_goes_to_disk_when_no_code_size_fits() -> None:
    policy = SelectorPolicy(exact_below=1_000, memory_budget=5_000 * 16)
    assert choose_spec(5_000, DIM, policy).kind == "ivfpq"  # 8-byte codes + ids fit
    tight = SelectorPolicy(exact_below=1_000, memory_budget=5_000 * 15)
    spec = choose_spec(5_000, DIM, tight)
    assert spec.kind == DISK_KIND and spec.pq_m == DIM  # its codes cost no memory
    assert spec.bytes_per_vector(DIM) * 5_000 <= tight.memory_budget
    assert spec_for_kind("ondisk", 5_000, DIM).kind == DISK_KIND


def test_the_streamed_build_tunes_with_the_policys_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xsearch.index import stream_build

    margins: list[float] = []
    real_tune = stream_build.tune

    def recording(*args: Any, **kwargs: Any) -> Any:
        margins.append(kwargs.get("margin", 0.0))
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(stream_build, "tune", recording)
    _built(tmp_path / "index.faiss", shards=1)
    assert margins == [SMALL.disk_recall_margin] and SMALL.disk_recall_margin > 0


def test_a_sharded_build_searches_like_the_oracle(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    index, _, vectors = _built(path)
    ids = (np.arange(N) * 3 + 5).astype(np.int64)
    assert len(index) == N and np.array_equal(np.sort(index.ids()), ids)
    # The shards were merged into one lists file and removed.
    assert token_files(path, index.token)[".ivfdata"].exists()
    assert not list(tmp_path.glob("*.shard.*"))
    queries = clustered(200, seed=99, spread=1.0)
    _, truth = exact_search(vectors, ids, queries, 10)
    _, found = index.search(queries, 10)
    assert recall_at_k(found, truth) >= 0.93
    # Asking for everything returns everything.
    _, everything = index.search(queries[:1], N)
    assert set(everything[0].tolist()) == set(ids.tolist())


def test_merging_and_opening_from_a_moved_folder_print_nothing_on_stdout(tmp_path: Path) -> None:
    """faiss prints from C while merging ("resizing ...") and when it opens lists from a
    moved folder; stdout may be a command's JSON."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; import faiss; faiss.omp_set_num_threads(1); "
        "from tests.test_ondisk_index import _built; "
        "from xsearch.index.ondisk import OnDiskIndex; "
        f"a, b = Path({str(tmp_path / 'a')!r}), Path({str(tmp_path / 'b')!r}); a.mkdir(); "
        "index = _built(a / 'index.faiss', shards=2)[0]; index.save(a / 'index.faiss'); "
        "a.rename(b); OnDiskIndex.load(b / 'index.faiss'); print('done')"
    )
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert run.stdout == "done\n"
    assert "resizing" in run.stderr and "updating ondisk filename" in run.stderr


def test_add_delete_save_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    index, params, vectors = _built(path)
    ids = (np.arange(N) * 3 + 5).astype(np.int64)
    gone = ids[::4]
    index.remove(gone)
    extra = clustered(30, seed=7)
    added = np.arange(100_000, 100_030, dtype=np.int64)
    index.add(added, extra)
    index.remove(added[:5])  # deleted again from the in-memory delta
    assert len(index) == N - len(gone) + 25
    assert index.tombstones == len(gone) and index.unmerged == 25
    queries = np.vstack([vectors[:40], extra[5:]])
    scores, found = index.search(queries, 10)
    assert not np.isin(found, gone).any() and not np.isin(found, added[:5]).any()
    assert np.isin(found[40:, 0], added[5:]).all()  # an added vector finds itself

    index.save(path)
    again = OnDiskIndex.load(path)
    again.set_search_params(**params)
    assert len(again) == len(index) and again.tombstones == len(gone)
    assert np.array_equal(np.sort(again.ids()), np.sort(index.ids()))
    again_scores, again_found = again.search(queries, 10)
    assert np.array_equal(again_found, found)
    assert np.allclose(again_scores, scores)
    # Re-ranked scores are the exact inner products (from float16 copies).
    row = {int(i): r for r, i in enumerate(ids)}
    first = int(found[0, 0])
    assert abs(scores[0, 0] - vectors[row[first]] @ queries[0]) < 1e-2


def test_a_crash_before_save_leaves_a_readable_index(tmp_path: Path) -> None:
    """Rows added after the last save are not in the saved index; the next save writes its
    own rows over whatever a crashed run left past the saved ones."""
    path = tmp_path / "index.faiss"
    index, params, _ = _built(path, shards=1)
    index.save(path)
    refine = token_files(path, index.token)[".refine"]
    with refine.open("ab") as fh:  # what a crashed writer may leave behind
        fh.write(np.full((7, DIM), 9.0, dtype=np.float16).tobytes())
    index.add(np.arange(50_000, 50_010, dtype=np.int64), clustered(10, seed=3))
    again = OnDiskIndex.load(path)
    assert len(again) == N
    again.set_search_params(**params)
    assert (again.search(clustered(5, seed=4), 10)[1] >= 0).all()
    added, vectors = np.arange(60_000, 60_004, dtype=np.int64), clustered(4, seed=5)
    again.add(added, vectors)
    again.save(path)
    third = OnDiskIndex.load(path)
    got, rows = third.refine.fetch(added)
    assert np.array_equal(got, added) and np.allclose(rows, vectors, atol=1e-2)
    assert refine.stat().st_size == (N + 4) * 2 * DIM


def test_a_second_process_adding_to_the_saved_index_keeps_the_rows_apart(
    tmp_path: Path,
) -> None:
    """A query process reconciling (adding) beside the index run: neither cuts or shifts the
    other's refine rows, because rows added after a load stay private until that one saves."""
    path = tmp_path / "index.faiss"
    index, _, _ = _built(path, shards=1)
    index.save(path)
    writer = OnDiskIndex.load(path)
    ours, our_vectors = np.arange(60_000, 60_010, dtype=np.int64), clustered(10, seed=11)
    writer.add(ours, our_vectors)
    reader = OnDiskIndex.load(path)  # opened while the writer holds unsaved rows
    theirs, their_vectors = np.arange(70_000, 70_010, dtype=np.int64), clustered(10, seed=12)
    reader.add(theirs, their_vectors)
    writer.save(path)
    for opened, ids, vectors in ((writer, ours, our_vectors), (reader, theirs, their_vectors)):
        got, rows = opened.refine.fetch(ids)
        assert np.array_equal(got, ids) and np.allclose(rows, vectors, atol=1e-2)
    again = OnDiskIndex.load(path)
    got, rows = again.refine.fetch(ours)
    assert np.allclose(rows, our_vectors, atol=1e-2)
    assert not np.isin(theirs, again.ids()).any()
    # The rows before the writer's are the build's, unchanged.
    got, rows = again.refine.fetch(index.refine.ids()[:5])
    assert np.array_equal(rows, index.refine.fetch(index.refine.ids()[:5])[1])


def test_save_syncs_the_lists_file_before_the_header_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """merge_ondisk writes the lists through a mapping without syncing them."""
    import os

    from xsearch.index import ondisk

    path = tmp_path / "index.faiss"
    index, _, _ = _built(path, shards=2)
    events: list[str] = []
    real_fsync, real_write = os.fsync, ondisk.atomic_write

    def fsync(fd: int) -> None:
        events.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def atomic_write(target: Path, write: Any) -> None:
        events.append("write " + target.name)
        real_write(target, write)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(ondisk, "atomic_write", atomic_write)
    index.save(path)
    lists = token_files(path, index.token)[".ivfdata"].name
    assert f"fsync {lists}" in events
    assert events.index(f"fsync {lists}") < events.index("write index.faiss")


def test_saved_under_another_name_it_opens_from_its_own_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    index, params, _ = _built(tmp_path / "a" / "index.faiss", shards=1)
    queries = clustered(20, seed=8)
    _, found = index.search(queries, 10)
    moved = tmp_path / "b" / "x.faiss"
    index.save(moved)
    again = OnDiskIndex.load(moved)
    again.set_search_params(**params)
    assert len(again) == N and np.array_equal(again.search(queries, 10)[1], found)
    assert token_files(moved, again.token)[".ivfdata"].exists()


def test_a_missing_or_short_file_refuses_to_load(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    index, _, _ = _built(path, shards=2)
    index.save(path)
    files = token_files(path, index.token)
    with files[".ivfdata"].open("rb+") as fh:
        fh.truncate(files[".ivfdata"].stat().st_size // 2)
    with pytest.raises(Exception, match="bytes"):
        OnDiskIndex.load(path)
    files[".ivfdata"].unlink()
    with pytest.raises(Exception):  # noqa: B017  (faiss or the stat: either refuses)
        OnDiskIndex.load(path)


def test_build_index_needs_a_path_for_the_disk_kind() -> None:
    from xsearch.errors import ConfigError

    vectors = clustered(500)
    source = ArraySource(np.arange(500, dtype=np.int64), vectors)
    with pytest.raises(ConfigError, match="path"):
        build_index(source, DIM, spec_for_kind(DISK_KIND, 500, DIM, SMALL), SMALL)


# -- through the engine: the manager, rebuild-index and doctor ---------------------------

# 40 tiny-model vectors: codes of 4-bit sub-quantisers train on so few.
TINY_POLICY = SelectorPolicy(
    exact_below=20, memory_budget=1 << 40, pq_bytes=(8, 4), pq_bits=4, tuning_queries=40
)


def _forty_photos(tmp_path: Path) -> tuple[Path, Settings]:
    """40 random pictures, and the settings of a new disk-kind store of the tiny model."""
    photos = tmp_path / "many"
    for i in range(40):
        random_image(photos / f"p{i:02d}.jpg", 3000 + i, size=(40, 30))
    settings = Settings(store=tmp_path / "store", model=TINY, device="cpu", index_kind=DISK_KIND)
    return photos, settings


@pytest.fixture
def disk_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setattr(engine_module, "SelectorPolicy", lambda: TINY_POLICY)
    photos, settings = _forty_photos(tmp_path)
    with Engine(settings) as engine:
        engine.index([photos])
        info = engine.info()
        assert info.index_kind == DISK_KIND and info.index_vectors == 40
        assert info.index_recall_at_10 is not None and info.index_recall_at_10 >= 0.95
    return photos, tmp_path / "store"


def _settings(store: Path) -> Settings:
    return Settings(store=store, index_kind=DISK_KIND)


def test_the_engine_indexes_deletes_and_reopens_the_disk_kind(
    disk_store: tuple[Path, Path],
) -> None:
    photos, store = disk_store
    first_build = {p.name for p in store.glob("index.faiss.*.ivfdata")}
    with Engine(_settings(store)) as engine:
        assert len(engine.search("anything", limit=50)) == 40
        for i in range(0, 40, 4):
            (photos / f"p{i:02d}.jpg").unlink()
        random_image(photos / "new.jpg", 77, size=(40, 30))
        report = engine.index([photos])
        assert report.counts["removed"] == 10
    with Engine(_settings(store)) as engine:
        info = engine.info()
        assert info.index_kind == DISK_KIND and info.index_vectors == 31
        names = {Path(h.path).name for h in engine.search("anything", limit=50)}
        assert len(names) == 31 and "p00.jpg" not in names and "new.jpg" in names
        assert check_store(engine).lines[-1].startswith("OK")
    # 10 tombstones in 31 vectors passed compact_above (20 %): the index was built anew.
    compacted = {p.name for p in store.glob("index.faiss.*.ivfdata")}
    assert len(compacted) == 1 and compacted != first_build


def test_a_build_under_the_target_recall_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No setting reaches a recall above 1: the build keeps its best and must not be silent.
    unreachable = dataclasses.replace(TINY_POLICY, target_recall=1.01, disk_recall_margin=0.0)
    monkeypatch.setattr(engine_module, "SelectorPolicy", lambda: unreachable)
    photos, settings = _forty_photos(tmp_path)
    with Engine(settings) as engine:
        engine.index([photos])
        assert engine.info().index_kind == DISK_KIND
        assert any("under the target 1.01" in n for n in engine.notices)


def test_rebuild_index_makes_one_build_and_removes_the_last(disk_store: tuple[Path, Path]) -> None:
    _, store = disk_store
    before = {p.name for p in store.glob("index.faiss.*.ivfdata")}
    with Engine(_settings(store)) as engine:
        engine.rebuild_index()
    after = {p.name for p in store.glob("index.faiss.*.ivfdata")}
    assert len(before) == len(after) == 1 and before != after
    with Engine(_settings(store)) as engine:
        assert len(engine.search("anything", limit=50)) == 40


@pytest.mark.parametrize("damage", ["lists-missing", "lists-short", "refine-garbage", "delta"])
def test_doctor_repairs_the_disk_kind(
    disk_store: tuple[Path, Path], damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store = disk_store
    lists = next(store.glob("index.faiss.*.ivfdata"))
    token = lists.name.split(".")[2]
    files = token_files(store / "index.faiss", token)
    if damage == "lists-missing":
        lists.unlink()
    elif damage == "lists-short":
        with lists.open("rb+") as fh:
            fh.truncate(10)
    elif damage == "refine-garbage":
        size = files[".refine"].stat().st_size
        rng = np.random.default_rng(0)
        files[".refine"].write_bytes(rng.integers(0, 255, size, dtype=np.uint8).tobytes())
    else:
        files[".delta"].unlink()
    monkeypatch.setenv("XSEARCH_INDEX_KIND", DISK_KIND)
    runner = CliRunner()
    done = runner.invoke(app, ["doctor", "--store", str(store)])
    assert done.exit_code == 0, done.output
    assert "Repaired" in done.output
    again = runner.invoke(app, ["doctor", "--store", str(store)])
    assert "OK: the vector index agrees with the store." in again.output
    with Engine(_settings(store)) as engine:
        assert engine.info().index_kind == DISK_KIND
        assert len(engine.search("anything", limit=50)) == 40
    assert len(list(store.glob("index.faiss.*.ivfdata"))) == 1  # the damaged build is gone
