"""Finding model files in the Hugging Face cache, and failing fast when they are not there.

The hub client retries for tens of seconds per file on a machine without network. xsearch
checks the cache first and probes the hub's host with one short TCP connect before any
download, so that an offline machine gets a clear message within seconds.
"""

from __future__ import annotations

import posixpath
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "HubRepo",
    "cached_snapshot",
    "cached_weights",
    "download_weights",
    "hub_reachable",
    "weight_repo",
]

# Files a text tower or tokenizer needs; weights of HF text towers come from the CLIP checkpoint.
_TEXT_PATTERNS = ["*.json", "*.model", "*.txt", "tokenizer*", "spiece*", "sentencepiece*"]
_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class HubRepo:
    """A model-hub repository xsearch needs, and which files of it."""

    repo_id: str
    # Exact weight file name; None means open_clip's default names (weights) or a snapshot.
    filename: str | None = None
    # True for the CLIP checkpoint, False for a text tower's config and tokenizer files.
    weights: bool = False

    def describe(self) -> str:
        if not self.weights:
            return f"{self.repo_id} (tokenizer and config files)"
        return f"{self.repo_id}/{self.filename or 'open_clip_model.safetensors'} (weights)"


def hub_reachable(endpoint: str, timeout: float) -> tuple[bool, str]:
    """Whether a TCP connection to the hub's host opens within ``timeout`` seconds."""
    parsed = urlparse(endpoint)
    host = parsed.hostname or endpoint
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"{host}:{port} is unreachable ({exc.__class__.__name__}: {exc})"


def weight_repo(hf_hub: str) -> HubRepo:
    """Split open_clip's ``org/name/filename`` notation (trailing ``/`` = default file name)."""
    repo_id, filename = posixpath.split(hf_hub)
    return HubRepo(repo_id=repo_id, filename=filename or None, weights=True)


def cached_weights(repo: HubRepo, cache_dir: Path | None) -> Path | None:
    """The cached checkpoint of ``repo``, preferring safetensors; None when not cached."""
    from huggingface_hub import try_to_load_from_cache

    names = [repo.filename] if repo.filename else list(_WEIGHT_NAMES)
    if repo.filename and repo.filename.endswith(".bin"):
        names.insert(0, repo.filename.replace(".bin", ".safetensors"))
    for name in names:
        found = try_to_load_from_cache(
            repo.repo_id, name, cache_dir=str(cache_dir) if cache_dir else None
        )
        if isinstance(found, str):
            return Path(found)
    return None


def download_weights(repo: HubRepo, cache_dir: Path | None) -> Path:
    """Download the checkpoint of ``repo`` into the cache; the caller probed the network."""
    from huggingface_hub import hf_hub_download

    names = [repo.filename] if repo.filename else list(_WEIGHT_NAMES)
    last: Exception | None = None
    for name in names:
        try:
            return Path(
                hf_hub_download(repo.repo_id, name, cache_dir=str(cache_dir) if cache_dir else None)
            )
        except Exception as exc:  # the hub raises several unrelated types
            last = exc
    raise FileNotFoundError(f"no checkpoint in {repo.repo_id}: {last}")


def cached_snapshot(repo_id: str, cache_dir: Path | None, *, download: bool) -> Path | None:
    """Local folder with the config and tokenizer files of ``repo_id``; None when not cached."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=str(cache_dir) if cache_dir else None,
            allow_patterns=_TEXT_PATTERNS,
            local_files_only=not download,
        )
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        if download:
            raise
        return None
    path = Path(folder)
    return path if any(path.iterdir()) else None
