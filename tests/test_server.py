"""Issue 7: the HTTP API — search, uploads, thumbnails, range requests, and what it refuses."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from xsearch import Engine, Settings
from xsearch.cli import app as cli_app
from xsearch.server import ServerOptions, create_app

from .conftest import TINY, random_image
from .gallery import TOY, build_gallery, requires_toy
from .videos import noise, write_video

SECRET = "top-secret-7f3a"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TestClient]]:
    root = tmp_path_factory.mktemp("served")
    for i in range(12):
        random_image(root / "media" / f"img{i:02d}.jpg", i, size=(120, 90))
    write_video(
        root / "media" / "clip.mp4",
        lambda i, t: noise(i // 10),
        list(range(40)),
        time_base=Fraction(1, 10),
    )
    # Next to the media, never indexed: nothing may ever serve it.
    (root / "secret.txt").write_text(SECRET)
    (root / "media" / "notes.txt").write_text(SECRET)
    engine = Engine(Settings(store=root / "store", model=TINY, device="cpu"))
    engine.index([root / "media"])
    engine.warm_up()
    with TestClient(create_app(engine, ServerOptions(max_upload_bytes=200_000))) as client:
        yield root, client
    engine.close()


def _ids(client: TestClient, **params: object) -> list[int]:
    response = client.get("/api/search", params={"q": "x", "limit": 50, **params})
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def test_search_returns_the_cli_json(served: tuple[Path, TestClient], runner: CliRunner) -> None:
    root, client = served
    response = client.get("/api/search", params={"q": "a red car", "limit": 5})
    assert response.status_code == 200
    doc = response.json()
    cli = runner.invoke(
        cli_app, ["query", "a red car", "-n", "5", "--json", "--store", str(root / "store")]
    )
    assert cli.exit_code == 0, cli.output
    assert doc == json.loads(cli.output)
    assert len(doc["results"]) == 5 and all(isinstance(r["id"], int) for r in doc["results"])


def test_search_filters_and_options(served: tuple[Path, TestClient]) -> None:
    root, client = served
    videos = client.get("/api/search", params={"q": "x", "type": "video"}).json()["results"]
    assert [Path(r["path"]).name for r in videos] == ["clip.mp4"]
    assert videos[0]["segments"] and videos[0]["duration"] > 3
    assert len(_ids(client, under=str(root / "media"), type="image")) == 12
    assert _ids(client, under=str(root / "elsewhere")) == []
    assert len(_ids(client, after="2000", before="2100")) == 13
    assert len(_ids(client, limit=3, collapse="true")) <= 3
    first = _ids(client, limit=1)[0]
    assert _ids(client, q=f"id:{first}", limit=1) == [first]
    assert client.get("/api/search", params={"q": "x", "hybrid": "true"}).status_code == 200


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"q": "cat + + dog"}, 400, "position 6"),
        ({"q": ""}, 400, "empty"),
        ({"q": "x", "limit": 0}, 422, "limit"),
        ({"q": "x", "limit": 10_000}, 400, "at most 500"),
        ({"q": "x", "type": "audio"}, 422, "type"),
        ({"q": "x", "after": "someday"}, 400, "not a date"),
        ({"q": "x", "frames": "true", "hybrid": "true"}, 400, "--frames"),
        ({"q": "id:987654"}, 400, "no file with id 987654"),
        ({"q": "/etc/passwd"}, 400, "not accepted"),
        ({"q": "x + image:../secret.txt"}, 400, "not accepted"),
    ],
)
def test_bad_searches_get_clear_4xx(
    served: tuple[Path, TestClient], params: dict[str, object], status: int, fragment: str
) -> None:
    _, client = served
    response = client.get("/api/search", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert fragment in body["error"] and body["kind"]
    if "position" in fragment:
        assert body["position"] == 6 and body["kind"] == "QueryParseError"


def test_image_upload_query(served: tuple[Path, TestClient]) -> None:
    root, client = served
    picture = (root / "media" / "img03.jpg").read_bytes()
    response = client.post(
        "/api/search", params={"limit": 3}, files={"image": ("q.jpg", picture, "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["query"] == "[q.jpg]"
    assert Path(doc["results"][0]["path"]).name == "img03.jpg"
    assert doc["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    # Text and upload combine.
    both = client.post(
        "/api/search", params={"q": "a dog", "limit": 3}, files={"image": ("q.jpg", picture)}
    )
    assert both.status_code == 200 and both.json()["query"] == "a dog + [q.jpg]"


def test_upload_limits_and_errors(served: tuple[Path, TestClient]) -> None:
    _, client = served
    big = io.BytesIO()
    random_image_bytes = Image.effect_noise((600, 600), 80).convert("RGB")
    random_image_bytes.save(big, "PNG")
    assert big.tell() > 200_000
    response = client.post("/api/search", files={"image": ("big.png", big.getvalue())})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    response = client.post("/api/search", files={"image": ("x.jpg", b"not an image at all")})
    assert response.status_code == 400 and "format" in response.json()["error"]
    response = client.post("/api/search", files={"image": ("x.jpg", b"")})
    assert response.status_code == 400
    response = client.post("/api/search")
    assert response.status_code == 422


def test_thumbnails(served: tuple[Path, TestClient]) -> None:
    root, client = served
    ids = {Path(r["path"]).name: r["id"] for r in _results(client)}
    response = client.get(f"/api/media/{ids['img01.jpg']}/thumbnail", params={"size": 64})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as im:
        assert max(im.size) == 64
    assert list((root / "store" / "thumbs").glob(f"{ids['img01.jpg']}-*-64.jpg"))
    again = client.get(f"/api/media/{ids['img01.jpg']}/thumbnail", params={"size": 64})
    assert again.content == response.content
    video = client.get(f"/api/media/{ids['clip.mp4']}/thumbnail", params={"t": 2.5})
    assert video.status_code == 200
    with Image.open(io.BytesIO(video.content)) as im:
        assert im.format == "JPEG"
    assert client.get(f"/api/media/{ids['img01.jpg']}/thumbnail?size=5").status_code == 422


def _results(client: TestClient) -> list[dict[str, object]]:
    results: list[dict[str, object]] = client.get(
        "/api/search", params={"q": "x", "limit": 50}
    ).json()["results"]
    return results


def test_media_files_and_range_requests(served: tuple[Path, TestClient]) -> None:
    root, client = served
    ids = {Path(str(r["path"])).name: r["id"] for r in _results(client)}
    data = (root / "media" / "clip.mp4").read_bytes()
    url = f"/api/media/{ids['clip.mp4']}/file"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(url, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    rest = client.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.status_code == 206 and rest.content == data[-10:]
    assert client.get(url, headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416
    info = client.get(f"/api/media/{ids['clip.mp4']}").json()
    assert info["media_type"] == "video" and info["file"] == url


def test_unknown_ids_and_traversal_reach_nothing(served: tuple[Path, TestClient]) -> None:
    root, client = served
    attempts = [
        "/api/media/987654/file",
        "/api/media/987654/thumbnail",
        "/api/media/987654",
        "/api/media/-1/file",
        "/api/media/..%2F..%2Fsecret.txt/file",
        "/api/media/1%2F..%2F..%2Fsecret.txt/file",
        "/api/media/1/file/../../../secret.txt",
        "/static/..%2F..%2F..%2Fsecret.txt",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"/static/{root}/secret.txt",
        f"/{root}/secret.txt",
        f"/api/media/file?path={root}/secret.txt",
    ]
    for url in attempts:
        response = client.get(url)
        assert response.status_code in (404, 422), (url, response.status_code)
        assert SECRET not in response.text, url
    assert client.get("/api/media/987654/file").json()["error"].startswith("There is no file")
    # A query parameter cannot swap the file: id 1 serves id 1's file and nothing else.
    first = _results(client)[0]
    response = client.get(
        f"/api/media/{first['id']}/file", params={"path": str(root / "secret.txt")}
    )
    assert response.content == Path(str(first["path"])).read_bytes()


def test_a_deleted_file_is_a_404_not_a_500(tmp_path: Path) -> None:
    picture = random_image(tmp_path / "m" / "gone.jpg", 1)
    with Engine(Settings(store=tmp_path / "s", model=TINY, device="cpu")) as engine:
        engine.index([tmp_path / "m"])
        client = TestClient(create_app(engine))
        media_id = _ids(client)[0]
        picture.unlink()
        for url in (f"/api/media/{media_id}/file", f"/api/media/{media_id}/thumbnail"):
            response = client.get(url)
            assert response.status_code == 404 and "index again" in response.json()["error"]


def test_status_page_and_openapi(served: tuple[Path, TestClient]) -> None:
    _, client = served
    status = client.get("/api/status").json()
    assert status["images"] == 12 and status["videos"] == 1 and status["model"] == TINY
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/media/{media_id}/file", "/api/status"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/api/search"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_serves_while_another_process_indexes(tmp_path: Path) -> None:
    for i in range(3):
        random_image(tmp_path / "m" / f"a{i}.jpg", i)
    settings = Settings(store=tmp_path / "s", model=TINY, device="cpu")
    with Engine(settings) as indexer:
        indexer.index([tmp_path / "m"])
    with Engine(settings) as server_engine, TestClient(create_app(server_engine)) as client:
        assert len(_ids(client)) == 3
        assert len(_ids(client, under=str(tmp_path / "m"), type="image")) == 3
        for i in range(3, 8):
            random_image(tmp_path / "m" / f"a{i}.jpg", i)
        # A separate engine (as another process would) writes; the server sees it at once,
        # also through filters whose results it had cached.
        with Engine(settings) as indexer:
            indexer.index([tmp_path / "m"])
        assert len(_ids(client)) == 8
        assert len(_ids(client, under=str(tmp_path / "m"), type="image")) == 8


@requires_toy
def test_chinese_query_finds_cats_over_http(tmp_path: Path) -> None:
    gallery = build_gallery(tmp_path, video=False)
    with Engine(Settings(store=tmp_path / "s", model=TOY, device="cpu")) as engine:
        engine.index([tmp_path / "pictures"])
        client = TestClient(create_app(engine))
        results = client.get("/api/search", params={"q": "猫", "limit": 3}).json()["results"]
    assert {Path(r["path"]) for r in results} <= gallery.of_class("cat")


def test_serve_command(
    served: tuple[Path, TestClient], runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xsearch.server import runner as server_runner

    root, _ = served
    calls: list[dict[str, object]] = []

    def fake_run(app: object, engine: Engine, **kw: object) -> bool:
        calls.append({"app": app, **kw})
        kw["on_listening"](f"http://{kw['host']}:{kw['port']}")  # type: ignore[operator]
        return False

    monkeypatch.setattr(server_runner, "run_server", fake_run)
    result = runner.invoke(cli_app, ["serve", "--store", str(root / "store")])
    assert result.exit_code == 0, result.output
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8765
    assert calls[0]["idle_exit"] is None and len(str(calls[0]["token"])) >= 32
    assert "http://127.0.0.1:8765/" in result.output and "warning" not in result.output
    exposed = runner.invoke(cli_app, ["serve", "--store", str(root / "store"), "--host", "::"])
    assert exposed.exit_code == 0 and calls[1]["host"] == "::"
    assert "anyone who can reach this machine" in exposed.output
    idle = runner.invoke(cli_app, ["serve", "--store", str(root / "store"), "--idle-exit", "2"])
    assert idle.exit_code == 0 and calls[2]["idle_exit"] == 120
    missing = runner.invoke(cli_app, ["serve", "--store", str(root / "nowhere")])
    assert missing.exit_code == 1 and "No xsearch store" in missing.output
