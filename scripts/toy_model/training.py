"""The training loop: a multi-positive contrastive loss, AdamW and a cosine schedule.

Many pictures in a batch share a class, so every same-class picture and caption pair is a
positive (:func:`multi_positive_loss`). :func:`train` trains the model in place and returns
the logged loss history.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from .data import CaptionBank, augment
from .recipe import Recipe


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss where every same-class pair is a positive.

    ``logits`` is (pictures, captions); ``positives`` is a {0, 1} matrix of the same
    shape with at least one positive per row and per column (each picture's own
    caption). Targets are the positives normalised per row (picture→caption) and
    per column (caption→picture).
    """
    to_text = positives / positives.sum(dim=1, keepdim=True)
    to_image = positives / positives.sum(dim=0, keepdim=True)
    loss_i = -(to_text * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_t = -(to_image * logits.log_softmax(dim=0)).sum(dim=0).mean()
    return (loss_i + loss_t) / 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No decay for gains, biases, embeddings and the logit scale, as in CLIP."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or "embedding" in name or "logit_scale" in name or "token" in name
        (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    model: Any,
    pool: tuple[torch.Tensor, torch.Tensor],
    bank: CaptionBank,
    recipe: Recipe,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns the logged loss history."""
    images, labels = pool
    rng = np.random.default_rng(recipe.seed + 1)
    optimizer = torch.optim.AdamW(
        param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6
    )
    model.train()
    history: list[dict[str, float]] = []
    started = time.monotonic()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        pick = torch.from_numpy(rng.choice(len(images), size=recipe.batch_size, replace=False))
        tokens, caption_classes = bank.sample(rng, labels[pick])
        pixels = augment(images[pick], rng, recipe.max_shift)
        positives = labels[pick][:, caption_classes].float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            image_features = model.encode_image(pixels, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
        logits = model.logit_scale.exp() * image_features.float() @ text_features.float().T
        loss = multi_positive_loss(logits, positives)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == recipe.steps - 1:
            hit = positives[torch.arange(len(pick)), logits.argmax(dim=1)].mean().item()
            entry = {"step": step, "loss": round(loss.item(), 4), "batch_i2t_acc": round(hit, 4)}
            history.append(entry)
            elapsed = time.monotonic() - started
            print(
                f"step {step:5d}/{recipe.steps}  loss {entry['loss']:.4f}  "
                f"i2t acc {hit:.3f}  scale {model.logit_scale.exp().item():.1f}  {elapsed:6.0f}s",
                flush=True,
            )
    model.eval()
    return history
