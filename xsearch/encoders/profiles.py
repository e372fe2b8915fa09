"""Named model profiles: which open_clip architecture and weights a name stands for.

A profile is what a user picks with ``--model``. The registry is a plain dict; tests and
plugins add profiles with :func:`register_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnknownModelError

__all__ = [
    "DEFAULT_PROFILE",
    "ModelProfile",
    "PreprocessSpec",
    "get_profile",
    "list_profiles",
    "register_profile",
]

_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """Image preprocessing that must match how the weights were trained."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # "shortest" (resize shorter side, centre crop), "squash" (square resize), "longest" (pad).
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"


@dataclass(frozen=True, kw_only=True)
class ModelProfile:
    """A named, documented choice of model."""

    # What users type after --model.
    name: str
    # open_clip architecture (model config) name.
    arch: str
    # open_clip pretrained tag; None means weights come from `weights_file` or random init.
    pretrained: str | None = None
    # A checkpoint that ships with xsearch (the toy model).
    weights_file: Path | None = None
    # Folder with extra open_clip model configs to register before creating the model.
    config_dir: Path | None = None
    # Preprocessing for weights that do not come from an open_clip tag.
    preprocess: PreprocessSpec | None = None
    # Seed for random-initialised test profiles, so that vectors are reproducible.
    seed: int = 0
    # "fast", "default", "balanced", "best", "opt-in", "test".
    tier: str = "opt-in"
    languages: str = "multilingual"
    licence: str = ""
    commercial_use: bool = True
    description: str = ""
    # Published quality figures, as text, with their source.
    quality: str = ""
    # Approximate image-tower cost per image.
    image_gflops: float | None = None
    aliases: tuple[str, ...] = field(default=())
    # The parts of the shipped tag vocabulary (``xsearch/data/labels/PART.tsv``) that the
    # model knows; empty: all of them. A model that never saw a word tags nonsense with it.
    tag_vocabulary: tuple[str, ...] = ()

    @property
    def downloads(self) -> bool:
        """True when the weights come from the model hub."""
        return self.pretrained is not None and self.weights_file is None


_XM3600 = "XM3600 text→image R@1 (open_clip docs/openclip_multilingual_retrieval_results.csv)"

_BUILTIN: tuple[ModelProfile, ...] = (
    ModelProfile(
        name="mclip-b32",
        arch="xlm-roberta-base-ViT-B-32",
        pretrained="laion5b_s13b_b90k",
        tier="default",
        licence="MIT",
        description="XLM-RoBERTa base + ViT-B/32, LAION-5B. Best Chinese retrieval per FLOP; the default.",
        quality=f"{_XM3600}: 36-language avg 42.6, zh 53.7; ImageNet zero-shot 62.4",
        image_gflops=8.82,
        aliases=("default", "xlm-roberta-base-ViT-B-32"),
    ),
    ModelProfile(
        name="clip-b32-en",
        arch="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        tier="fast",
        languages="en",
        licence="MIT",
        description="ViT-B/32 with the small CLIP text tower, LAION-2B. English only; fastest text encoding.",
        quality="ImageNet zero-shot 66.6; not multilingual",
        image_gflops=8.82,
    ),
    ModelProfile(
        name="siglip-b16-i18n",
        arch="ViT-B-16-SigLIP-i18n-256",
        pretrained="webli",
        tier="balanced",
        licence="Apache-2.0",
        description="SigLIP ViT-B/16 at 256 px with a multilingual text tower, WebLI.",
        quality=f"{_XM3600}: 36-language avg 44.1, zh 47.4; ImageNet zero-shot 75.1",
        image_gflops=46.82,
    ),
    ModelProfile(
        name="mclip-h14",
        arch="xlm-roberta-large-ViT-H-14",
        pretrained="frozen_laion5b_s13b_b90k",
        tier="best",
        licence="MIT",
        description="XLM-RoBERTa large + ViT-H/14, LAION-5B. Best Chinese retrieval; needs a GPU.",
        quality=f"{_XM3600}: 36-language avg 50.2, zh 59.1; ImageNet zero-shot 77.0",
        image_gflops=334.59,
        aliases=("best",),
    ),
    ModelProfile(
        name="siglip-so400m-i18n",
        arch="ViT-SO400M-16-SigLIP-i18n-256",
        pretrained="webli",
        tier="best",
        licence="Apache-2.0",
        description="SigLIP SO400M/16 at 256 px, multilingual. Best English quality; large.",
        quality=f"{_XM3600}: 36-language avg 50.0; ImageNet zero-shot 80.8",
    ),
    ModelProfile(
        name="nllb-siglip-base",
        arch="nllb-clip-base-siglip",
        pretrained="v1",
        tier="opt-in",
        licence="CC-BY-NC-4.0 (non-commercial)",
        commercial_use=False,
        description="NLLB text tower (200 languages) + SigLIP ViT-B/16. Non-commercial licence: opt-in only.",
        quality="Strong on low-resource languages; see the NLLB-CLIP paper",
    ),
    ModelProfile(
        name="nllb-siglip-large",
        arch="nllb-clip-large-siglip",
        pretrained="v1",
        tier="opt-in",
        licence="CC-BY-NC-4.0 (non-commercial)",
        commercial_use=False,
        description="NLLB text tower + SigLIP SO400M. Non-commercial licence: opt-in only.",
        quality="Strong on low-resource languages; see the NLLB-CLIP paper",
    ),
    ModelProfile(
        name="toy-bilingual",
        arch="xsearch-toy-bilingual",
        weights_file=_PACKAGE / "models" / "toy_bilingual" / "open_clip_model.safetensors",
        config_dir=_PACKAGE / "encoders" / "model_configs",
        preprocess=PreprocessSpec(
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            resize_mode="squash",
        ),
        tier="test",
        languages="en+zh",
        licence="MIT (trained by scripts/train_toy_model.py)",
        description="Tiny CLIP trained on generated emoji pictures with English and Chinese "
        "captions. Ships with xsearch for tests and the offline demo; not a general model.",
        quality="see xsearch/models/toy_bilingual/MODEL_CARD.md",
        # It learnt the 49 emoji concepts only (bench/tags.py measures the full vocabulary).
        tag_vocabulary=("emoji",),
    ),
)

_REGISTRY: dict[str, ModelProfile] = {}
_ALIASES: dict[str, str] = {}

#: The profile a new store uses when --model is not given.
DEFAULT_PROFILE = "mclip-b32"


def register_profile(profile: ModelProfile, *, replace: bool = False) -> None:
    """Make ``profile`` selectable by its name and aliases."""
    if profile.name in _REGISTRY and not replace:
        raise ValueError(f"model profile {profile.name!r} is already registered")
    _REGISTRY[profile.name] = profile
    for alias in profile.aliases:
        _ALIASES[alias] = profile.name


def get_profile(name: str) -> ModelProfile:
    """The profile called ``name`` (or one of its aliases)."""
    key = _ALIASES.get(name, name)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise UnknownModelError(name, sorted(_REGISTRY)) from None


def list_profiles() -> list[ModelProfile]:
    """All registered profiles, default first, test profiles last."""
    order = {"default": 0, "fast": 1, "balanced": 2, "best": 3, "opt-in": 4, "test": 5}
    return sorted(_REGISTRY.values(), key=lambda p: (order.get(p.tier, 9), p.name))


for _profile in _BUILTIN:
    register_profile(_profile)
