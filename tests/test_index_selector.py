"""Issue 6: the index chooses itself, reaches its recall target, and handles deletions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

from xsearch import Engine, Settings
from xsearch import engine as engine_module
from xsearch.cli import app
from xsearch.errors import ConfigError
from xsearch.index.build import build_index, source_reranker
from xsearch.index.exact import NumpyIndex, exact_search
from xsearch.index.faiss_index import FaissIndex
from xsearch.index.selector import (
    IndexSpec,
    SelectorPolicy,
    choose_spec,
    outgrown,
    spec_for_kind,
)
from xsearch.index.torch_index import TorchExactIndex
from xsearch.index.tuning import RunningTopK, recall_at_k

from .conftest import TINY, random_image

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


DIM = 32
# Small enough to train in well under a second; thresholds are moved to match.
SMALL = SelectorPolicy(
    exact_below=1_000,
    memory_budget=1 << 40,
    hnsw_below=1 << 40,
    hnsw_m=16,
    pq_bytes=(8, 4),
    pq_bits=6,
    nlist_per_sqrt=1.0,
    train_per_list=39,
    min_nlist=4,
    tuning_queries=200,
)


def clustered(
    n: int, dim: int = DIM, *, seed: int = 0, spread: float = 0.6
) -> npt.NDArray[np.float32]:
    """Unit vectors around 50 fixed centres: like image embeddings, unlike uniform noise."""
    centres = np.random.default_rng(1234).standard_normal((50, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 50, n)]
    x = x + spread * rng.standard_normal((n, dim)).astype(np.float32)
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


class ArraySource:
    """An in-memory stand-in for the store: ids and vectors, streamed in chunks."""

    def __init__(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self.ids = ids
        self.vectors = vectors
        self.row = {int(i): r for r, i in enumerate(ids)}

    def vector_ids(self) -> npt.NDArray[np.int64]:
        return np.sort(self.ids)

    def iter_vectors(
        self, ids: Iterable[int] | None = None
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        wanted = self.ids if ids is None else np.asarray(list(ids), dtype=np.int64)
        for start in range(0, len(wanted), 1000):
            part = wanted[start : start + 1000]
            yield part, self.vectors[[self.row[int(i)] for i in part]]


# -- the selector ------------------------------------------------------------------------


def test_default_policy_keeps_small_stores_exact() -> None:
    for count in (0, 7, 10_000, 99_999):
        assert choose_spec(count, 512).kind == "flat"
    assert not choose_spec(100_000, 512).exact


@pytest.mark.parametrize(
    ("count", "budget", "expected"),
    [
        (500, 1 << 40, "flat"),  # below exact_below
        (5_000, 1 << 40, "hnsw"),  # fits with its graph
        (5_000, 5_000 * (DIM + 8), "ivf-sq8"),  # only one byte per dimension fits
        (5_000, 5_000 * 16, "ivfpq"),  # only product-quantised codes fit
    ],
)
def test_chosen_kind_per_size_and_budget(count: int, budget: int, expected: str) -> None:
    policy = SelectorPolicy(exact_below=1_000, memory_budget=budget)
    spec = choose_spec(count, DIM, policy)
    assert spec.kind == expected
    if not spec.exact:
        assert spec.bytes_per_vector(DIM) * count <= budget
    if spec.kind in ("ivf-sq8", "ivfpq"):
        assert spec.nlist & (spec.nlist - 1) == 0  # a power of two
        assert spec.nlist * policy.train_per_list <= count


def test_hnsw_gives_way_to_ivf_for_large_collections() -> None:
    policy = SelectorPolicy(exact_below=1_000, memory_budget=1 << 40, hnsw_below=10_000)
    assert choose_spec(9_999, DIM, policy).kind == "hnsw"
    assert choose_spec(10_000, DIM, policy).kind == "ivf-sq8"


def test_gpu_stays_exact_longer() -> None:
    assert choose_spec(2_000_000, 512, gpu=True).kind == "flat"
    assert not choose_spec(2_000_000, 512).exact


def test_overrides_and_unknown_kinds() -> None:
    assert spec_for_kind("ivf", 10_000, DIM).kind == "ivf-sq8"
    assert spec_for_kind("hnsw", 10, DIM).kind == "hnsw"
    assert spec_for_kind("flat", 10**7, DIM).kind == "flat"
    with pytest.raises(ConfigError, match="Unknown index kind"):
        spec_for_kind("annoy", 10, DIM)


def test_outgrown_rebuilds_geometrically_without_flapping() -> None:
    policy = SelectorPolicy(exact_below=1_000, memory_budget=1 << 40)
    flat = IndexSpec(kind="flat", sized_for=10)
    assert not outgrown(flat, 999, DIM, policy)
    assert outgrown(flat, 1_000, DIM, policy)
    assert not outgrown(flat, 10**6, DIM, policy, auto=False)
    hnsw = IndexSpec(kind="hnsw", hnsw_m=32, sized_for=1_000)
    assert not outgrown(hnsw, 3_999, DIM, policy)
    assert outgrown(hnsw, 4_000, DIM, policy)
    assert not outgrown(hnsw, 600, DIM, policy)  # under the threshold, above half of it
    assert outgrown(hnsw, 400, DIM, policy)


# -- building, recall against the numpy oracle -------------------------------------------


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-sq8", "hnsw", "ivfpq"])
def test_approximate_index_reaches_recall_against_oracle(kind: str) -> None:
    vectors = clustered(6_000)
    ids = (np.arange(len(vectors)) * 7 + 3).astype(np.int64)
    source = ArraySource(ids, vectors)
    built = build_index(source, DIM, spec_for_kind(kind, len(ids), DIM, SMALL), SMALL)
    assert built.spec.kind == kind and built.fell_back_from == ()
    assert built.recall is not None and built.recall >= 0.95
    assert len(built.index) == len(ids)
    assert np.array_equal(np.sort(built.index.ids()), np.sort(ids))
    # Fresh queries the tuner never saw: from the data's distribution, further out.
    queries = clustered(200, seed=99, spread=1.0)
    _, truth = exact_search(vectors, ids, queries, 10)
    _, found = built.index.search(queries, 10)
    assert recall_at_k(found, truth) >= 0.93


def test_unreachable_recall_falls_back_to_exact() -> None:
    vectors = clustered(3_000)
    ids = np.arange(len(vectors), dtype=np.int64)
    impossible = replace(SMALL, target_recall=1.01)
    built = build_index(
        ArraySource(ids, vectors), DIM, spec_for_kind("ivfpq", 3_000, DIM, SMALL), impossible
    )
    assert built.spec.kind == "flat" and built.recall is None
    assert built.fell_back_from == ("ivfpq", "ivf-sq8", "ivf-flat")


@pytest.mark.parametrize("kind", ["flat", "ivf-flat", "ivf-sq8", "hnsw", "ivfpq"])
def test_deletions_work_for_every_kind(kind: str, tmp_path: Path) -> None:
    vectors = clustered(3_000)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    source = ArraySource(ids, vectors)
    built = build_index(source, DIM, spec_for_kind(kind, len(ids), DIM, SMALL), SMALL)
    index = built.index
    gone = ids[::3]
    index.remove(gone)
    assert len(index) == len(ids) - len(gone)
    assert not np.isin(index.ids(), gone).any()
    _, found = index.search(vectors[:50], 10)
    assert not np.isin(found, gone).any()
    assert (found >= 0).all()
    # Asking for everything returns everything, approximate or not.
    _, everything = index.search(vectors[:2], len(index))
    assert set(everything[0].tolist()) == set(index.ids().tolist())
    # The saved index (and its tombstones, for hnsw) come back as they were.
    path = tmp_path / "index.faiss"
    index.save(path)
    if isinstance(index, FaissIndex):
        again = FaissIndex.load(path, kind)
        again.reranker = index.reranker
        again.set_search_params(**built.params)
        assert len(again) == len(index)
        _, found_again = again.search(vectors[:50], 10)
        assert not np.isin(found_again, gone).any()


@pytest.mark.parametrize("kind", ["flat", "ivf-flat", "ivf-sq8", "hnsw", "ivfpq"])
def test_a_saved_index_is_mapped_until_its_first_change(kind: str, tmp_path: Path) -> None:
    """faiss aborts the process on changing a mapped index: the first change copies it, from
    the file while it is the one mapped, else (replaced, removed) from the mapping itself."""
    vectors = clustered(3_000)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    built = build_index(
        ArraySource(ids, vectors), DIM, spec_for_kind(kind, len(ids), DIM, SMALL), SMALL
    )
    path = tmp_path / "index.faiss"
    built.index.save(path)
    queries, extra = vectors[:20], clustered(5, seed=7)
    added = np.arange(10_001, 10_006, dtype=np.int64)

    def loaded(mapped: bool) -> FaissIndex:
        index = FaissIndex.load(path, kind, mapped=mapped)
        index.set_search_params(**built.params)
        if kind == "ivfpq":  # re-ranks with exact vectors: those added below too
            everything = ArraySource(np.concatenate([ids, added]), np.vstack([vectors, extra]))
            index.reranker = source_reranker(everything)
        return index

    for meanwhile in ("nothing", "replaced", "removed"):
        mapped, owned = loaded(True), loaded(False)
        assert mapped.mapped and not owned.mapped
        assert np.array_equal(mapped.search(queries, 10)[1], owned.search(queries, 10)[1])
        if meanwhile == "replaced":  # another process saves a different index
            FaissIndex.flat(DIM).save(path)
        elif meanwhile == "removed":  # `xsearch info --check` removes a bad one
            path.unlink()
        for index in (mapped, owned):
            index.add(added, extra)
            index.remove(ids[:10])
        assert not mapped.mapped and len(mapped) == len(owned) == len(ids) - 5
        _, found = mapped.search(np.vstack([queries, extra]), 10)
        assert np.array_equal(found, owned.search(np.vstack([queries, extra]), 10)[1])
        assert not np.isin(found, ids[:10]).any() and np.isin(found[-5:, 0], added).all()
        built.index.save(path)


def test_running_top_k_equals_exact_search() -> None:
    vectors = clustered(2_500)
    ids = np.arange(len(vectors), dtype=np.int64)[::-1].copy()
    queries = clustered(20, seed=5)
    top = RunningTopK(queries, 10)
    for start in range(0, len(ids), 700):
        top.update(ids[start : start + 700], vectors[start : start + 700])
    _, truth = exact_search(vectors, ids, queries, 10)
    for got, want in zip(top.ids, truth, strict=True):
        assert set(got.tolist()) == set(want.tolist())


def test_torch_exact_index_equals_oracle() -> None:
    vectors = clustered(3_000)
    ids = np.arange(3_000, dtype=np.int64) * 2
    base = NumpyIndex(DIM)
    base.add(ids[:1000], vectors[:1000])
    index = TorchExactIndex.mirror(base, DIM, device="cpu")
    index.add(ids[1000:], vectors[1000:])
    index.remove(ids[:10])
    queries = clustered(30, seed=3)
    scores, found = index.search(queries, 10)
    oracle_scores, oracle_ids = exact_search(vectors[10:], ids[10:], queries, 10)
    np.testing.assert_array_equal(found, oracle_ids)
    np.testing.assert_allclose(scores, oracle_scores, atol=1e-5)
    assert len(index) == len(base) == 2_990


# -- the manager, through the engine -----------------------------------------------------


def test_store_grows_into_an_approximate_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_policy = SelectorPolicy(exact_below=20, memory_budget=1 << 40, hnsw_m=8, tuning_queries=40)
    monkeypatch.setattr(engine_module, "SelectorPolicy", lambda: tiny_policy)
    photos = tmp_path / "many"
    for i in range(40):
        random_image(photos / f"p{i:02d}.jpg", 1000 + i, size=(40, 30))
    settings = Settings(store=tmp_path / "store", model=TINY, device="cpu")
    with Engine(settings) as engine:
        engine.index([photos])
        info = engine.info()
        assert info.index_kind == "hnsw"
        assert info.index_recall_at_10 is not None and info.index_recall_at_10 >= 0.95
        assert "efSearch" in info.index_params
        all_hits = engine.search("anything", limit=50)
        assert len(all_hits) == 40
        for i in range(0, 40, 4):
            (photos / f"p{i:02d}.jpg").unlink()
        report = engine.index([photos])
        assert report.counts["removed"] == 10
        assert len(engine.search("anything", limit=50)) == 30
    with Engine(Settings(store=tmp_path / "store")) as engine:
        info = engine.info()
        assert info.index_kind == "hnsw" and info.index_vectors == 30
        names = {Path(h.path).name for h in engine.search("anything", limit=50)}
        assert len(names) == 30 and "p00.jpg" not in names
    shown = CliRunner().invoke(app, ["info", "--store", str(tmp_path / "store"), "--json"])
    doc = json.loads(shown.output)
    assert doc["index_kind"] == "hnsw" and doc["index_recall_at_10"] >= 0.95
    assert doc["index_params"].startswith("efSearch=")


# -- CPU precision (issue 6: fast paths must agree with fp32) -----------------------------


def test_bf16_image_tower_agrees_with_fp32(photos: Path) -> None:
    import torch
    from PIL import Image

    from xsearch import get_profile
    from xsearch.encoders.torch_backend.openclip import OpenClipEncoder
    from xsearch.errors import ModelError

    fp32 = OpenClipEncoder(get_profile(TINY), device="cpu", precision="fp32")
    bf16 = OpenClipEncoder(get_profile(TINY), device="cpu", precision="bf16")
    pixels = torch.stack(
        [fp32.preprocess(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.jpg"))]
    )
    a, b = fp32.encode_images(pixels), bf16.encode_images(pixels)
    assert b.dtype == np.float32
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99
    text = np.sum(fp32.encode_texts(["x", "a cat"]) * bf16.encode_texts(["x", "a cat"]), axis=1)
    assert float(text.min()) > 0.999
    with pytest.raises(ModelError, match="Unknown precision"):
        OpenClipEncoder(get_profile(TINY), device="cpu", precision="fp8")


def test_a_single_query_runs_on_one_openmp_thread_and_leaves_the_setting_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import faiss

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    index = FaissIndex.flat(16)
    index.add(np.arange(500, dtype=np.int64), vectors)
    seen: list[int] = []
    inner = index._search

    def spy(queries: npt.NDArray[np.float32], k: int) -> object:
        seen.append(faiss.omp_get_max_threads())
        return inner(queries, k)

    monkeypatch.setattr(index, "_search", spy)
    faiss.omp_set_num_threads(2)
    index.search(vectors[:1], 5)
    index.search(vectors[:50], 5)
    assert seen == [1, 2]
    assert faiss.omp_get_max_threads() == 2


def test_rebuild_index_on_demand_takes_a_kind_and_a_memory_budget(tmp_path: Path) -> None:
    photos = tmp_path / "many"
    for i in range(40):
        random_image(photos / f"p{i:02d}.jpg", 2000 + i, size=(40, 30))
    store = str(tmp_path / "store")
    runner = CliRunner()
    done = runner.invoke(app, ["index", str(photos), "--store", store, "--model", TINY])
    assert done.exit_code == 0, done.output

    hnsw = runner.invoke(app, ["rebuild-index", "--store", store, "--index-kind", "hnsw"])
    assert hnsw.exit_code == 0, hnsw.output
    assert "as hnsw: 40 vectors, recall@10" in hnsw.output
    doc = json.loads(runner.invoke(app, ["info", "--store", store, "--json"]).output)
    assert doc["index_kind"] == "hnsw" and doc["index_recall_at_10"] >= 0.95
    with Engine(Settings(store=tmp_path / "store")) as engine:  # auto keeps what was built
        assert len(engine.search("anything", limit=50)) == 40
        assert engine.info().index_kind == "hnsw"

    again = runner.invoke(app, ["rebuild-index", "--store", store])
    assert again.exit_code == 0 and "as flat: 40 vectors (exact)" in again.output

    bad = runner.invoke(app, ["rebuild-index", "--store", store, "--index-kind", "kd-tree"])
    assert bad.exit_code == 2 and "Unknown index kind 'kd-tree'" in bad.output
    small = runner.invoke(app, ["index", str(photos), "--store", store, "--index-memory", "1"])
    assert small.exit_code == 2 and "at least 16 MiB" in small.output
    budget = Settings(store=tmp_path / "store", index_memory_mb=64)
    with Engine(budget) as engine:
        assert engine._index_manager(engine.store()).policy.memory_budget == 64 << 20


def test_index_settings_from_the_environment() -> None:
    env = Settings.from_env({"XSEARCH_INDEX_KIND": "ivf", "XSEARCH_INDEX_MEMORY_MB": "512"})
    assert env.index_kind == "ivf" and env.index_memory_mb == 512
    with pytest.raises(ConfigError, match="XSEARCH_INDEX_MEMORY_MB must be a number"):
        Settings.from_env({"XSEARCH_INDEX_MEMORY_MB": "1GB"})
    with pytest.raises(ConfigError, match="Unknown index kind 'lsh'"):
        Settings.from_env({"XSEARCH_INDEX_KIND": "lsh"})
