"""What a model profile is made of (config, weights, preprocessing, identity), found without
importing torch.

open_clip's registries (architecture configs and pretrained tags) live in a package whose
``__init__`` imports torch: 0.75 GB and about 2 s here, before anything is built. The
configs are JSON files in the package's folder, and the pretrained tags are a module that
needs only the standard library, so both are read here without running that ``__init__``.
Where that does not work (another open_clip layout), open_clip is imported as usual.

The Engine learns a model's identity from here on a first indexing run, and the torch-free
export (``onnx_graphs.py``) builds its graphs from the config and checkpoint found here.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import importlib.util
import json
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelUnavailableError
from .hub import (
    HubRepo,
    cached_snapshot,
    cached_weights,
    download_weights,
    hub_reachable,
    weight_repo,
)
from .profiles import ModelProfile, PreprocessSpec

__all__ = [
    "HubOptions",
    "ModelFiles",
    "missing_hub_files",
    "model_config",
    "open_clip_folder",
    "required_hub_files",
    "resolve_files",
]

# open_clip's defaults (OPENAI_DATASET_MEAN/STD, PreprocessCfg), for weights without a tag.
_DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
_DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, kw_only=True)
class HubOptions:
    """Where weights are cached and how the hub is reached."""

    cache_dir: Path | None = None
    endpoint: str = "https://huggingface.co"
    probe_timeout: float = 3.0


def open_clip_folder() -> Path | None:
    """Where the open_clip package is installed, found without importing it."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_config(profile: ModelProfile) -> dict[str, Any]:
    """open_clip's config of the profile's architecture (a copy: callers may change it)."""
    cfg = _config_file(profile)
    if cfg is None:
        cfg = _config_from_open_clip(profile)
    return copy.deepcopy(cfg)


def _config_file(profile: ModelProfile) -> dict[str, Any] | None:
    # open_clip registers its own folder first and added folders after, so a profile's
    # folder wins where both have a config of that name.
    root = open_clip_folder()
    folders = [profile.config_dir, root / "model_configs" if root else None]
    for folder in folders:
        path = folder / f"{profile.arch}.json" if folder is not None else None
        if path is None or not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # open_clip skips files without these keys; so does this.
        if isinstance(cfg, dict) and all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            return cfg
    return None


def _config_from_open_clip(profile: ModelProfile) -> dict[str, Any]:
    import open_clip

    if profile.config_dir is not None:
        open_clip.add_model_config(profile.config_dir)
    cfg = open_clip.get_model_config(profile.arch)
    if cfg is None:
        raise ModelError(
            f"Model profile {profile.name!r} names the open_clip architecture {profile.arch!r}, "
            "which this open_clip version does not know. Upgrade open_clip_torch."
        )
    return dict(cfg)


_PRETRAINED_PACKAGE = "_xsearch_open_clip_registry"
_loading = threading.Lock()


@functools.cache
def _pretrained_module() -> Any:
    """open_clip's ``pretrained`` module, run inside a stand-in package so that open_clip's
    ``__init__`` (and with it torch) is not imported; open_clip's own module where that fails."""
    root = open_clip_folder()
    if root is not None:
        with _loading:
            package = types.ModuleType(_PRETRAINED_PACKAGE)
            package.__path__ = [str(root)]
            sys.modules[_PRETRAINED_PACKAGE] = package
            # The module tries ``safetensors.torch`` for its checkpoint loader, which is not
            # used here; a None entry makes that import fail as if it were not installed.
            saved = sys.modules.get("safetensors.torch", _MISSING)
            if saved is _MISSING:
                sys.modules["safetensors.torch"] = None  # type: ignore[assignment]
            try:
                module = importlib.import_module(f"{_PRETRAINED_PACKAGE}.pretrained")
                if callable(getattr(module, "get_pretrained_cfg", None)):
                    return module
            except Exception:
                pass
            finally:
                if saved is _MISSING:
                    del sys.modules["safetensors.torch"]
    import open_clip.pretrained

    return open_clip.pretrained


_MISSING = object()


def pretrained_cfg(arch: str, tag: str) -> dict[str, Any]:
    """open_clip's record of a pretrained tag (hub repository, preprocessing)."""
    cfg: dict[str, Any] = _pretrained_module().get_pretrained_cfg(arch, tag)
    return cfg


def _text_repos(cfg: dict[str, Any]) -> list[str]:
    text = cfg.get("text_cfg", {})
    repos = [text.get("hf_model_name"), text.get("hf_tokenizer_name")]
    return sorted({r for r in repos if r})


def _weights_repo(profile: ModelProfile) -> HubRepo | None:
    if not profile.downloads:
        return None
    pcfg = pretrained_cfg(profile.arch, profile.pretrained or "")
    if pcfg.get("hf_hub"):
        return weight_repo(pcfg["hf_hub"])
    raise ModelError(
        f"Profile {profile.name!r} downloads from a plain URL, which xsearch cannot check "
        "offline; download the checkpoint yourself and pass --checkpoint."
    )


def required_hub_files(profile: ModelProfile) -> list[HubRepo]:
    """Everything of ``profile`` that comes from the model hub."""
    weights = _weights_repo(profile)
    text = [HubRepo(repo) for repo in _text_repos(model_config(profile))]
    return ([weights] if weights else []) + text


def missing_hub_files(profile: ModelProfile, cache_dir: Path | None) -> list[str]:
    """What of ``profile`` is not on this machine (empty: usable offline)."""
    if profile.weights_file is not None and not profile.weights_file.is_file():
        return [str(profile.weights_file)]
    weights = _weights_repo(profile)
    missing = [] if weights is None or cached_weights(weights, cache_dir) else [weights]
    missing += [
        HubRepo(repo)
        for repo in _text_repos(model_config(profile))
        if cached_snapshot(repo, cache_dir, download=False) is None
    ]
    return list(dict.fromkeys(m.describe() for m in missing))


@dataclass(frozen=True)
class ModelFiles:
    """Everything a profile needs, found on this machine: its config, checkpoint, the
    folders of a Hugging Face text tower, and the preprocessing its weights expect."""

    profile: ModelProfile
    config: dict[str, Any]
    checkpoint: Path | None
    text_dirs: dict[str, Path]
    preprocess: PreprocessSpec | None

    @property
    def text_cfg(self) -> dict[str, Any]:
        """The text config with hub names replaced by cached folders (nothing goes online)."""
        text: dict[str, Any] = copy.deepcopy(self.config["text_cfg"])
        for key in ("hf_model_name", "hf_tokenizer_name"):
            if text.get(key) in self.text_dirs:
                text[key] = str(self.text_dirs[text[key]])
        if "hf_model_name" in text:
            # The CLIP checkpoint holds the text tower's weights; only its config is read.
            text["hf_model_pretrained"] = False
        return text

    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def image_size(self) -> int:
        size = self.config.get("vision_cfg", {}).get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    @property
    def image_preprocess(self) -> PreprocessSpec:
        """What open_clip's transform does for these weights (its defaults where untagged)."""
        return self.preprocess or PreprocessSpec(mean=_DEFAULT_MEAN, std=_DEFAULT_STD)

    @property
    def fingerprint(self) -> str:
        """Stable identity of architecture + weights + preprocessing."""
        weights, pp, profile = self.checkpoint, self.preprocess, self.profile
        doc = {
            "arch": profile.arch,
            "pretrained": profile.pretrained,
            "weights": weights.name if weights else f"random-seed-{profile.seed}",
            "weights_size": weights.stat().st_size if weights else 0,
            "preprocess": [pp.mean, pp.std, pp.resize_mode, pp.interpolation] if pp else None,
            "context_length": self.text_cfg.get("context_length"),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def resolve_files(profile: ModelProfile, checkpoint: Path | None, hub: HubOptions) -> ModelFiles:
    """Local paths of everything the model needs; downloads only after a quick network probe."""
    local_ckpt = checkpoint or profile.weights_file
    if local_ckpt is not None and not local_ckpt.is_file():
        raise ModelError(
            f"Checkpoint file {local_ckpt} of model profile {profile.name!r} does not exist. "
            "Check the path given with --checkpoint."
        )
    config = model_config(profile)
    weights_repo = None if local_ckpt is not None else _weights_repo(profile)
    weights = local_ckpt
    if weights_repo is not None:
        weights = cached_weights(weights_repo, hub.cache_dir)
    text_repos = _text_repos(config)
    text_dirs = {r: cached_snapshot(r, hub.cache_dir, download=False) for r in text_repos}
    missing = [weights_repo] if weights_repo is not None and weights is None else []
    missing += [HubRepo(r) for r, d in text_dirs.items() if d is None]
    if missing:
        ok, why = hub_reachable(hub.endpoint, hub.probe_timeout)
        if not ok:
            raise ModelUnavailableError(
                profile.name,
                f"{profile.arch} : {profile.pretrained}",
                list(dict.fromkeys(m.describe() for m in missing)),
                f"the model hub {why}",
            )
        try:
            if weights_repo is not None and weights is None:
                weights = download_weights(weights_repo, hub.cache_dir)
            for repo in text_dirs:
                if text_dirs[repo] is None:
                    text_dirs[repo] = cached_snapshot(repo, hub.cache_dir, download=True)
        except Exception as exc:
            raise ModelUnavailableError(
                profile.name,
                profile.arch,
                [m.describe() for m in missing],
                f"the download failed ({exc})",
            ) from exc
    return ModelFiles(
        profile=profile,
        config=config,
        checkpoint=weights,
        text_dirs={r: d for r, d in text_dirs.items() if d is not None},
        preprocess=_preprocess_spec(profile),
    )


def _preprocess_spec(profile: ModelProfile) -> PreprocessSpec | None:
    """The tag's preprocessing, so that a checkpoint loaded from a file still gets it."""
    if profile.preprocess is not None or not profile.pretrained:
        return profile.preprocess
    pcfg = pretrained_cfg(profile.arch, profile.pretrained)
    return PreprocessSpec(
        mean=tuple(pcfg.get("mean", _DEFAULT_MEAN)),
        std=tuple(pcfg.get("std", _DEFAULT_STD)),
        resize_mode=pcfg.get("resize_mode", "shortest"),
        interpolation=pcfg.get("interpolation", "bicubic"),
    )
