"""Which open_clip towers the graph writer knows, and the checkpoint tensors each reads.

:func:`image_spec` and :func:`text_spec` read an open_clip model config and return what
``onnx_graphs.py`` builds a graph from (:class:`ImageSpec`, :class:`TextSpec`), or None for
any config key or value the writer does not reproduce: such a tower is traced with torch
instead. :func:`image_tensors` and :func:`text_tensors` name the checkpoint tensors a graph
reads, and :func:`fits` checks that a checkpoint holds exactly those, of the shapes needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..checkpoint import Checkpoint

__all__ = [
    "ImageSpec",
    "TextSpec",
    "Transformer",
    "fits",
    "image_spec",
    "image_tensors",
    "text_spec",
    "text_tensors",
]

# Config keys the writer reproduces, with the value each must have when it is not one the
# writer handles (None: any value). Any other key means a tower this module does not know.
# Both towers' blocks: open_clip's plain residual attention block, nothing custom.
_BLOCK_KEYS: dict[str, Any] = {
    "layers": None,
    "width": None,
    "mlp_ratio": None,
    "ls_init_value": None,
    "final_ln_after_pool": None,
    "pool_type": None,
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_VISION_KEYS: dict[str, Any] = {
    **_BLOCK_KEYS,
    "head_width": None,
    "patch_size": None,
    "image_size": None,
    "patch_dropout": None,  # training only
    "attentional_pool": False,
    "attn_pooler_queries": None,
    "attn_pooler_heads": None,
    "no_ln_pre": None,
    "pos_embed_type": None,  # learnable or fixed sin-cos: both are tensors of the checkpoint
    "timm_model_name": None,
}
_TEXT_KEYS: dict[str, Any] = {
    **_BLOCK_KEYS,
    "context_length": None,
    "vocab_size": None,
    "heads": None,
    "embed_cls": False,
    "pad_id": 0,
    "no_causal_mask": False,
    # A per-token norm: the same before or after pooling the one token.
    "final_ln_after_pool": None,
    "pool_type": "argmax",
    "proj_bias": None,
    "proj_type": None,
    "hf_model_name": None,
    "hf_tokenizer_name": None,
    "tokenizer_mode": None,
    "tokenizer_kwargs": None,
}
# Keys that must be absent or None (a value means a feature the writer does not build).
_MUST_BE_NONE = {
    "act_kwargs",
    "norm_kwargs",
    "timm_model_name",
    "hf_model_name",
    "hf_tokenizer_name",
    "tokenizer_mode",
    "tokenizer_kwargs",
}
_BLOCK_TYPES = (None, "default")
_MODEL_KEYS = {
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "custom_text",
    "init_logit_scale",
    "init_logit_bias",
}


@dataclass(frozen=True)
class Transformer:
    prefix: str  # of the tower's tensors in the checkpoint: "visual.", "", "text."
    width: int
    heads: int
    layers: int
    quick_gelu: bool
    layer_scale: bool


@dataclass(frozen=True)
class ImageSpec:
    """What the image graph is built from; see :func:`image_spec`."""

    blocks: Transformer
    image_size: int
    patch_size: int
    pool: str  # "tok" or "avg"
    ln_pre: bool
    ln_after_pool: bool
    projection: bool


@dataclass(frozen=True)
class TextSpec:
    """What the text graphs are built from; see :func:`text_spec`."""

    blocks: Transformer
    context_length: int
    projection: str | None  # "matrix", "linear" (with bias) or None


def _known(cfg: dict[str, Any], keys: dict[str, Any]) -> bool:
    for key, value in cfg.items():
        if key not in keys:
            return False
        if key in _MUST_BE_NONE and value is not None:
            return False
        if key == "block_type" and value not in _BLOCK_TYPES:
            return False
        required = keys[key]
        if required is not None and key not in _MUST_BE_NONE and value != required:
            return False
    return True


def image_spec(cfg: dict[str, Any]) -> ImageSpec | None:
    """The image graph of an open_clip model config, or None where this module cannot
    write it (a timm or ResNet tower, attentional pooling, custom blocks, ...)."""
    vision = cfg.get("vision_cfg", {})
    if not set(cfg) <= _MODEL_KEYS or not _known(vision, _VISION_KEYS):
        return None
    layers, size = vision.get("layers", 12), vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            return None
        size = size[0]
    patch = vision.get("patch_size", 16)
    if not isinstance(layers, int) or not isinstance(patch, int) or size % patch:
        return None
    width = int(vision.get("width", 768))
    head_width = int(vision.get("head_width", 64))
    pool = vision.get("pool_type", "tok")
    if pool not in ("tok", "avg") or width % head_width:
        return None
    return ImageSpec(
        blocks=Transformer(
            prefix="visual.",
            width=width,
            heads=width // head_width,
            layers=layers,
            quick_gelu=bool(cfg.get("quick_gelu", False)),
            layer_scale=vision.get("ls_init_value") is not None,
        ),
        image_size=int(size),
        patch_size=patch,
        pool=pool,
        ln_pre=not vision.get("no_ln_pre", False),
        ln_after_pool=bool(vision.get("final_ln_after_pool", False)),
        projection=int(cfg["embed_dim"]) > 0,
    )


def text_spec(cfg: dict[str, Any]) -> TextSpec | None:
    """The text graphs of an open_clip CLIP text tower (causal, pooled at the end-of-text
    token, open_clip's own tokenizer), or None for any other tower."""
    text = cfg.get("text_cfg", {})
    if not set(cfg) <= _MODEL_KEYS or not _known(text, _TEXT_KEYS):
        return None
    width, heads = int(text.get("width", 512)), int(text.get("heads", 8))
    if width % heads:
        return None
    proj_type = text.get("proj_type", "linear")
    if proj_type not in ("linear", "none"):
        return None
    projection = None
    if proj_type == "linear" and int(cfg["embed_dim"]) > 0:
        projection = "linear" if text.get("proj_bias", False) else "matrix"
    return TextSpec(
        blocks=Transformer(
            prefix="text." if cfg.get("custom_text") else "",
            width=width,
            heads=heads,
            layers=int(text.get("layers", 12)),
            quick_gelu=bool(cfg.get("quick_gelu", False)),
            layer_scale=text.get("ls_init_value") is not None,
        ),
        context_length=int(text.get("context_length", 77)),
        projection=projection,
    )


def _block_tensors(t: Transformer) -> list[str]:
    names = []
    for i in range(t.layers):
        b = f"{t.prefix}transformer.resblocks.{i}."
        names += [
            f"{b}{part}"
            for part in (
                "ln_1.weight",
                "ln_1.bias",
                "attn.in_proj_weight",
                "attn.in_proj_bias",
                "attn.out_proj.weight",
                "attn.out_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            )
        ]
        if t.layer_scale:
            names += [f"{b}ls_1.gamma", f"{b}ls_2.gamma"]
    return names


def image_tensors(spec: ImageSpec) -> list[str]:
    p = spec.blocks.prefix
    names = [f"{p}conv1.weight", f"{p}class_embedding", f"{p}positional_embedding"]
    if spec.ln_pre:
        names += [f"{p}ln_pre.weight", f"{p}ln_pre.bias"]
    names += [*_block_tensors(spec.blocks), f"{p}ln_post.weight", f"{p}ln_post.bias"]
    return names + ([f"{p}proj"] if spec.projection else [])


def text_tensors(spec: TextSpec) -> list[str]:
    p = spec.blocks.prefix
    names = [f"{p}token_embedding.weight", f"{p}positional_embedding"]
    names += [*_block_tensors(spec.blocks), f"{p}ln_final.weight", f"{p}ln_final.bias"]
    if spec.projection == "matrix":
        names.append(f"{p}text_projection")
    elif spec.projection == "linear":
        names += [f"{p}text_projection.weight", f"{p}text_projection.bias"]
    return names


def fits(checkpoint: Checkpoint, names: Sequence[str], spec: ImageSpec | TextSpec) -> bool:
    """Whether the checkpoint holds every tensor of the graph, of the shapes it needs, and no
    other tensor of the tower (an unknown one would mean a layer the graph leaves out)."""
    if not checkpoint.floats(names):
        return False
    prefix = spec.blocks.prefix
    if prefix:
        ours = {k for k in checkpoint.header if k.startswith(prefix)}
    else:  # a CLIP model's text tower is its top level, next to "visual." and the scales
        ours = {k for k in checkpoint.header if not k.startswith("visual.") and "." in k}
        ours |= {k for k in ("positional_embedding", "text_projection") if k in checkpoint.header}
    if not ours <= set(names):
        return False
    t = spec.blocks
    w = t.width
    expected: dict[str, tuple[int, ...]] = {}
    for i in range(t.layers):
        b = f"{prefix}transformer.resblocks.{i}."
        hidden = checkpoint.shape(f"{b}mlp.c_fc.weight")[0]
        expected |= {
            f"{b}ln_1.weight": (w,),
            f"{b}attn.in_proj_weight": (3 * w, w),
            f"{b}attn.in_proj_bias": (3 * w,),
            f"{b}attn.out_proj.weight": (w, w),
            f"{b}ln_2.weight": (w,),
            f"{b}mlp.c_fc.weight": (hidden, w),
            f"{b}mlp.c_fc.bias": (hidden,),
            f"{b}mlp.c_proj.weight": (w, hidden),
            f"{b}mlp.c_proj.bias": (w,),
        }
    if isinstance(spec, ImageSpec):
        grid = spec.image_size // spec.patch_size
        expected[f"{prefix}conv1.weight"] = (w, 3, spec.patch_size, spec.patch_size)
        expected[f"{prefix}positional_embedding"] = (grid * grid + 1, w)
    else:
        expected[f"{prefix}positional_embedding"] = (spec.context_length, w)
    return all(checkpoint.shape(k) == shape for k, shape in expected.items())
