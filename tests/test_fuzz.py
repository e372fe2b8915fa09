"""Issue 17: a fuzz suite. Valid seeds of every supported format and seeded mutants of them
go through the real CLI: no traceback, exit 0 or 4, every seed indexed, every mutant
indexed, partial or reported, a second run indexes nothing, and the store checks clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import TINY
from .fuzz_corpus import Mutant, make_mutants, make_seeds

ROOT = Path(__file__).resolve().parent.parent
OUTCOMES = {"indexed", "partial", "failed", "skipped"}


def _xsearch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tests.driver", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def _report(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {Path(line["path"]).name: line for line in lines}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[Mutant]]:
    root = tmp_path_factory.mktemp("fuzz")
    seeds = make_seeds(root / "seeds")
    mutants = make_mutants(root / "seeds", root / "mutants", seed=17)
    return root, seeds, mutants


def test_the_corpus_covers_every_format_and_every_kind_of_damage(
    corpus: tuple[Path, dict[str, str], list[Mutant]],
) -> None:
    _, seeds, mutants = corpus
    suffixes = {Path(name).suffix for name in seeds}
    for suffix in (".jpg", ".png", ".gif", ".webp", ".tif", ".bmp", ".heic", ".avif"):
        assert suffix in suffixes, suffix
    for suffix in (".mp4", ".mkv", ".avi", ".mov", ".webm", ".wmv", ".asf"):
        assert suffix in suffixes, suffix
    damage = " ".join(m.mutation for m in mutants).lower()
    for word in ("truncated", "flip", "junk", "header claims", "ztxt", "itxt", "empty", "text"):
        assert word in damage, word
    assert len(mutants) >= 4 * len(seeds)


def test_no_file_of_the_fuzz_corpus_stops_a_run(
    corpus: tuple[Path, dict[str, str], list[Mutant]], tmp_path: Path
) -> None:
    root, seeds, mutants = corpus
    store, report = tmp_path / "store", tmp_path / "first.jsonl"
    started = time.monotonic()
    first = _xsearch("index", str(root), "--store", str(store), "--model", TINY,
                     "--report", str(report), "--file-timeout", "20")  # fmt: skip
    seconds = time.monotonic() - started
    output = first.stdout + first.stderr
    assert first.returncode in (0, 4), output
    assert "Traceback" not in output, output
    lines = _report(report)
    for name in seeds:
        assert lines[name]["outcome"] == "indexed", (name, lines.get(name))
    for mutant in mutants:
        line = lines.get(mutant.name)
        assert line is not None, f"{mutant.name} ({mutant.mutation}) was not reported"
        assert line["outcome"] in OUTCOMES, (mutant, line)
        if mutant.certain:
            assert line["outcome"] in ("failed", "skipped"), (mutant, line)
        if line["outcome"] in ("failed", "skipped", "partial"):
            assert line["reason"], (mutant, line)
    # What the user reads is a reason, never a Python exception escaping the boundary.
    assert all(line["reason"] != "undecodable" or line["detail"] for line in lines.values())
    print(f"\nfuzz: {len(seeds)} seeds, {len(mutants)} mutants, first run {seconds:.1f} s")

    second = _xsearch("index", str(root), "--store", str(store), "--model", TINY,
                      "--report", str(tmp_path / "second.jsonl"))  # fmt: skip
    assert second.returncode in (0, 4) and "Traceback" not in second.stdout + second.stderr
    for name, line in _report(tmp_path / "second.jsonl").items():
        assert line["outcome"] in ("unchanged", "failed", "skipped"), (name, line)
        if line["outcome"] != "unchanged":
            assert line["detail"] == "unchanged since the last attempt", (name, line)

    check = _xsearch("info", "--store", str(store), "--check")
    assert check.returncode == 0, check.stdout + check.stderr
