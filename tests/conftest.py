"""Shared fixtures: an isolated home per test, the tiny random model, generated media."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from xsearch import Engine, ModelProfile, Settings, register_profile
from xsearch.encoders.profiles import get_profile

DATA = Path(__file__).parent / "data"
TINY = "tiny-test"


def _register_tiny() -> None:
    try:
        get_profile(TINY)
    except Exception:
        register_profile(
            ModelProfile(
                name=TINY,
                arch="xsearch-tiny-test",
                config_dir=DATA / "model_configs",
                tier="test",
                languages="none (random weights)",
                description="Random-initialised tiny CLIP for plumbing tests.",
            )
        )
        register_profile(
            ModelProfile(
                name="tiny-test-other",
                arch="xsearch-tiny-test",
                config_dir=DATA / "model_configs",
                seed=1,
                tier="test",
            )
        )


_register_tiny()


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """xsearch's own cache (int8 exports), shared by the tests: each model is exported once,
    and never into the user's home. Session-wide, so module fixtures use it too."""
    cache = tmp_path_factory.mktemp("xsearch-cache")
    with pytest.MonkeyPatch.context() as patch:
        # The CLI reads the variable (also in subprocesses); Settings() the default, in
        # this process only: a subprocess that builds Settings() must pass cache_dir.
        patch.setenv("XSEARCH_CACHE", str(cache))
        patch.setattr("xsearch.config.default_cache_dir", lambda: cache)
        yield cache


@pytest.fixture(autouse=True)
def isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_cache: Path
) -> Iterator[Path]:
    """Every test runs in its own folder, with no xsearch state from the environment."""
    for var in (
        "XSEARCH_HOME",
        "XSEARCH_MODEL",
        "XSEARCH_DEVICE",
        "XSEARCH_MODEL_CACHE",
        "XSEARCH_PRECISION",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def random_image(
    path: Path, seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG"
) -> Path:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i in range(6):
        random_image(folder / f"p{i}.jpg", i)
    random_image(folder / "sub" / "deep.png", 99, fmt="PNG")
    return folder


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(Settings(store=tmp_path / "store", model=TINY, device="cpu")) as e:
        yield e


def workers_env() -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture
def one_faiss_thread() -> Iterator[None]:
    """OpenMP threads spin while waiting: on a shared 2-core runner, one thread is faster
    (the index tests ask for it with ``pytest.mark.usefixtures``)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
