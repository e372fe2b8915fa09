"""The two towers of an open_clip model, handled one at a time.

An indexing run never needs the text tower and a text query never needs the image tower,
so :class:`~xsearch.encoders.torch_backend.openclip.OpenClipEncoder` builds a model, drops
the tower it does not want and fills the other with its weights. This module knows which
attributes of open_clip's models make up each tower, how to drop or hand one over, and how
to read one tower's tensors from a safetensors checkpoint without reading the other's.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import read_bytes, read_header

__all__ = [
    "IMAGE",
    "TEXT",
    "adopt_tower",
    "drop_tower",
    "load_tower_weights",
    "read_tensor",
    "readable",
]


#: The two towers, loaded one at a time: indexing never needs the text tower, a query
#: by text never needs the image tower.
IMAGE, TEXT = "image", "text"

# Attribute names of each tower on open_clip's ``CLIP`` (``CustomTextCLIP`` keeps its text
# tower in ``text``). The rest of the model is two scalars (logit scale and bias).
_CLIP_TEXT_PARTS = (
    "transformer",
    "token_embedding",
    "positional_embedding",
    "ln_final",
    "text_projection",
    "attn_mask",
)


def _tower_parts(model: torch.nn.Module, tower: str) -> tuple[str, ...]:
    if tower == IMAGE:
        return ("visual",)
    if isinstance(getattr(model, "text", None), torch.nn.Module):
        return ("text",)
    return _CLIP_TEXT_PARTS


def drop_tower(model: torch.nn.Module, tower: str) -> None:
    """Free a tower's weights; the model keeps working for the other one."""
    for name in _tower_parts(model, tower):
        if hasattr(model, name):
            setattr(model, name, None)


def adopt_tower(model: torch.nn.Module, donor: torch.nn.Module, tower: str) -> None:
    for name in _tower_parts(donor, tower):
        if hasattr(donor, name):
            setattr(model, name, getattr(donor, name))


def _belongs_to(key: str, parts: tuple[str, ...]) -> bool:
    return key.split(".", 1)[0] in parts


def load_tower_weights(model: torch.nn.Module, path: Path, tower: str) -> bool:
    """Copy one tower's weights from a safetensors checkpoint, reading only that tower.

    Returns False when the file is not open_clip's own safetensors layout; the caller then
    takes open_clip's general loader (conversions, nested state dicts, other formats).
    """
    if path.suffix != ".safetensors":
        return False
    parts = _tower_parts(model, tower)
    with path.open("rb") as checkpoint:
        header = read_header(checkpoint)
        wanted = {k: e for k, e in header.items() if _belongs_to(k, parts) or "." not in k}
        if not readable(wanted.values()):
            return False
        state = {k: read_tensor(checkpoint, e) for k, e in wanted.items()}
    expected = {k for k in model.state_dict() if _belongs_to(k, parts)}
    if not expected or not expected <= state.keys():
        return False
    missing, _ = model.load_state_dict(state, strict=False)
    return not (set(missing) & expected)


# safetensors dtype names (https://github.com/huggingface/safetensors#format).
_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def readable(entries: Iterable[dict[str, Any]]) -> bool:
    """Whether every tensor is of a dtype :func:`read_tensor` knows."""
    return all(entry["dtype"] in _SAFETENSORS_DTYPES for entry in entries)


def read_tensor(file: io.BufferedReader, entry: dict[str, Any]) -> torch.Tensor:
    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
    buffer = read_bytes(file, entry)
    if not buffer:
        return torch.empty(entry["shape"], dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"])
