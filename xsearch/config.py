"""Settings: the frozen configuration of an :class:`~xsearch.Engine`.

This is the only module of the package that reads environment variables
(:meth:`Settings.from_env`); everything else receives a :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError

__all__ = ["DEFAULT_STORE", "IndexOptions", "Settings", "default_cache_dir"]

#: Where the store lives when neither --store nor XSEARCH_HOME says otherwise.
DEFAULT_STORE = Path("index_data")

_DEVICES = ("auto", "cpu", "cuda", "mps")
#: Precision of the towers on a CPU: "fp32", "bf16" weights, or "int8" (the image tower as
#: an int8 ONNX Runtime session, texts in "auto"); "auto" is int8 for images where the
#: model's int8 tower agrees with fp32 (checked once per model), else bf16 where the CPU
#: multiplies bf16 natively, else fp32. CUDA always runs bf16 (or fp16) autocast.
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def default_cache_dir() -> Path:
    """Where xsearch keeps what it derives from models (``~/.cache/xsearch``)."""
    return Path.home() / ".cache" / "xsearch"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How an engine is assembled. Every field has a safe default."""

    # Folder of the store: SQLite database, vector index cache, lock and thumbnails.
    store: Path = DEFAULT_STORE
    # Model profile for a *new* store; None means "the store's own, else the default profile".
    model: str | None = None
    # Local checkpoint file to load instead of the profile's hub weights.
    checkpoint: Path | None = None
    # "auto" picks CUDA, then MPS, then CPU.
    device: str = "auto"
    # Hugging Face cache folder; None uses the hub client's default (~/.cache/huggingface/hub).
    model_cache_dir: Path | None = None
    # Base URL of the model hub; only its host and port are probed before a download.
    hub_endpoint: str = "https://huggingface.co"
    # Seconds to wait for the hub before declaring the machine offline.
    hub_probe_timeout: float = 3.0
    # Vector index kind: "auto" (chosen from the collection's size and the memory budget),
    # "flat", "ivf-flat", "ivf-sq8" (alias "ivf"), "hnsw", "ivfpq", "ivfpq-disk" (alias
    # "ondisk"), "exact-torch", "numpy".
    index_kind: str = "auto"
    # Memory the automatically chosen vector index may take, in MiB; None: 1024.
    index_memory_mb: int | None = None
    # Precision of both towers on a CPU, one of PRECISIONS.
    precision: str = "auto"
    # xsearch's own cache (int8 exports of image towers); None: ~/.cache/xsearch.
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        from .index.selector import canonical_kind  # no faiss or torch: plain Python

        canonical_kind(self.index_kind)
        if self.index_memory_mb is not None and self.index_memory_mb < 16:
            raise ConfigError(
                f"The index memory budget must be at least 16 MiB, not {self.index_memory_mb}."
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"Unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}."
            )
        if self.precision == "int8" and self.device not in ("auto", "cpu"):
            raise ConfigError(
                f"--precision int8 runs the image tower on the CPU, not on {self.device!r}; "
                "use --device cpu, or another precision."
            )
        if self.device not in _DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(
                f"Unknown device {self.device!r}; use one of {', '.join(_DEVICES)} or cuda:N."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``XSEARCH_*`` environment variables, then apply ``overrides``.

        Overrides whose value is None are ignored, so CLI options that were not given
        fall through to the environment and then to the defaults.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("XSEARCH_HOME"):
            values["store"] = Path(env["XSEARCH_HOME"])
        if env.get("XSEARCH_MODEL"):
            values["model"] = env["XSEARCH_MODEL"]
        if env.get("XSEARCH_DEVICE"):
            values["device"] = env["XSEARCH_DEVICE"]
        if env.get("XSEARCH_INDEX_KIND"):
            values["index_kind"] = env["XSEARCH_INDEX_KIND"]
        if env.get("XSEARCH_INDEX_MEMORY_MB"):
            raw = env["XSEARCH_INDEX_MEMORY_MB"]
            if not raw.isdigit():
                raise ConfigError(f"XSEARCH_INDEX_MEMORY_MB must be a number of MiB, not {raw!r}.")
            values["index_memory_mb"] = int(raw)
        if env.get("XSEARCH_PRECISION"):
            values["precision"] = env["XSEARCH_PRECISION"]
        if env.get("XSEARCH_CACHE"):
            values["cache_dir"] = Path(env["XSEARCH_CACHE"])
        if env.get("XSEARCH_MODEL_CACHE"):
            values["model_cache_dir"] = Path(env["XSEARCH_MODEL_CACHE"])
        if env.get("HF_ENDPOINT"):
            values["hub_endpoint"] = env["HF_ENDPOINT"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, or the per-user default."""
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """Options of one indexing run."""

    # Images per encoder batch; None picks by device (CPU 32, GPU 256).
    batch_size: int | None = None
    # Decode worker processes; None picks from the CPU count (at least 1). 0 decodes in the
    # calling process, where a decoder that crashes ends the run.
    workers: int | None = None
    # Index dot-files and OS junk (.DS_Store, Thumbs.db, @eaDir, ...) too.
    include_hidden: bool = False
    # Glob patterns (fnmatch, matched against the path relative to the root and the name) to skip.
    exclude: tuple[str, ...] = ()
    # Refuse images larger than this many pixels (decompression-bomb guard).
    max_image_pixels: int = 178_956_970
    # Seconds one file may take to decode before it is reported as timed out.
    file_timeout: float = 60.0
    # Seconds between sampled video frames.
    video_interval: float = 1.0
    # Cosine similarity above which a video frame counts as a duplicate of the last kept one.
    video_dedup_threshold: float = 0.97
    # Commit to SQLite at least every this many files.
    commit_every: int = 64
    # Tag new and changed files after indexing (zero-shot tags; see xsearch/tags.py).
    tag: bool = True
    # A tag vocabulary file (TSV or JSON, see xsearch/labels.py) to add to the shipped one.
    # It is copied into the store and used by every later run until another is given.
    labels: Path | None = None
    # Fields set by tests and benchmarks only.
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {self.batch_size}.")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, not {self.workers}.")
        if self.video_interval <= 0:
            raise ConfigError(f"--video-interval must be positive, not {self.video_interval}.")
        if self.max_image_pixels < 1:
            raise ConfigError(f"--max-pixels must be positive, not {self.max_image_pixels}.")
