"""Issue 7: image and combined queries, filters, hybrid keyword fusion, near-duplicates."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine
from typer.testing import CliRunner

from xsearch import Engine, Settings
from xsearch import query as query_module
from xsearch.cli import app
from xsearch.errors import QueryError, QueryParseError
from xsearch.filters import SearchFilters, make_filters, parse_when, under_roots
from xsearch.hits import SearchHit
from xsearch.querylang import ImagePath, Query, Text
from xsearch.store import fts, migrate

from .conftest import TINY, random_image
from .gallery import TOY, Gallery, build_gallery, requires_toy
from .videos import noise, write_video

# -- a library for the plumbing tests (random model: no semantics, fast) ---------------------

DAY = 86_400.0
T_2020 = parse_when("2020-06-01")


def _exif_image(path: Path, seed: int, when: str) -> Path:
    random_image(path, seed)
    with Image.open(path) as im:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = when
        exif[0x010E] = "Hochzeit im Schnee"
        im.save(path, exif=exif)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Engine]]:
    """60 images in a/ and b/ with known times, one photo with EXIF time, two videos."""
    root = tmp_path_factory.mktemp("library")
    for i in range(40):
        path = random_image(root / "a" / f"a{i:02d}.jpg", i)
        os.utime(path, (T_2020 + i * DAY, T_2020 + i * DAY))
    for i in range(20):
        path = random_image(root / "b" / f"b{i:02d}.jpg", 100 + i)
        os.utime(path, (T_2020 - 400 * DAY, T_2020 - 400 * DAY))
    # Its mtime says 2020, its EXIF says 2015: the EXIF time counts.
    exif = _exif_image(root / "b" / "exif.jpg", 7, "2015:03:01 12:00:00")
    os.utime(exif, (T_2020, T_2020))
    (root / "v").mkdir()
    for n in range(2):
        write_video(
            root / "v" / f"clip{n}.mp4",
            lambda i, t, n=n: noise(n * 10 + i // 10),
            list(range(30)),
            time_base=Fraction(1, 10),
        )
    engine = Engine(Settings(store=root / "store", model=TINY, device="cpu"))
    report = engine.index([root / "a", root / "b", root / "v"])
    assert report.counts["failed"] == 0 and report.counts["indexed"] == 63
    yield root, engine
    engine.close()


def _oracle(engine: Engine, text: str, filters: SearchFilters, limit: int) -> list[int]:
    """Brute force: rank everything, then filter."""
    everything = engine.search(text, limit=10_000)
    kept = [
        h
        for h in everything
        if filters.matches(
            media_type=h.media_type,
            path=h.path_bytes,
            captured_at=h.captured_at,
            mtime_ns=round((h.mtime or 0) * 1e9),
        )
        and (filters.min_score is None or h.score >= filters.min_score)
    ]
    return [h.id for h in kept[:limit]]


FILTER_CASES = {
    "under": lambda root: SearchFilters(under=under_roots([root / "b"])),
    "type-video": lambda root: SearchFilters(media_type="video"),
    "type-image": lambda root: SearchFilters(media_type="image"),
    "after": lambda root: SearchFilters(after=T_2020 + 30 * DAY),
    "before": lambda root: SearchFilters(before=T_2020 - 100 * DAY),
    "all": lambda root: SearchFilters(
        media_type="image",
        under=under_roots([root / "a", root / "b"]),
        after=T_2020 - 500 * DAY,
        before=T_2020 + 35 * DAY,
    ),
}


@pytest.mark.parametrize("strategy", ["exact-subset", "over-fetch"])
@pytest.mark.parametrize("case", sorted(FILTER_CASES))
def test_filters_return_only_matches_and_fill_the_limit(
    library: tuple[Path, Engine], case: str, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, engine = library
    # A fresh cache of filter results, so that each strategy really runs.
    monkeypatch.setattr(engine, "_subsets", query_module.SubsetCache())
    if strategy == "over-fetch":
        monkeypatch.setattr(query_module, "_EXACT_MAX", 0)
        monkeypatch.setattr(query_module, "_EXACT_SHARE", 0.0)
    filters = FILTER_CASES[case](root)
    limit = 8
    hits = engine.search("anything", limit=limit, filters=filters)
    expected = _oracle(engine, "anything", filters, limit)
    assert len(expected) == min(limit, len(expected)) and expected
    assert [h.id for h in hits] == expected
    assert len(hits) == min(limit, len(_oracle(engine, "anything", filters, 10_000)))


def test_filter_semantics(library: tuple[Path, Engine]) -> None:
    root, engine = library
    under_b = engine.search("x", limit=100, filters=SearchFilters(under=under_roots([root / "b"])))
    assert len(under_b) == 21 and all(Path(h.path).parent.name == "b" for h in under_b)
    # A folder name that is a prefix of another folder's name is not "below" it.
    assert not engine.search("x", filters=SearchFilters(under=under_roots([root / "a" / "a0"])))
    videos = engine.search("x", limit=100, media_type="video")
    assert {Path(h.path).name for h in videos} == {"clip0.mp4", "clip1.mp4"}
    assert all(h.segments for h in videos)
    # EXIF capture time wins over the file's mtime.
    old = engine.search("x", limit=100, filters=make_filters(before="2016"))
    assert [Path(h.path).name for h in old] == ["exif.jpg"]
    year_2020 = engine.search("x", limit=100, filters=make_filters(after="2020", before="2021"))
    names = {Path(h.path).name for h in year_2020}
    assert "exif.jpg" not in names and "a00.jpg" in names and "b00.jpg" not in names
    best = engine.search("x", limit=100)
    cut = best[5].score
    assert all(h.score >= cut for h in engine.search("x", limit=100, min_score=cut))


def test_filter_parsing_errors() -> None:
    assert parse_when("2023") < parse_when("2023-02") < parse_when("2023-02-03T04:05")
    assert parse_when("2023-01-01T00:00:00+00:00") == 1672531200.0
    with pytest.raises(QueryError, match="--before '2023-13' is not a date"):
        make_filters(before="2023-13")
    with pytest.raises(QueryError, match="earlier"):
        make_filters(after="2024", before="2023")
    with pytest.raises(QueryError, match="--type"):
        SearchFilters(media_type="audio")


def test_query_objects_and_errors(library: tuple[Path, Engine]) -> None:
    root, engine = library
    picture = root / "a" / "a03.jpg"
    by_path = engine.search(Query.of(ImagePath(str(picture))), limit=1)
    assert by_path[0].path == str(picture) and by_path[0].score == pytest.approx(1.0, abs=1e-4)
    by_id = engine.search(Query.parse(f"id:{by_path[0].id}"), limit=1)
    assert by_id[0].id == by_path[0].id
    with pytest.raises(QueryParseError) as caught:
        engine.search(Query.parse("beach + ./no-such.jpg"))
    assert caught.value.position == 8 and "does not exist" in str(caught.value)
    with pytest.raises(QueryParseError, match="no file with id 99999"):
        engine.search(Query.parse("id:99999"))
    with pytest.raises(QueryError, match="cancel"):
        engine.search(Query.parse("cat - cat"))
    # A plain string is literal text, never parsed: "a - b" is one text.
    assert engine.search("a - b", limit=2)


def test_collapse_folds_copies_into_one_hit(tmp_path: Path) -> None:
    folder = tmp_path / "burst"
    original = random_image(folder / "shot.jpg", 1)
    for n in range(3):
        shutil.copy(original, folder / f"shot copy {n}.jpg")
    with Image.open(original) as im:  # a re-encoded near-copy
        im.save(folder / "shot small.jpg", quality=60)
    for i in range(10):
        random_image(folder / f"other{i}.jpg", 50 + i, size=(64, 48))
    with Engine(Settings(store=tmp_path / "s", model=TINY, device="cpu")) as engine:
        engine.index([folder])
        plain = engine.search(Query.parse(f"{original}"), limit=20)
        copies = {h.id for h in plain if Path(h.path).name.startswith("shot")}
        assert len(copies) == 5
        # The random model maps all noise pictures close together; a threshold just under
        # identical keeps those apart while copies (cosine ~1) fold.
        request_hits = _collapsed(engine, original, threshold=0.9999)
    top = request_hits[0]
    assert top.id in copies and set(top.duplicates) | {top.id} >= copies - {
        h.id for h in plain if "small" in h.path
    }
    assert not any(h.id in top.duplicates for h in request_hits[1:])
    assert len(request_hits) == 10 and len({h.id for h in request_hits}) == 10


def _collapsed(engine: Engine, picture: Path, *, threshold: float) -> list[SearchHit]:
    from xsearch.query import SearchRequest, run_search

    store = engine.store()
    vector = engine.embed_query(Query.of(ImagePath(str(picture))))
    request = SearchRequest(limit=10, collapse=True, collapse_threshold=threshold)
    return run_search(store, engine._index_manager(store), vector, request)


# -- keyword search (FTS5) -------------------------------------------------------------------


def test_words_and_match_expressions() -> None:
    words = fts.document_words("/home/ann/2023 京都市/wedding_final2.MP4", "Hochzeit")
    for token in ("2023", "京", "京都", "都市", "wedding", "final", "2", "mp4", "hochzeit"):
        assert token in words.split()
    assert fts.match_expression("京都") == '"京都"'
    assert fts.match_expression('猫 "x" OR y*') == '"猫" OR "x" OR "or" OR "y"'
    assert fts.match_expression("  ...  ") is None


def test_keyword_index_follows_the_store(library: tuple[Path, Engine], tmp_path: Path) -> None:
    root, engine = library
    store = engine.store()
    exif_hits = store.keyword_media("schnee", SearchFilters(), 10)
    assert [engine.media(m).display_path for m in exif_hits] == [str(root / "b" / "exif.jpg")]  # type: ignore[union-attr]
    lib = tmp_path / "lib"
    folder = lib / "Ferien in Kyoto"
    random_image(folder / "x.jpg", 3)
    random_image(lib / "home" / "y.jpg", 4)
    with Engine(Settings(store=tmp_path / "s", model=TINY, device="cpu")) as e:
        e.index([lib])
        assert len(e.store().keyword_media("kyoto", SearchFilters(), 10)) == 1
        moved = lib / "Urlaub"
        folder.rename(moved)
        assert e.index([lib]).counts["moved"] == 1
        assert e.store().keyword_media("kyoto", SearchFilters(), 10) == []
        assert len(e.store().keyword_media("urlaub", SearchFilters(), 10)) == 1
        # Words that every file has (the shared folders) match nothing.
        assert e.store().keyword_media("lib", SearchFilters(), 10) == []
        (moved / "x.jpg").unlink()
        e.index([lib])
        rows = sqlite3.connect(tmp_path / "s" / "xsearch.db").execute(
            "SELECT count(*) FROM media_fts"
        )
        assert rows.fetchone()[0] == 1


def test_migration_backfills_and_downgrades(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    engine = create_engine(f"sqlite:///{db}")
    migrate.upgrade(engine, "0001")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO media (id, path, display_path, size, mtime_ns, content_hash, media_type,"
            " status, indexed_at) VALUES (7, x'2f612f4b796f746f2f782e6a7067', '/a/Kyoto/x.jpg',"
            " 1, 1, 'h', 'image', 'ok', 0)"
        )
    migrate.upgrade(engine)
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT rowid FROM media_fts WHERE media_fts MATCH 'kyoto'")
        assert found.fetchall() == [(7,)]
        conn.execute("DELETE FROM media WHERE id = 7")
        assert conn.execute("SELECT count(*) FROM media_fts").fetchone() == (0,)
    migrate.downgrade(engine, "0001")
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert not any(n.startswith("media_fts") for n in names)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_a_query_on_a_store_of_an_older_schema_migrates_it_first(
    library: tuple[Path, Engine], tmp_path: Path
) -> None:
    root, _ = library
    copy = tmp_path / "old"
    shutil.copytree(root / "store", copy)
    migrate.downgrade(create_engine(f"sqlite:///{copy / 'xsearch.db'}"), "0001")
    with Engine(Settings(store=copy)) as engine:
        # The reader alone would fail on the missing keyword table; the store is migrated.
        assert engine.store().schema_is_current()
        exif_hits = engine.store().keyword_media("exif", SearchFilters(), 10)
        assert [engine.media(m).display_path for m in exif_hits] == [  # type: ignore[union-attr]
            str(root / "b" / "exif.jpg")
        ]


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_query_options(library: tuple[Path, Engine], runner: CliRunner) -> None:
    root, _ = library
    store = str(root / "store")

    def run(*args: str) -> dict[str, object]:
        result = runner.invoke(app, ["query", *args, "--store", store, "--json"])
        assert result.exit_code == 0, result.output
        doc: dict[str, object] = json.loads(result.output)
        return doc

    doc = run("--image", str(root / "a" / "a05.jpg"), "-n", "3")
    results = doc["results"]
    assert isinstance(results, list) and results[0]["path"] == str(root / "a" / "a05.jpg")
    doc = run("x", "--under", str(root / "b"), "--after", "2015", "--before", "2016")
    assert [r["path"] for r in doc["results"]] == [str(root / "b" / "exif.jpg")]  # type: ignore[index]
    doc = run("2:x", "+", str(root / "a" / "a01.jpg"), "-", "y", "--type", "image", "-n", "4")
    assert doc["query"] == f"2:x + {root / 'a' / 'a01.jpg'} - y" and len(doc["results"]) == 4  # type: ignore[arg-type]
    doc = run("schnee", "--hybrid", "-n", "3")
    assert doc["results"][0]["keyword_rank"] == 1  # type: ignore[index]
    # The random test model maps all noise pictures close together: they fold into one.
    doc = run("x", "--collapse", "--type", "image", "-n", "5")
    folded = doc["results"][0]  # type: ignore[index]
    assert folded["duplicates"] == len(folded["duplicate_ids"]) == 60
    bad = runner.invoke(app, ["query", "cat", "+", "+", "dog", "--store", store])
    assert bad.exit_code == 2 and "position 6" in bad.output and "^" in bad.output
    bad = runner.invoke(app, ["query", "x", "--after", "soon", "--store", store])
    assert bad.exit_code == 2 and "is not a date" in bad.output
    bad = runner.invoke(app, ["query", "x", "--frames", "--hybrid", "--store", store])
    assert bad.exit_code == 2 and "--frames" in bad.output


# -- real semantics, with the bundled toy model ----------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gallery, Engine]]:
    root = tmp_path_factory.mktemp("gallery")
    gallery = build_gallery(root, video=False)
    engine = Engine(Settings(store=root / "store", model=TOY, device="cpu"))
    engine.index([root / "pictures", root / "trips"])
    yield gallery, engine
    engine.close()


def _ranks(hits: list[SearchHit], wanted: set[Path]) -> list[int]:
    return [i for i, h in enumerate(hits, 1) if Path(h.path) in wanted]


@requires_toy
def test_a_cat_picture_finds_the_other_cats_first(toy: tuple[Gallery, Engine]) -> None:
    gallery, engine = toy
    cats = gallery.of_class("cat")
    found = 0
    for probe in sorted(cats):
        hits = engine.search(Query.parse(str(probe)), limit=len(cats))
        # The picture itself, then other cats: the model sees the object, not the background.
        assert Path(hits[0].path) == probe
        assert {Path(h.path) for h in hits[:4]} <= cats, probe
        found += len({Path(h.path) for h in hits} & cats)
    assert found / (len(cats) * len(cats)) >= 0.85


@requires_toy
def test_combined_queries_move_results_the_expected_way(toy: tuple[Gallery, Engine]) -> None:
    gallery, engine = toy
    everything = len(gallery.labels)
    dogs, cats = gallery.of_class("dog"), gallery.of_class("cat")

    def mean_rank(query: str, wanted: set[Path]) -> float:
        return float(np.mean(_ranks(engine.search(Query.parse(query), limit=everything), wanted)))

    # Adding dog pulls dogs up; subtracting it pushes them back down.
    assert mean_rank("猫 + 狗", dogs) < mean_rank("猫", dogs)
    assert mean_rank("猫 + 狗 - 0.7:狗", dogs) > mean_rank("猫 + 狗", dogs)
    # A weight sets the balance: more weight on dog, dogs first.
    assert mean_rank("猫 + 3:dog", dogs) < mean_rank("3:猫 + dog", dogs)
    assert mean_rank("3:猫 + dog", cats) < mean_rank("猫 + 3:dog", cats)
    # Text moves an image query: a cat picture plus "dog" finds dogs sooner.
    probe = sorted(cats)[0]
    assert mean_rank(f"{probe} + dog", dogs) < mean_rank(str(probe), dogs)


@requires_toy
def test_a_folder_name_wins_through_fusion(toy: tuple[Gallery, Engine]) -> None:
    gallery, engine = toy
    kyoto = set(gallery.kyoto)
    # The model knows no 京都: by pictures alone, the Kyoto folder is not what comes first
    # (one of its pictures may still land in the top 5 by chance).
    vectors_only = engine.search("京都", limit=5)
    assert {Path(h.path) for h in vectors_only[:2]} != kyoto
    fused = engine.search("京都", limit=5, hybrid=True)
    assert {Path(h.path) for h in fused[:2]} == kyoto
    assert all(h.keyword_rank is not None for h in fused[:2])
    # Words that match no name and no tag (tags are keyword words too) leave the vector
    # ranking as it was.
    assert [h.id for h in engine.search("潜水艇", limit=5, hybrid=True)] == [
        h.id for h in engine.search("潜水艇", limit=5)
    ]


@requires_toy
def test_text_in_both_languages_finds_cats(toy: tuple[Gallery, Engine]) -> None:
    gallery, engine = toy
    cats = gallery.of_class("cat")
    for text in ("猫", "cat"):
        hits = engine.search(Query.of(Text(text)), limit=3)
        assert {Path(h.path) for h in hits} <= cats
