"""Issue 6: `xsearch query` is answered by a running `xsearch serve` of the same store.

One real server runs in a subprocess for the module. Queries go through the CLI both ways:
through the server, and in-process with --no-server; what they print must be the same
bytes, errors included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from xsearch import Engine, Settings, __version__
from xsearch.cli import app
from xsearch.remote import ADVERT_NAME, TOKEN_HEADER, Advert, read_advert, write_advert

from .conftest import TINY, random_image
from .videos import noise, write_video

ROOT = Path(__file__).resolve().parent.parent
# Server and CLI subprocesses see no xsearch settings from outside, as the tests do.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("XSEARCH_")}
ENV["PYTHONPATH"] = str(ROOT)
# Not UTF-8: --paths must print these exact bytes, through the server too.
ODD_NAME = b"caf\xe9 \xff.jpg"


@dataclass(frozen=True)
class Served:
    root: Path
    store: Path
    advert: Advert
    process: subprocess.Popen[bytes]

    def cli_queries(self) -> int:
        count: int = httpx.get(f"{self.advert.url}/api/status").json()["cli_queries"]
        return count


def _make_store(root: Path, *, images: int = 8, video: bool = True) -> Path:
    media = root / "media"
    for i in range(images):
        random_image(media / f"img{i:02d}.jpg", i, size=(96, 72))
    random_image(media / "sub" / "deep.png", 99, fmt="PNG")
    shutil.copy(media / "img01.jpg", os.path.join(os.fsencode(media), ODD_NAME))
    if video:
        write_video(
            media / "clip.mp4",
            lambda i, t: noise(i // 10),
            list(range(40)),
            time_base=Fraction(1, 10),
        )
    store = root / "store"
    with Engine(Settings(store=store, model=TINY, device="cpu")) as engine:
        engine.index([media])
    return store


def start_server(store: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Advert]:
    """`xsearch serve` on a free port; returns once it has advertised itself."""
    argv = [sys.executable, "-m", "tests.driver", "serve", "--store", str(store)]
    process = subprocess.Popen(
        [*argv, "--port", "0", "--device", "cpu", *extra],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        advert = read_advert(store)
        if advert is not None and advert.pid == process.pid:
            return process, advert
        if process.poll() is not None:
            assert process.stderr is not None
            raise AssertionError(f"xsearch serve exited: {process.stderr.read().decode()}")
        time.sleep(0.2)
    stop(process)
    raise AssertionError("xsearch serve did not advertise itself within 3 minutes")


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()
    return process.returncode


@pytest.fixture(scope="module", autouse=True)
def _shared_cache(session_cache: Path) -> None:
    # The subprocesses export models into the tests' cache, not the user's.
    ENV["XSEARCH_CACHE"] = str(session_cache)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    store = _make_store(root)
    process, advert = start_server(store)
    try:
        yield Served(root, store, advert, process)
    finally:
        returncode = stop(process)
    assert returncode == -signal.SIGTERM
    assert not (store / ADVERT_NAME).exists(), "server.json outlived its server"


def _query(runner: CliRunner, served: Served, *args: str) -> tuple[int, bytes, str]:
    result = runner.invoke(app, ["query", *args, "--store", str(served.store)])
    return result.exit_code, result.stdout_bytes, result.stderr


def test_the_advert(served: Served) -> None:
    path = served.store / ADVERT_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert doc["pid"] == served.process.pid and doc["url"].startswith("http://127.0.0.1:")
    assert doc["store"] == str(served.store.resolve()) and doc["model"] == TINY
    assert doc["version"] == __version__ and len(doc["token"]) >= 32 and doc["started"]


@pytest.mark.parametrize(
    "args",
    [
        ["a cat", "--json"],
        ["a cat", "--paths", "-n", "20"],
        ["a cat"],
        ["img03 dog", "--hybrid", "--json"],
        ["a cat", "--collapse", "--json"],
        ["a cat", "--frames", "--type", "video"],
        ["a cat", "--frames", "--json", "-n", "4"],
        ["id:2 - night", "--min-score", "0.1", "--json"],
        ["a cat", "--under", "MEDIA/sub", "--paths"],
        ["a cat", "--before", "2000", "--json"],
        ["a cat", "--image", "MEDIA/img04.jpg", "--json"],
    ],
)
def test_same_output_through_the_server(served: Served, runner: CliRunner, args: list[str]) -> None:
    args = [a.replace("MEDIA", str(served.root / "media")) for a in args]
    before = served.cli_queries()
    through = _query(runner, served, *args)
    assert served.cli_queries() == before + 1
    here = _query(runner, served, *args, "--no-server")
    assert served.cli_queries() == before + 1
    assert through == here
    assert through[0] == 0 and through[1]


def test_relative_image_paths_are_read_from_the_callers_folder(
    served: Served, runner: CliRunner, isolated: Path
) -> None:
    shutil.copy(served.root / "media" / "img05.jpg", isolated / "q.jpg")
    before = served.cli_queries()
    through = _query(runner, served, "./q.jpg", "+", "cat", "--json")
    here = _query(runner, served, "./q.jpg", "+", "cat", "--json", "--no-server")
    assert through == here and through[0] == 0
    assert json.loads(through[1])["query"] == "./q.jpg + cat"
    assert served.cli_queries() == before + 1


@pytest.mark.parametrize(
    "args",
    [
        ["./missing.jpg + cat"],
        ["cat", "--image", "nope.png"],
        ["id:9999"],
        ["cat", "--limit", "0"],
        ["cat", "--frames", "--hybrid"],
        ["red car", "./not-an-image.jpg"],
        ["./broken.jpg"],
    ],
)
def test_errors_through_the_server_match_in_process(
    served: Served, runner: CliRunner, isolated: Path, args: list[str]
) -> None:
    (isolated / "broken.jpg").write_bytes(b"not a picture at all")
    through = _query(runner, served, *args)
    here = _query(runner, served, *args, "--no-server")
    assert through == here
    assert through[0] == 2 and "error:" in through[2]


def test_the_command_line_says_the_server_answered(served: Served) -> None:
    """The real CLI, as a user runs it: -v names the server; the path bytes survive."""
    base = [sys.executable, "-m", "tests.driver", "-v", "query", "a cat", "--paths"]
    argv = [*base, "-n", "20", "--store", str(served.store)]
    through = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, timeout=120)
    here = subprocess.run([*argv, "--no-server"], cwd=ROOT, env=ENV, capture_output=True)
    assert through.returncode == here.returncode == 0, through.stderr
    assert f"answered by the server at {served.advert.url}".encode() in through.stderr
    assert b"answered by the server" not in here.stderr
    assert through.stdout == here.stdout
    assert os.path.join(os.fsencode(served.root / "media"), ODD_NAME) in through.stdout


def test_the_endpoint_wants_the_token(served: Served) -> None:
    url = f"{served.advert.url}/api/cli-query"
    body = {"text": "a cat", "limit": 3, "frames": False, "hybrid": False, "collapse": False}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={TOKEN_HEADER: "guess"}).status_code == 403
    good = {TOKEN_HEADER: served.advert.token}
    answer = httpx.post(url, json=body, headers=good)
    assert answer.status_code == 200 and len(answer.json()["hits"]) == 3
    bad = httpx.post(url, json={**body, "limit": "3"}, headers=good)
    assert bad.status_code == 422 and "limit" in bad.json()["error"]
    spec = httpx.get(f"{served.advert.url}/openapi.json").json()
    assert "/api/cli-query" not in spec["paths"]


def _last_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_or_foreign_adverts_fall_back(
    served: Served, runner: CliRunner, tmp_path: Path
) -> None:
    store = _make_store(tmp_path, images=4, video=False)
    args = ["a cat", "--json", "--store", str(store)]
    expected = runner.invoke(app, ["query", *args, "--no-server"], catch_exceptions=False)
    before = served.cli_queries()
    live = replace(served.advert, store=str(store.resolve()))
    for foreign in (replace(live, version="0.0.0"), replace(served.advert)):
        # A server of another version, or of another store: not used, the advert stays.
        write_advert(store, foreign)
        result = runner.invoke(app, ["query", *args], catch_exceptions=False)
        assert result.exit_code == 0 and result.stdout_bytes == expected.stdout_bytes
        assert read_advert(store) == foreign
    # A live process that does not answer (this one): not used, the advert stays.
    refused = replace(live, pid=os.getpid(), url="http://127.0.0.1:9")
    write_advert(store, refused)
    result = runner.invoke(app, ["query", *args], catch_exceptions=False)
    assert result.stdout_bytes == expected.stdout_bytes and read_advert(store) == refused
    assert served.cli_queries() == before
    # A server that is gone: its advert is removed.
    write_advert(store, replace(live, pid=_last_pid()))
    result = runner.invoke(app, ["query", *args], catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout_bytes == expected.stdout_bytes
    assert not (store / ADVERT_NAME).exists()
    assert served.cli_queries() == before


def test_idle_exit_stops_the_server_and_removes_its_advert(tmp_path: Path) -> None:
    store = _make_store(tmp_path, images=2, video=False)
    process, advert = start_server(store, "--idle-exit", "0.03")
    try:
        assert httpx.get(f"{advert.url}/api/status").status_code == 200
        assert process.wait(timeout=60) == 0
    finally:
        stop(process)
    assert not (store / ADVERT_NAME).exists()


def test_idle_exit_must_be_positive(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--store", str(tmp_path), "--idle-exit", "0"])
    assert result.exit_code == 2 and "--idle-exit" in result.output


def test_a_busy_port_is_a_clear_error(served: Served, runner: CliRunner) -> None:
    port = str(httpx.URL(served.advert.url).port)
    argv = ["serve", "--store", str(served.store), "--port", port, "--device", "cpu"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and f"port {port}" in result.output, result.output
    assert "--port" in result.output and "Traceback" not in result.output
    assert read_advert(served.store) == served.advert
