"""Issue 19: indexing on Ray Data gives the store a local run gives, and survives killed
workers and a killed driver without losing or doubling a file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xsearch import Engine, IndexOptions, Progress, RayRunError, RayUnavailableError, Settings
from xsearch.index_report import FileOutcome
from xsearch.store.records import DB_NAME

from .conftest import TINY, random_image
from .driver import media_rows
from .videos import noise, write_video

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_ENV = {
    "env_vars": {"PYTHONPATH": str(ROOT)},
    "worker_process_setup_hook": "tests.ray_hooks.setup",
}
QUERIES = ["a cat", "a red car", "sunset", "猫", "dog on grass", "night", "beach", "x", "1", "汽车"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray instance of two CPUs for the module; yields its address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=RUNTIME_ENV)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _corpus(folder: Path, images: int = 14, prefix: str = "p") -> Path:
    for i in range(images):
        random_image(folder / f"{prefix}{i:02d}.jpg", i, size=(96, 64))
    random_image(folder / "sub" / "deep.png", 99, fmt="PNG")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    tb = Fraction(1, 1000)
    for v in range(2):
        pts = [i * 500 for i in range(7)]  # 3.5 s at 2 fps: several sampled frames
        write_video(folder / f"clip{v}.mp4", lambda i, t, v=v: noise(10 * v + i), pts, time_base=tb)
    return folder


def _index(
    store: Path, folder: Path, ray_address: str | None, precision: str = "auto", **options: Any
) -> Any:
    seen: dict[str, FileOutcome] = {}
    settings = Settings(store=store, model=TINY, device="cpu", precision=precision)
    with Engine(settings) as engine:
        report = engine.index(
            [folder],
            IndexOptions(**options),
            on_outcome=lambda o: seen.__setitem__(Path(o.display).name, o),
            ray=ray_address,
        )
    return report, seen


def _rows(store: Path) -> tuple[dict[bytes, tuple[Any, ...]], dict[tuple[bytes, Any], np.ndarray]]:
    with sqlite3.connect(store / DB_NAME) as db:
        media = {
            r[0]: r[1:]
            for r in db.execute(
                "SELECT path, media_type, width, height, duration, fps, status, note, content_hash"
                " FROM media"
            )
        }
        vectors = {}
        for path, t, t_start, t_end, blob in db.execute(
            "SELECT m.path, v.t, v.t_start, v.t_end, v.embedding FROM vectors v"
            " JOIN media m ON m.id = v.media_id"
        ):
            key = (path, (t, t_start, t_end))
            assert key not in vectors, f"two vectors for {key}"
            vectors[key] = np.frombuffer(blob, dtype=np.float32)
        failures = {r[0]: r[1:] for r in db.execute("SELECT path, reason FROM failures")}
    return {**media, **{p: ("failed", *f) for p, f in failures.items()}}, vectors


def test_ray_run_gives_the_store_of_a_local_run(cluster: str, tmp_path: Path) -> None:
    folder = _corpus(tmp_path / "lib")
    # Every sampled frame kept: the random test model finds all noise frames alike. fp32:
    # the int8 tower quantises activations per batch, so its vectors depend (within a
    # cosine of 0.9999) on which files share a batch, and the random model's near-ties
    # would then swap places in a ranking.
    options = {"video_dedup_threshold": 2.0, "precision": "fp32"}
    local, _ = _index(tmp_path / "local", folder, None, **options)
    on_ray, seen = _index(tmp_path / "ray", folder, "local", **options)
    assert on_ray.counts == local.counts
    assert on_ray.counts["indexed"] == 17 and on_ray.counts["failed"] == 1
    assert on_ray.frames == local.frames > 17
    assert seen["broken.jpg"].outcome == "failed"
    files_l, vecs_l = _rows(tmp_path / "local")
    files_r, vecs_r = _rows(tmp_path / "ray")
    assert files_r == files_l
    assert vecs_r.keys() == vecs_l.keys()
    for key, vec in vecs_l.items():
        assert float(vec @ vecs_r[key]) >= 0.9999 * float(np.linalg.norm(vec)) ** 2, key
    with (
        Engine(Settings(store=tmp_path / "local")) as a,
        Engine(Settings(store=tmp_path / "ray")) as b,
    ):
        for query in QUERIES:
            assert [h.path for h in a.search(query, limit=10)] == [
                h.path for h in b.search(query, limit=10)
            ], query


def test_a_crashing_decoder_costs_one_file_on_ray(cluster: str, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    for i, name in enumerate(["a.jpg", "boom.jpg", "z.jpg", "q.jpg"]):
        random_image(folder / name, i)
    report, seen = _index(tmp_path / "s", folder, "local")
    crashed = seen.pop("boom.jpg")
    assert (crashed.outcome, crashed.reason) == ("failed", "crashed-decoder")
    assert "SIGABRT" in (crashed.detail or "")
    assert {o.outcome for o in seen.values()} == {"indexed"} and len(seen) == 3
    assert [p.reason for p in report.problems] == ["crashed-decoder"]


def test_an_actor_that_builds_another_model_stops_the_run_with_a_message(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xsearch import ray_pipeline

    real = ray_pipeline.encoder_spec

    def other_model(settings: Settings, encoder: Any) -> ray_pipeline.EncoderSpec:
        spec = real(settings, encoder)
        return ray_pipeline.EncoderSpec(spec.settings, spec.profile, "another-fingerprint")

    monkeypatch.setattr(ray_pipeline, "encoder_spec", other_model)
    random_image(tmp_path / "lib" / "a.jpg", 0)
    with pytest.raises(RayRunError, match="not the store's another-fingerprint"):
        _index(tmp_path / "s", tmp_path / "lib", "local")


def _embed_actor_pids() -> list[int]:
    """Processes of Ray Data's embedding actors (Ray titles them after the callable class)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::") and b"_Embed" in cmdline:
                pids.append(int(entry))
    return pids


def test_a_killed_embed_actor_loses_and_doubles_nothing(cluster: str, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    for i in range(48):
        random_image(folder / f"slow{i:02d}.jpg", i)
    killed: list[int] = []

    def kill_once(p: Progress) -> None:
        if p.stage == "embed" and 0 < p.done < p.total and not killed:
            pids = _embed_actor_pids()  # this run's, and maybe one an earlier run is ending
            assert pids
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.append(p.done)

    with Engine(Settings(store=tmp_path / "s", model=TINY, device="cpu")) as engine:
        report = engine.index(
            [folder],
            IndexOptions(commit_every=4, batch_size=4),  # blocks come back one by one
            on_progress=kill_once,
            ray="local",
        )
    assert killed, "the run ended before the actor could be killed"
    assert report.counts["indexed"] == 48 and not report.problems
    files, vectors = _rows(tmp_path / "s")
    assert len(files) == len(vectors) == 48


DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import ray
    from tests.ray_hooks import setup
    setup()
    from xsearch import Engine, IndexOptions, Settings
    ray.init(address=sys.argv[1], runtime_env={runtime_env!r}, log_to_driver=False)
    with Engine(Settings(store=Path(sys.argv[2]), model="tiny-test", device="cpu")) as e:
        e.index([Path(sys.argv[3])], IndexOptions(commit_every=4, batch_size=4), ray="auto")
    """
)


def test_a_killed_driver_resumes_with_exact_counts(cluster: str, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    for i in range(48):
        random_image(folder / f"slow{i:02d}.jpg", i)
    store = tmp_path / "s"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(runtime_env=RUNTIME_ENV))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(script), cluster, str(store), str(folder)]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while media_rows(store / DB_NAME) <= 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "the driver committed nothing in 60 s"
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    before = media_rows(store / DB_NAME)
    assert 0 < before < 48
    report, _ = _index(store, folder, "local")
    assert report.counts["unchanged"] + report.counts["indexed"] == 48
    assert report.counts["indexed"] == 48 - before
    files, vectors = _rows(store)
    assert len(files) == len(vectors) == 48


def test_ray_without_the_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    random_image(tmp_path / "lib" / "a.jpg", 0)
    with pytest.raises(RayUnavailableError, match=r"pip install -e '\.\[ray\]'"):
        _index(tmp_path / "s", tmp_path / "lib", "local")


def test_cli_ray_option_without_the_extra_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Any
) -> None:
    from xsearch.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    random_image(tmp_path / "lib" / "a.jpg", 0)
    result = runner.invoke(
        app, ["index", str(tmp_path / "lib"), "--store", "s", "--model", TINY, "--ray", "local"]
    )
    assert result.exit_code == 2
    assert "pip install -e '.[ray]'" in result.output
