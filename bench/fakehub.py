"""A Hugging Face cache holding random-initialised weights under a real profile's repo.

`xsearch query` loads the store's model by profile name, and the profiles' weights come
from the hub, which this machine cannot reach. Writing a random-initialised checkpoint of
the same architecture where the hub client looks (``models--ORG--NAME/snapshots/REV/``)
lets the real CLI run offline with the real architecture: the arithmetic per image and
per query is the same as with the published weights, only the answers are meaningless.
"""

from __future__ import annotations

from pathlib import Path

_REVISION = "0" * 40


def fake_weights(cache_dir: Path, profile_name: str = "clip-b32-en", *, seed: int = 0) -> Path:
    """Make ``profile_name``'s weights loadable offline from ``cache_dir``; returns the file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from xsearch.encoders.profiles import get_profile

    profile = get_profile(profile_name)
    hf_hub = open_clip.get_pretrained_cfg(profile.arch, profile.pretrained or "")["hf_hub"]
    repo_id = hf_hub.rstrip("/").split("/", 1)
    repo = cache_dir / f"models--{repo_id[0]}--{repo_id[1]}"
    target = repo / "snapshots" / _REVISION / "open_clip_model.safetensors"
    if target.exists():
        return target
    torch.manual_seed(seed)
    model = open_clip.create_model(profile.arch, pretrained=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(_REVISION)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(target))
    return target


def hub_env(cache: Path) -> dict[str, str]:
    """The environment that makes the CLI load models from the fake hub ``cache``, offline."""
    return {
        "XSEARCH_MODEL_CACHE": str(cache),
        "XSEARCH_CACHE": str(xsearch_cache(cache)),
        "HF_HUB_OFFLINE": "1",
    }


def xsearch_cache(cache: Path) -> Path:
    """xsearch's own cache (int8 exports) for these runs, beside the fake hub cache."""
    return cache.parent / "xsearch_cache"
