"""Issue 17: one boundary per file. Whatever one file does to its decoder (raise anything,
abort, get killed, hang in native code) costs that file one line, never the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from xsearch import Engine, IndexOptions, Settings, pipeline, workers
from xsearch.index_report import FileOutcome
from xsearch.pipeline import DecodeOptions, WorkItem

from .conftest import TINY, random_image

ROOT = Path(__file__).resolve().parent.parent


def _library(folder: Path, names: list[str]) -> Path:
    for seed, name in enumerate(names):
        random_image(folder / name, seed)
    return folder


def _index(tmp_path: Path, folder: Path, **options: Any) -> tuple[dict[str, FileOutcome], Any]:
    seen: dict[str, FileOutcome] = {}
    with Engine(Settings(store=tmp_path / "store", model=TINY)) as engine:
        report = engine.index(
            [folder],
            IndexOptions(**options),
            on_outcome=lambda o: seen.__setitem__(Path(o.display).name, o),
        )
    return seen, report


def _fault(monkeypatch: pytest.MonkeyPatch, name: str, action: Any) -> None:
    real = pipeline.decode_image

    def faulty(path: bytes, **kwargs: Any) -> Any:
        if os.path.basename(path) == name.encode():
            action()
        return real(path, **kwargs)

    monkeypatch.setattr(pipeline, "decode_image", faulty)


class OddDecoderError(Exception):
    """An exception type that no list of expected decoder errors would hold."""


def _raise_odd() -> None:
    raise OddDecoderError("Decompressed data too large for a made-up limit")


@pytest.mark.parametrize("workers_", [0, 1])
def test_any_exception_is_that_files_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers_: int
) -> None:
    folder = _library(tmp_path / "lib", ["a.jpg", "odd.jpg", "z.jpg"])
    _fault(monkeypatch, "odd.jpg", _raise_odd)
    seen, report = _index(tmp_path, folder, workers=workers_)
    odd = seen["odd.jpg"]
    assert (odd.outcome, odd.reason) == ("failed", "undecodable")
    assert odd.detail == "OddDecoderError: Decompressed data too large for a made-up limit"
    assert seen["a.jpg"].outcome == seen["z.jpg"].outcome == "indexed"
    assert report.counts["failed"] == 1 and not report.cancelled


@pytest.mark.parametrize(
    ("action", "signal_name"),
    [(os.abort, "SIGABRT"), (lambda: os.kill(os.getpid(), signal.SIGKILL), "SIGKILL")],
    ids=["abort", "oom-kill"],
)
def test_a_decoder_that_kills_its_process_costs_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: Any, signal_name: str
) -> None:
    names = [f"p{i:02d}.jpg" for i in range(12)]
    folder = _library(tmp_path / "lib", names)
    _fault(monkeypatch, "p03.jpg", action)
    seen, report = _index(tmp_path, folder, workers=2, batch_size=4)
    crashed = seen.pop("p03.jpg")
    assert (crashed.outcome, crashed.reason) == ("failed", "crashed-decoder")
    assert signal_name in (crashed.detail or "")
    # Every other file, before and after the crash, and on either worker, is indexed.
    assert {o.outcome for o in seen.values()} == {"indexed"} and len(seen) == 11
    assert report.counts["failed"] == 1


def test_a_decoder_stuck_in_native_code_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _library(tmp_path / "lib", ["a.jpg", "stuck.jpg", "z.jpg"])

    def stuck_in_c() -> None:
        # A C loop never lets the SIGALRM handler run; blocking the signal is the same.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)

    _fault(monkeypatch, "stuck.jpg", stuck_in_c)
    monkeypatch.setattr(workers, "GRACE_S", 0.5)
    started = time.monotonic()
    # The limit applies to the good files too: 2 s leaves a loaded machine's fresh worker
    # room for them, where 0.5 s once timed out a.jpg.
    seen, _ = _index(tmp_path, folder, workers=1, file_timeout=2)
    assert time.monotonic() - started < 30
    stuck = seen["stuck.jpg"]
    assert (stuck.outcome, stuck.reason) == ("failed", "timed-out")
    assert "--file-timeout" in (stuck.detail or "")
    assert seen["a.jpg"].outcome == seen["z.jpg"].outcome == "indexed"


def test_workers_yield_in_order_and_are_replaced(tmp_path: Path) -> None:
    paths = [random_image(tmp_path / f"{i}.jpg", i) for i in range(6)]
    items = [
        WorkItem(i, os.fsencode(p), p.stat().st_size, p.stat().st_mtime_ns, "image")
        for i, p in enumerate(paths)
    ]
    opts = DecodeOptions(max_pixels=10**8, timeout=10, video_interval=1.0)

    with workers.DecodeWorkers(_shape_only, opts, 3) as pool:
        keys = [d.key for d in pool.decode(items)]
        assert keys == list(range(6))
        # A worker killed from outside while idle is replaced, and its next file decodes.
        victim = pool._workers[0].process
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        again = list(pool.decode(items))
    assert [d.error for d in again] == [None] * 6
    assert pool.replaced >= 1


def test_a_tensor_crosses_the_pipe_as_plain_bytes(tmp_path: Path) -> None:
    """torch pickles a tensor as a shared-memory handle that the sending process serves;
    a worker that dies after sending must not turn its good file into a crash."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch

    path = random_image(tmp_path / "a.jpg", 0)
    item = WorkItem(0, os.fsencode(path), path.stat().st_size, path.stat().st_mtime_ns, "image")
    opts = DecodeOptions(max_pixels=10**8, timeout=10, video_interval=1.0)
    decoded = pipeline.decode_item(item, _as_tensor, opts)
    sent = bytes(ForkingPickler.dumps(workers._as_plain_arrays(decoded)))
    assert b"rebuild_storage" not in sent and b"torch" not in sent
    again = workers._as_tensors_again(pickle.loads(sent))
    assert isinstance(again.pixels, torch.Tensor)
    assert torch.equal(again.pixels, decoded.pixels)
    with workers.DecodeWorkers(_as_tensor, opts, 1) as pool:
        (through,) = pool.decode([item])
    assert isinstance(through.pixels, torch.Tensor)
    assert torch.equal(through.pixels, decoded.pixels)


def _as_tensor(image: Any) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32))


def _shape_only(image: Any) -> Any:
    import numpy as np

    return np.zeros((3, 4, 4), dtype=np.float32) + image.size[0]


def test_cli_reports_a_crash_and_exits_4_without_a_traceback(tmp_path: Path) -> None:
    folder = _library(tmp_path / "lib", ["a.jpg", "boom.jpg", "odd.jpg", "z.jpg"])
    report = tmp_path / "report.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XSEARCH_TEST_DECODER_FAULT": "boom:abort,odd:raise",
    }
    argv = [sys.executable, "-m", "tests.driver", "index", str(folder)]
    argv += ["--store", str(tmp_path / "s"), "--model", TINY, "--report", str(report)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 4, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "crashed-decoder" in out.stdout + out.stderr
    lines = {Path(d["path"]).name: d for d in map(json.loads, report.read_text().splitlines())}
    assert lines["boom.jpg"]["reason"] == "crashed-decoder"
    assert lines["odd.jpg"]["reason"] == "undecodable"
    assert "OddDecoderError" in lines["odd.jpg"]["detail"]
    assert lines["a.jpg"]["outcome"] == lines["z.jpg"]["outcome"] == "indexed"


def test_a_damaged_brand_leaves_the_kind_to_the_extension(tmp_path: Path) -> None:
    from xsearch.media.sniff import sniff

    head = b"\x00\x00\x00\x18ftyp"
    cases = {"a.heic": b"heXc", "b.mp4": b"heXc", "c.heic": b"isom", "d.mov": b"qt  "}
    for name, brand in cases.items():
        (tmp_path / name).write_bytes(head + brand + bytes(40))
    kinds = {name: sniff(os.fsencode(tmp_path / name)) for name in cases}
    assert kinds == {"a.heic": None, "b.mp4": "video", "c.heic": "video", "d.mov": "video"}


_ORPHAN_SCRIPT = """
import os, signal, sys, time
from xsearch import pipeline, workers
from xsearch.pipeline import DecodeOptions, WorkItem

def stuck(item, preprocess, opts, on_limit=None):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    print(os.getpid(), flush=True)
    time.sleep(120)

pipeline.decode_item = stuck
item = WorkItem(0, b"/nowhere.jpg", 1, 0, "image")
opts = DecodeOptions(max_pixels=10**6, timeout=0, video_interval=1.0)
with workers.DecodeWorkers(lambda image: image, opts, 2) as pool:
    next(pool.decode([item]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stuck_worker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    os.kill(worker_pid, 0)  # alive, stuck in its decode
    parent.kill()
    parent.wait()
    for _ in range(200):
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(worker_pid, signal.SIGKILL)
    pytest.fail("the decode worker outlived its SIGKILLed parent")
