"""A Hugging Face cache holding random-initialised weights under a real profile's repos.

    python -m bench.fakehub mclip-b32 --cache /tmp/hf        # or any profile; --all
    HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 xsearch index pics && HF_HOME=/tmp/hf xsearch query 猫

xsearch loads a store's model by profile name, and the profiles' weights, configs and
tokenizers come from the hub, which this machine cannot reach. Writing a random-initialised
checkpoint of the same architecture where the hub client looks
(``models--ORG--NAME/snapshots/REV/``), with the config and a tokenizer of the real kind and
size for a Hugging Face text tower (``fake_tokenizers.py``), lets the real CLI run offline
with the real architecture: the arithmetic per image and per query is the same as with the
published weights, only the answers are meaningless.

``--cache DIR`` is a ``HF_HOME`` (the files go to ``DIR/hub``, where the hub client looks
under ``HF_HOME``); :func:`fake_weights` takes the hub cache itself (``XSEARCH_MODEL_CACHE``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import fake_tokenizers

_REVISION = "0" * 40

# The config.json of each Hugging Face text tower the profiles name (the hub's, less what
# only training reads), and the tokenizer that goes with it.
_XLMR = {
    "architectures": ["XLMRobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "xlm-roberta",
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "vocab_size": 250002,
}
_NLLB = {
    "architectures": ["M2M100ForConditionalGeneration"],
    "activation_function": "relu",
    "bos_token_id": 0,
    "decoder_start_token_id": 2,
    "eos_token_id": 2,
    "is_encoder_decoder": True,
    "max_position_embeddings": 1024,
    "model_type": "m2m_100",
    "pad_token_id": 1,
    "scale_embedding": True,
    "tokenizer_class": "NllbTokenizer",
    "vocab_size": 256206,
}


def _layers(n: int, width: int, heads: int, ffn: int) -> dict[str, Any]:
    return {
        "hidden_size": width,
        "num_hidden_layers": n,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
    }


def _nllb_layers(n: int, width: int, heads: int, ffn: int) -> dict[str, Any]:
    return {
        "d_model": width,
        "num_hidden_layers": n,
        **{f"{part}_layers": n for part in ("encoder", "decoder")},
        **{f"{part}_attention_heads": heads for part in ("encoder", "decoder")},
        **{f"{part}_ffn_dim": ffn for part in ("encoder", "decoder")},
    }


TEXT_REPOS: dict[str, tuple[dict[str, Any] | None, Callable[[Path], None]]] = {
    "xlm-roberta-base": ({**_XLMR, **_layers(12, 768, 12, 3072)}, fake_tokenizers.xlmr_tokenizer),
    "xlm-roberta-large": (
        {**_XLMR, **_layers(24, 1024, 16, 4096)},
        fake_tokenizers.xlmr_tokenizer,
    ),
    "facebook/nllb-200-distilled-600M": (
        {**_NLLB, **_nllb_layers(12, 1024, 16, 4096)},
        fake_tokenizers.nllb_tokenizer,
    ),
    "facebook/nllb-200-distilled-1.3B": (
        {**_NLLB, **_nllb_layers(24, 1024, 16, 8192)},
        fake_tokenizers.nllb_tokenizer,
    ),
    # SigLIP i18n: open_clip's own text tower; only the (mT5) tokenizer comes from the hub.
    "timm/ViT-B-16-SigLIP-i18n-256": (None, fake_tokenizers.t5_tokenizer),
}


def _snapshot(cache_dir: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the hub cache ``cache_dir``, with its ref."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(_REVISION)
    folder = repo / "snapshots" / _REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fake_text_repo(cache_dir: Path, repo_id: str) -> Path:
    """Write a Hugging Face text repo's config and tokenizer; returns its snapshot folder."""
    if repo_id not in TEXT_REPOS:
        raise KeyError(f"no fake of the hub repository {repo_id!r}; add it to TEXT_REPOS")
    config, write_tokenizer = TEXT_REPOS[repo_id]
    folder = _snapshot(cache_dir, repo_id)
    if not (folder / "tokenizer.json").is_file():
        write_tokenizer(folder)
    if config is not None and not (folder / "config.json").is_file():
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def fake_weights(cache_dir: Path, profile_name: str = "clip-b32-en", *, seed: int = 0) -> Path:
    """Make ``profile_name`` loadable offline from the hub cache ``cache_dir``: its text
    repos first (the model is built from their configs), then a random-initialised
    checkpoint of its architecture. Returns the checkpoint; an existing one is kept."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from xsearch.encoders.model_files import model_config
    from xsearch.encoders.profiles import get_profile

    profile = get_profile(profile_name)
    config = model_config(profile)
    text_cfg = dict(config["text_cfg"])
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key):
            text_cfg[key] = str(fake_text_repo(cache_dir, text_cfg[key]))
    hf_hub = open_clip.get_pretrained_cfg(profile.arch, profile.pretrained or "")["hf_hub"]
    target = _snapshot(cache_dir, hf_hub.rstrip("/")) / "open_clip_model.safetensors"
    if target.exists():
        return target
    torch.manual_seed(seed)
    # The text tower's weights are in the checkpoint, as in the published one.
    model = open_clip.create_model(
        profile.arch, pretrained=None, text_cfg={**text_cfg, "hf_model_pretrained": False}
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    del model
    partial = target.with_name(f".{target.name}.partial")
    save_file(state, str(partial))
    partial.replace(target)
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


def main(argv: list[str] | None = None) -> None:
    from xsearch.encoders.profiles import DEFAULT_PROFILE, list_profiles

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", nargs="?", default=DEFAULT_PROFILE)
    parser.add_argument("--cache", type=Path, required=True, help="a HF_HOME folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all", action="store_true", help="every profile that downloads")
    args = parser.parse_args(argv)
    names = [p.name for p in list_profiles() if p.downloads] if args.all else [args.profile]
    for name in names:
        started = time.perf_counter()
        path = fake_weights(args.cache / "hub", name, seed=args.seed)
        size = path.stat().st_size / 1e6
        print(f"{name}: {path} ({size:.0f} MB, {time.perf_counter() - started:.0f} s)")
    print(f"use: HF_HOME={args.cache} HF_HUB_OFFLINE=1 xsearch index PICS")


if __name__ == "__main__":
    main()
