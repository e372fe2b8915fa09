"""Issue 2: the core engine end to end, through the library and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import xsearch
from xsearch import Engine, IndexOptions, Settings
from xsearch.cli import app
from xsearch.errors import ModelUnavailableError
from xsearch.index.exact import NumpyIndex, exact_search
from xsearch.index.faiss_index import FaissIndex

from .conftest import TINY, random_image


def _index(runner: CliRunner, *args: str) -> object:
    return runner.invoke(app, ["index", *args], catch_exceptions=False)


def test_public_api_is_complete() -> None:
    exported = set(xsearch.__all__)
    public = {n for n in dir(xsearch) if not n.startswith("_") and n[0].isupper()}
    assert public <= exported
    assert {"Engine", "SearchHit", "XSearchError", "Settings"} <= exported


def test_cli_index_then_query_json(runner: CliRunner, photos: Path) -> None:
    result = _index(runner, str(photos), "--store", "st", "--model", TINY)
    assert result.exit_code == 0, result.output
    assert "7 indexed" in result.output
    result = runner.invoke(app, ["query", "a cat", "--store", "st", "--json", "--limit", "3"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert len(doc["results"]) == 3
    for item in doc["results"]:
        assert {"path", "score", "media_type", "id"} <= item.keys()
        assert item["media_type"] == "image"
        assert Path(item["path"]).is_file()
    scores = [r["score"] for r in doc["results"]]
    assert scores == sorted(scores, reverse=True)
    paths = runner.invoke(app, ["query", "a cat", "--store", "st", "--paths", "--limit", "2"])
    assert paths.output.splitlines() == [r["path"] for r in doc["results"][:2]]
    table = runner.invoke(app, ["query", "a cat", "--store", "st"])
    assert table.exit_code == 0 and "p" in table.output


def test_store_env_var_and_info(
    runner: CliRunner, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSEARCH_HOME", "envstore")
    assert _index(runner, str(photos), "--model", TINY).exit_code == 0
    info = runner.invoke(app, ["info", "--json"])
    doc = json.loads(info.output)
    assert doc["model"] == TINY and doc["images"] == 7 and doc["vectors"] == 7
    assert doc["index_vectors"] == 7
    assert Path("envstore/xsearch.db").exists()


def test_reindex_skips_unchanged_and_tracks_changes(engine: Engine, photos: Path) -> None:
    first = engine.index([photos])
    assert first.counts["indexed"] == 7
    again = engine.index([photos])
    assert again.counts["unchanged"] == 7 and again.counts["indexed"] == 0
    assert again.encoder_calls == 0
    # Unchanged files are only counted when no one listens; a listener hears each one.
    heard: list[str] = []
    listened = engine.index([photos], on_outcome=lambda o: heard.append(o.outcome))
    assert listened.counts["unchanged"] == 7 and heard == ["unchanged"] * 7

    (photos / "p0.jpg").unlink()
    random_image(photos / "p1.jpg", 1234)  # same name, new content
    os.utime(photos / "p1.jpg", ns=(time.time_ns(), time.time_ns() + 10_000_000_000))
    third = engine.index([photos])
    assert third.counts["removed"] == 1
    assert third.counts["indexed"] == 1
    hits = engine.search("anything", limit=50)
    names = sorted(Path(h.path).name for h in hits)
    assert "p0.jpg" not in names and len(hits) == 6
    assert engine.info().vectors == 6 and engine.info().index_vectors == 6


def test_modified_file_gets_new_vector(engine: Engine, photos: Path) -> None:
    engine.index([photos])
    target = photos / "p2.jpg"
    before = {h.path: h.score for h in engine.search("x", limit=50)}
    random_image(target, 777, size=(80, 60))
    engine.index([photos])
    rows = engine.store().states_under([os.fsencode(target)])
    assert len(rows) == 1
    after = {h.path: h.score for h in engine.search("x", limit=50)}
    assert after[str(target)] != before[str(target)]


def test_broken_file_is_reported_and_run_continues(runner: CliRunner, photos: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.jpg").write_text("hello")
    result = runner.invoke(
        app, ["index", str(photos), "--store", "st", "--model", TINY, "--report", "r.jsonl"]
    )
    assert result.exit_code == 4, result.output
    assert (
        "7 indexed" in result.output
        and "1 skipped" in result.output
        and "1 failed" in result.output
    )
    lines = [json.loads(x) for x in Path("r.jsonl").read_text().splitlines()]
    outcome = {Path(x["path"]).name: x for x in lines}
    assert outcome["broken.jpg"]["outcome"] == "failed"
    assert outcome["notes.jpg"]["reason"] == "unsupported"
    assert outcome["notes.jpg"]["outcome"] == "skipped"
    assert outcome["p0.jpg"]["outcome"] == "indexed"


def test_wrong_model_is_refused(runner: CliRunner, photos: Path) -> None:
    assert _index(runner, str(photos), "--store", "st", "--model", TINY).exit_code == 0
    result = runner.invoke(
        app, ["index", str(photos), "--store", "st", "--model", "tiny-test-other"]
    )
    assert result.exit_code == 2
    assert "was built with model 'tiny-test'" in result.output
    assert "Traceback" not in result.output


def test_missing_store_gives_helpful_message(runner: CliRunner) -> None:
    result = runner.invoke(app, ["query", "cat", "--store", "nowhere"])
    assert result.exit_code == 1
    assert "No xsearch store at nowhere" in result.output
    assert "Traceback" not in result.output


def test_unknown_model_and_missing_folder(runner: CliRunner) -> None:
    result = runner.invoke(app, ["index", ".", "--model", "no-such-model"])
    assert result.exit_code == 2 and "Unknown model profile" in result.output
    result = runner.invoke(app, ["index", "does-not-exist"])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_alembic_round_trip(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from xsearch.store import migrate

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert {"media", "vectors", "store_meta", "failures"} <= set(inspect(engine).get_table_names())
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_a_migration_killed_half_way_leaves_no_table_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL in the middle of creating a store: the next run must open it, not find
    tables without the revision that made them."""
    import sqlite3

    from alembic import command

    from xsearch.store.repository import Store

    real = command.upgrade

    def dies_before_commit(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # every CREATE TABLE has run
        raise KeyboardInterrupt  # as a kill: nothing after this line happens

    monkeypatch.setattr(command, "upgrade", dies_before_commit)
    with pytest.raises(KeyboardInterrupt):
        Store(tmp_path / "s", create=True)
    with sqlite3.connect(tmp_path / "s" / "xsearch.db") as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == []
    monkeypatch.setattr(command, "upgrade", real)
    Store(tmp_path / "s", create=True).close()


def test_the_known_head_is_alembic_s_head_and_an_up_to_date_store_opens_without_alembic(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from xsearch.store import migrate
    from xsearch.store.repository import Store

    assert migrate.head_revision() == migrate.KNOWN_HEAD
    Store(tmp_path / "s", create=True).close()
    code = (
        "import sys; from pathlib import Path; from xsearch.store.repository import Store; "
        "Store(Path(sys.argv[1])).close(); print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_faiss_equals_numpy_oracle() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    queries = vectors[:20] + 0.1 * rng.normal(size=(20, 32)).astype(np.float32)
    faiss_index = FaissIndex.flat(32)
    faiss_index.add(ids, vectors)
    numpy_index = NumpyIndex(32)
    numpy_index.add(ids, vectors)
    f_scores, f_ids = faiss_index.search(queries, 10)
    n_scores, n_ids = numpy_index.search(queries, 10)
    np.testing.assert_array_equal(f_ids, n_ids)
    np.testing.assert_allclose(f_scores, n_scores, rtol=1e-5, atol=1e-5)
    faiss_index.remove(ids[:100])
    numpy_index.remove(ids[:100])
    np.testing.assert_array_equal(
        faiss_index.search(queries, 10)[1], numpy_index.search(queries, 10)[1]
    )
    oracle = exact_search(vectors, ids, queries, 600)
    assert (oracle[1][:, 500:] == -1).all()


def test_offline_missing_weights_message_is_fast(tmp_path: Path) -> None:
    settings = Settings(
        store=tmp_path / "s",
        model="mclip-b32",
        model_cache_dir=tmp_path / "empty-cache",
        hub_endpoint="http://127.0.0.1:9",
        hub_probe_timeout=2.0,
    )
    from xsearch.encoders.model_files import required_hub_files
    from xsearch.encoders.profiles import get_profile

    required_hub_files(get_profile("mclip-b32"))  # reads open_clip's registry: not what is timed
    started = time.monotonic()
    with Engine(settings) as engine, pytest.raises(ModelUnavailableError) as caught:
        _ = engine.encoder
    # The hub client alone would retry for about 46 s per file; a loaded machine stays far below.
    assert time.monotonic() - started < 20
    message = str(caught.value)
    assert "mclip-b32" in message and "xlm-roberta-base-ViT-B-32" in message
    assert "--checkpoint" in message and "xsearch models --download" in message


def test_offline_message_through_cli(
    runner: CliRunner, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSEARCH_MODEL_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = runner.invoke(app, ["index", str(photos), "--store", "st"])
    assert result.exit_code == 1
    assert "cannot be downloaded" in result.output and "Traceback" not in result.output


def test_models_command_lists_profiles(runner: CliRunner) -> None:
    result = runner.invoke(app, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["mclip-b32"]["default"] is True
    assert rows["mclip-b32"]["languages"] == "multilingual"
    assert rows["nllb-siglip-base"]["commercial_use"] is False
    assert {"fast", "default", "best"} <= {r["tier"] for r in rows.values()}


def test_workers_give_same_vectors_as_serial(tmp_path: Path, photos: Path) -> None:
    def vectors(workers: int, store: str) -> dict[str, np.ndarray]:
        with Engine(Settings(store=tmp_path / store, model=TINY)) as e:
            e.index([photos], IndexOptions(workers=workers, batch_size=3))
            s = e.store()
            ids, matrix = next(s.iter_vectors())
            rows = s.hit_rows(ids.tolist())
            return {rows[int(i)].display_path: v for i, v in zip(ids, matrix, strict=True)}

    serial = vectors(0, "a")
    parallel = vectors(2, "b")
    assert serial.keys() == parallel.keys() and len(serial) == 7
    for key in serial:
        np.testing.assert_allclose(serial[key], parallel[key], atol=1e-6)


def test_a_batch_is_encoded_while_the_next_one_decodes(tmp_path: Path, photos: Path) -> None:
    """The encoder works in its own thread: the first batch's encoding waits until the
    second batch has started decoding, which a serial pipeline never lets happen."""
    import threading

    decoded = threading.Semaphore(0)
    seen: list[tuple[str, bool]] = []

    class Watched:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        @property
        def preprocess(self) -> Any:
            inner = self._inner.preprocess

            def counted(image: Any) -> Any:
                decoded.release()
                return inner(image)

            return counted

        def encode_images(self, pixels: Any) -> Any:
            # Batch 1 holds files 1-3; file 4 is decoded only if decoding goes on meanwhile.
            overlapped = all(decoded.acquire(timeout=20) for _ in range(4)) if not seen else True
            seen.append((threading.current_thread().name, overlapped))
            return self._inner.encode_images(pixels)

    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        engine._encoder = Watched(engine.encoder)
        report = engine.index([photos], IndexOptions(workers=0, batch_size=3))
        assert report.counts["indexed"] == 7 and engine.store().counts()["vectors"] == 7
    assert [overlapped for _, overlapped in seen] == [True, True, True]
    assert all(name.startswith("xsearch-encode") for name, _ in seen)
    assert not [t for t in threading.enumerate() if t.name.startswith("xsearch-encode")]


def test_an_encoder_failure_in_its_thread_stops_the_run_and_keeps_what_was_written(
    tmp_path: Path, photos: Path
) -> None:
    from xsearch.errors import ModelError

    class FailsOnSecondBatch:
        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def encode_images(self, pixels: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise ModelError("the tower fell over")
            return self._inner.encode_images(pixels)

    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        engine._encoder = FailsOnSecondBatch(engine.encoder)
        with pytest.raises(ModelError, match="fell over"):
            engine.index([photos], IndexOptions(workers=0, batch_size=3))
        assert engine.store().counts()["images"] == 3  # the first batch was written
        again = engine.index([photos], IndexOptions(workers=0, batch_size=3))
    assert again.counts["indexed"] == 4 and again.counts["unchanged"] == 3


def test_index_rebuilds_when_file_lost(engine: Engine, photos: Path) -> None:
    engine.index([photos])
    (engine.location / "index.faiss").unlink()
    with Engine(Settings(store=engine.location)) as again:
        assert len(again.search("x", limit=50)) == 7
        assert any("rebuilding" in n or "incomplete" in n for n in again.notices)


def test_no_change_run_never_loads_the_model(tmp_path: Path, photos: Path) -> None:
    store = tmp_path / "store"
    with Engine(Settings(store=store, model=TINY)) as engine:
        engine.index([photos])
    saved = (store / "index.faiss").stat().st_mtime_ns
    with Engine(Settings(store=store)) as engine:
        report = engine.index([photos])
        assert report.counts["unchanged"] == 7
        assert engine._encoder is None
    assert (store / "index.faiss").stat().st_mtime_ns == saved, "a no-change run rewrote the index"


def test_commands_that_need_no_model_do_not_import_torch(tmp_path: Path, photos: Path) -> None:
    """A re-run with nothing new and `info` stay clear of torch and open_clip (seconds)."""
    store = tmp_path / "store"
    with Engine(Settings(store=store, model=TINY)) as engine:
        engine.index([photos])
    probe = (
        "import sys\n"
        "from tests.conftest import _register_tiny\n"
        "_register_tiny()\n"
        "from xsearch.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules, 'open_clip' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for argv in (["index", str(photos), "--store", str(store)], ["info", "--store", str(store)]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        # Only the indexing run writes (SQLAlchemy); `info` reads through sqlite3.
        expected = "False False " + ("True" if argv[0] == "index" else "False")
        assert done.stdout.splitlines()[-1] == expected, (argv, done.stdout, done.stderr)


def test_query_with_another_model_is_refused_naming_the_stores(
    runner: CliRunner, photos: Path
) -> None:
    assert _index(runner, str(photos), "--store", "st", "--model", TINY).exit_code == 0
    refused = runner.invoke(app, ["query", "cat", "--store", "st", "--model", "tiny-test-other"])
    assert refused.exit_code == 2
    assert "was built with model 'tiny-test'" in refused.output
    assert "Traceback" not in refused.output
    unknown = runner.invoke(app, ["query", "cat", "--store", "st", "--model", "no-such-model"])
    assert unknown.exit_code == 2 and "Unknown model profile" in unknown.output
    same = runner.invoke(app, ["query", "cat", "--store", "st", "--model", TINY, "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["results"]
