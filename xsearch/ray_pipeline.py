"""The indexer's decode → embed stage on Ray Data (``xsearch index --ray ADDRESS``).

The driver plans the run exactly as a local one (scan, stat fast path, moves) and keeps
committing: only decoding and embedding leave it. Work items go to ``ray.data`` in blocks;
decoding runs as CPU tasks that Ray retries, through the same per-file boundary as a local
run (:class:`xsearch.workers.DecodeWorkers`, so a decoder that crashes costs its file as
``crashed-decoder``, not the task); the encoder runs in a pool of actors (``map_batches``
with a callable class), one GPU each where the cluster has GPUs, else the int8 ONNX tower
on CPUs. Results stream back block by block and the indexer commits them under its lock;
a retried task's results are committed once (the indexer keeps the keys it wrote).

Files must be readable by every worker under the driver's path: a shared filesystem
mounted at the same place on each node. Object-store URIs (``s3://``, ``gs://``) are not
supported: the scanner and the decoders read local paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexOptions, Settings
from .encoders.base import Encoder, Vectors
from .encoders.profiles import ModelProfile, get_profile, register_profile
from .errors import ConfigError, RayRunError, RayUnavailableError, XSearchError
from .indexer import Embedded, _draft_size
from .pipeline import Decoded, DecodeOptions, Preprocess, WorkItem, embed_decoded
from .workers import DecodeWorkers

__all__ = ["EncoderSpec", "RayOptions", "RayStage", "build_encoder", "connect", "encoder_spec"]

# Work items per Ray block: small enough that a SIGKILLed driver or a retried task loses
# little, large enough that scheduling a task costs little next to decoding it.
BLOCK_ITEMS = 16


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Where and how the decode → embed stage runs on Ray."""

    # "local" (a Ray instance on this machine), "auto" ($RAY_ADDRESS or a running cluster),
    # or "ray://host:port".
    address: str = "local"
    # Work items per block handed to ray.data.
    block_items: int = BLOCK_ITEMS
    # Embedding actors; None: one per GPU, else one per four CPUs of the cluster (at least 1).
    embed_actors: int | None = None
    # Decode tasks at a time; None: one per CPU of the cluster. Equal to ``embed_actors``,
    # Ray Data fuses decoding into the actors (no separate tasks, no pipelining).
    decode_tasks: int | None = None
    # CPUs a local instance may use; None: all of this machine's.
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if not (
            self.address in ("local", "auto")
            or self.address.startswith("ray://")
            or ":" in self.address
        ):
            raise ConfigError(
                f"--ray takes local, auto, ray://HOST:PORT or HOST:PORT, not {self.address!r}."
            )
        if self.block_items < 1:
            raise ConfigError(f"block_items must be at least 1, not {self.block_items}.")


def _ray(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            address,
            "Indexing on Ray needs the ray extra, which is not installed: "
            "pip install -e '.[ray]' (or pip install 'ray[data]>=2.40,<3').",
        ) from None
    return ray


@contextlib.contextmanager
def connect(options: RayOptions) -> Iterator[Any]:
    """Ray, connected as ``options.address`` says; a connection made here is closed after.

    A process that is already connected (a test's local cluster, a notebook) is used as it is.
    """
    ray = _ray(options.address)
    if ray.is_initialized():
        yield ray
        return
    # Ray's INFO notes ("Started a local Ray instance") would only interleave with the run's
    # own progress; its warnings still show. Workers' output stays in Ray's log files.
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if options.address == "local":
        kwargs["num_cpus"] = options.local_cpus or os.cpu_count() or 1
    else:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise RayUnavailableError(
            options.address,
            f"Cannot reach the Ray cluster at {options.address!r}: {exc}. Start one with "
            "`ray start --head`, set RAY_ADDRESS, or use --ray local.",
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class EncoderSpec:
    """What an embedding actor needs to build the same encoder as the driver's."""

    settings: Settings
    profile: ModelProfile
    fingerprint: str


def encoder_spec(settings: Settings, encoder: Encoder) -> EncoderSpec:
    """The recipe of ``encoder`` for a process that has no store (a Ray worker)."""
    profile = get_profile(encoder.profile_name)
    remote = replace(
        settings,
        store=Path(f"/nonexistent/xsearch-ray-{os.getpid()}"),
        model=profile.name,
        cache_dir=settings.resolved_cache_dir,
    )
    return EncoderSpec(remote, profile, encoder.fingerprint)


def build_encoder(spec: EncoderSpec) -> Encoder:
    """The encoder of ``spec`` in this process, checked to be the driver's."""
    from .encoders.assemble import EncoderAssembly

    try:
        get_profile(spec.profile.name)
    except XSearchError:  # a profile the driver registered at run time (tests, plugins)
        register_profile(spec.profile)
    encoder = EncoderAssembly(spec.settings, notices=[]).encoder(get_profile(spec.profile.name))
    if encoder.fingerprint != spec.fingerprint:
        raise ConfigError(
            f"A Ray worker built model {encoder.fingerprint}, not the store's "
            f"{spec.fingerprint}: give every node the same model files."
        )
    return encoder


class RayStage:
    """An :data:`xsearch.indexer.EmbedStage` that runs on a connected Ray cluster."""

    def __init__(self, ray: Any, settings: Settings, index: IndexOptions, options: RayOptions):
        self._ray = ray
        self._settings = settings
        self._index = index
        self._options = options
        # Ray node id → files it decoded and embedded ("decoded", "embedded"), for the report.
        self.work_by_node: dict[str, dict[str, int]] = {}

    def __call__(self, work: list[WorkItem], encoder: Encoder) -> Iterator[Sequence[Embedded]]:
        data = self._ray.data
        # The indexer reports progress; Ray Data's own bars would only interleave with it.
        context = data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        opts = DecodeOptions(
            max_pixels=self._index.max_image_pixels,
            timeout=self._index.file_timeout,
            video_interval=self._index.video_interval,
            draft_size=_draft_size(encoder),
        )
        # Pickled once: a task unpickles it only where its worker has no decode pool for it.
        preprocess = pickle.dumps(encoder.preprocess)
        resources = self._ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        actors = self._options.embed_actors or (gpus or max(1, cpus // 4))
        batch = self._index.batch_size or (256 if gpus else 32)
        rows = [{"item": pickle.dumps(item)} for item in work]
        blocks = max(1, -(-len(rows) // self._options.block_items))
        decoded = data.from_items(rows, override_num_blocks=blocks).map_batches(
            _decode_batch,
            fn_kwargs={"preprocess": preprocess, "opts": opts},
            batch_size=None,
            compute=data.TaskPoolStrategy(size=self._options.decode_tasks or cpus),
            num_cpus=1,
            zero_copy_batch=True,
        )
        # Ray Data's own retry defaults apply: a task whose worker dies is retried, and an
        # actor that dies is restarted and its blocks run again (the indexer keeps the first
        # result of a file). A decoder's crash never reaches Ray: its decode child absorbs it.
        embedded = decoded.map_batches(
            _Embed,
            fn_constructor_kwargs={"spec": encoder_spec(self._settings, encoder)},
            batch_size=batch,
            compute=data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
        # The run's boundary: whatever Ray raises (an actor that cannot start, a lost node)
        # stops the run as one error; what the driver committed stays.
        try:
            for block in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                self._count(block)
                yield [pickle.loads(raw) for raw in block["result"]]
        except self._ray.exceptions.RayError as exc:
            raise RayRunError(self._options.address, _cause(exc)) from exc

    def _count(self, block: dict[str, np.ndarray]) -> None:
        for stage, column in (("decoded", "decode_node"), ("embedded", "embed_node")):
            for node in block[column]:
                counts = self.work_by_node.setdefault(str(node), {})
                counts[stage] = counts.get(stage, 0) + 1


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _cause(exc: BaseException) -> str:
    """The line of a Ray error that names the original exception (xsearch's own message
    where it is one), else its first line."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("xsearch.errors.")]
    if ours:
        return ours[-1].split(": ", 1)[-1]
    return lines[0] if lines else type(exc).__name__


# -- what runs on the workers ----------------------------------------------------------------

# One decode pool per Ray worker process and transform, reused by its later tasks: forking
# a worker per task would cost more than decoding a block.
_POOLS: dict[bytes, DecodeWorkers] = {}


def _decode_batch(
    batch: dict[str, np.ndarray], preprocess: bytes, opts: DecodeOptions
) -> dict[str, np.ndarray]:
    """Decode a block of work items, one file per decode child at a time."""
    items: list[WorkItem] = [pickle.loads(raw) for raw in batch["item"]]
    key = hashlib.sha1(preprocess + pickle.dumps(opts)).digest()
    pool = _POOLS.get(key)
    if pool is None:
        transform: Preprocess = pickle.loads(preprocess)
        pool = _POOLS[key] = DecodeWorkers(transform, opts, 1)
    results = list(pool.decode(items))
    return {
        "decoded": _objects([pickle.dumps(d, protocol=5) for d in results]),
        "decode_node": _objects([_node_id()] * len(results)),
    }


class _Embed:
    """An embedding actor: loads the encoder once, then embeds decoded blocks."""

    def __init__(self, spec: EncoderSpec) -> None:
        self._encoder = build_encoder(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded: list[Decoded] = [pickle.loads(raw) for raw in batch["decoded"]]
        good = [d for d in decoded if d.error is None]
        vectors: dict[int, Vectors] = {}
        if good:
            vectors = dict(
                zip((d.key for d in good), embed_decoded(self._encoder, good), strict=True)
            )
        out = []
        for d in decoded:
            d.pixels = None  # the driver needs the metadata, not the pixels back
            out.append(pickle.dumps((d, vectors.get(d.key)), protocol=5))
        return {
            "result": _objects(out),
            "decode_node": batch["decode_node"],
            "embed_node": _objects([_node_id()] * len(out)),
        }


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _objects(values: Sequence[object]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
