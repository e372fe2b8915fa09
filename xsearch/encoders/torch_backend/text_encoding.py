"""Text encoding over the real tokens only, without the trailing padding.

A query is a few tokens, but open_clip's CLIP text tower runs all ``context_length``
positions. :func:`encode_text_trimmed` drops the padding where that gives the same vectors,
for :class:`~xsearch.encoders.torch_backend.openclip.OpenClipEncoder` and for the module the
exporter traces.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["encode_text_trimmed", "trims_safely"]


def _trailing_padding_trimmed(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the columns after the longest text: a query is a few tokens, not 77."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return tokens[:, :length]


def trims_safely(model: Any) -> bool:
    """Whether a CLIP text tower gives the same answer without its trailing padding."""
    return model.attn_mask is not None and model.text_pool_type in ("argmax", "eos")


def encode_text_trimmed(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` over the real tokens only, where that gives the same answer.

    open_clip's CLIP text tower always runs all ``context_length`` positions, 77 for most
    models, and for a query of three tokens nearly all of that is padding. With a causal
    attention mask no position sees a later one, so the pooled end-of-text position is the
    same whether the padding is there or not; with a Hugging Face tower the padding is masked
    out. Other towers (bidirectional, last-token pooling) get the full width.
    """
    import open_clip

    if isinstance(model, open_clip.CLIP):
        if not trims_safely(model):
            return model.encode_text(tokens)  # type: ignore[no-any-return]
        tokens = _trailing_padding_trimmed(tokens, pad_id=0)
        n = tokens.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype)
        x = x + model.positional_embedding[:n].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
        x = model.ln_final(x)
        x = open_clip.transformer.text_global_pool(
            x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
        )
        projection = model.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x  # type: ignore[no-any-return]
    config = getattr(getattr(model, "text", None), "config", None)
    pad_id = getattr(config, "pad_token_id", None)
    if isinstance(pad_id, int):
        tokens = _trailing_padding_trimmed(tokens, pad_id)
    return model.encode_text(tokens)  # type: ignore[no-any-return]
