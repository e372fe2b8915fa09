"""Issue 7: the web gallery in a real browser (Debian's chromium, driven by Playwright).

Starts ``xsearch serve``'s app on a free loopback port, types 猫, checks that cat
thumbnails come first and load, opens the video hit and checks that it starts at its
segment, clicks a tag of the tag cloud (issue 22) in both languages, and saves
screenshots to ``test-artifacts/``. Outside CI the test is skipped
when Playwright or chromium is missing; in CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xsearch import Engine, Settings
from xsearch.server import create_app

from .gallery import CAT_FROM, TOY, Gallery, build_gallery, requires_toy

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


def _browser_or_skip() -> tuple[Any, str]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package"
    else:
        executable = _chromium()
        if executable is not None:
            return sync_playwright, executable
        missing = "chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{missing} is missing; .ci/run must install it")
    pytest.skip(f"{missing} is not installed")


class _Server:
    """The app under uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gallery, str]]:
    root = tmp_path_factory.mktemp("site")
    gallery = build_gallery(root)
    with Engine(Settings(store=root / "store", model=TOY, device="cpu")) as engine:
        engine.index([root / "pictures", root / "videos"])
        engine.warm_up()
        with _Server(create_app(engine)) as url:
            yield gallery, url


@requires_toy
def test_gallery_in_chromium(site: tuple[Gallery, str]) -> None:
    sync_playwright, executable = _browser_or_skip()
    gallery, url = site
    cats = {str(p) for p in gallery.of_class("cat")}
    assert gallery.video is not None
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_selector("#status:not(:empty)")
            page.fill("#q", "猫")
            page.press("#q", "Enter")
            page.wait_for_selector("#results .card")
            cards = page.eval_on_selector_all(
                "#results .card",
                "cards => cards.map(c => ({id: +c.dataset.id, type: c.dataset.type,"
                " start: +c.dataset.start, path: c.querySelector('.thumb').title}))",
            )
            # The cat pictures, and the video whose second half is a cat, come first.
            top = [c["path"] for c in cards[: len(cats)]]
            assert set(top) <= cats | {str(gallery.video)}, top
            assert len(set(top) & cats) >= len(cats) - 1
            assert page.url.endswith("?q=%E7%8C%AB&limit=60")
            # Their thumbnails really arrive and decode.
            page.wait_for_function(
                f"""() => [...document.querySelectorAll('#results .card img')]
                    .slice(0, {len(cats)}).every(i => i.complete && i.naturalWidth > 0)"""
            )
            page.screenshot(path=str(ARTIFACTS / "browser-results.png"))

            video = next(c for c in cards if c["path"] == str(gallery.video))
            assert CAT_FROM - 1.0 <= video["start"] <= CAT_FROM + 0.5
            page.click(f'#results .card[data-id="{video["id"]}"] .thumb')
            player = page.wait_for_selector("#viewer[open] video")
            assert player is not None
            page.wait_for_function(
                "() => { const v = document.querySelector('#viewer video');"
                " return v && v.readyState >= 1 && !v.seeking; }"
            )
            at = player.evaluate("v => { v.pause(); return v.currentTime; }")
            assert video["start"] - 0.05 <= at <= video["start"] + 1.0, (at, video["start"])
            page.screenshot(path=str(ARTIFACTS / "browser-video.png"))

            # "More like this" on a result searches by it: the item itself comes first.
            page.click("#viewer-close")
            first = cards[0]
            with page.expect_response(lambda r: "q=id%3A" in r.url) as answer:
                page.click(f'#results .card[data-id="{first["id"]}"] .more')
            assert answer.value.ok and page.input_value("#q") == f"id:{first['id']}"
            page.wait_for_function(
                f"() => document.querySelector('#results .card')?.dataset.id === '{first['id']}'"
            )

            # The tag cloud: a click on a tag searches tag:X, in English and in Chinese.
            for lang, label in (("en", "cat"), ("zh", "猫")):
                page.select_option("#tag-lang", lang)
                page.wait_for_selector(f'#tag-cloud[data-lang="{lang}"]')
                with page.expect_response(lambda r: "/api/search?q=tag%3A" in r.url) as answer:
                    page.locator(f'#tag-cloud .tag[data-tag="{label}"]').click()
                assert answer.value.ok and page.input_value("#q") == f"tag:{label}"
                page.wait_for_function(
                    "() => document.querySelector('#results .card .tags .tag') !== null"
                )
                tagged = page.eval_on_selector_all(
                    "#results .card",
                    "cards => cards.map(c => ({path: c.querySelector('.thumb').title,"
                    " tags: [...c.querySelectorAll('.tags .tag')].map(t => t.dataset.tag)}))",
                )
                # Every result carries the tag (a video may carry it on a segment only).
                assert tagged and all(
                    label in c["tags"] or c["path"] == str(gallery.video) for c in tagged
                ), tagged
                assert len({c["path"] for c in tagged} & cats) >= len(cats) - 1, tagged
            page.screenshot(path=str(ARTIFACTS / "browser-tags.png"))
        finally:
            browser.close()
