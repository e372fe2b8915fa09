"""Measuring the tags on the generated emoji scenes: per-class precision and recall of the
top tag, per language, and the choice between the two calibrations of ``tags.py``.

The truth of each picture is the set of emoji classes drawn in it (``synth``); a tag whose
concept is not drawn (another emoji class, or any of the other 1,273 concepts) is wrong.
``bench/tags.py`` prints and records the figures; ``tests/test_tags.py`` holds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import synth
from .encoders.base import Encoder, Vectors
from .labels import LANGUAGES, Language
from .tags import Calibration, Tagger, label_banks, logit_scale_of

if TYPE_CHECKING:
    from .encoders.torch_backend.openclip import OpenClipEncoder

__all__ = [
    "ClassFigures",
    "Scenes",
    "best_threshold",
    "calibration_table",
    "embed_scenes",
    "micro_f1",
    "top_tag_figures",
    "toy_tagger",
]

_METHODS = ("softmax", "margin")
#: The seed of the pictures behind the README's per-class table.
TOP_SEED = 303


@dataclass(frozen=True)
class Scenes:
    """Generated pictures' vectors and the class keys each one shows."""

    vectors: Vectors
    truth: tuple[frozenset[str], ...]


@dataclass(frozen=True)
class ClassFigures:
    """How the top tag does for one class: precision over the pictures it tops, recall over
    the pictures of the class."""

    key: str
    precision: float
    recall: float
    support: int


def embed_scenes(
    encoder: Encoder, *, per_class: int, seed: int, two_object_prob: float = 0.0
) -> Scenes:
    """``per_class`` held-out pictures of every class (a second class with the given chance),
    encoded by ``encoder``; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    classes = synth.CLASSES
    vectors: list[Vectors] = []
    truth: list[frozenset[str]] = []
    batch: list[object] = []
    for _ in range(per_class):
        for cls in classes:
            scene = [cls]
            if rng.random() < two_object_prob:
                others = [c for c in classes if c.key != cls.key]
                scene.append(others[int(rng.integers(0, len(others)))])
            picture = synth.render_scene(rng, scene, 224, split="heldout")
            batch.append(encoder.preprocess(picture))
            truth.append(frozenset(c.key for c in scene))
            if len(batch) == 64:
                vectors.append(_encode(encoder, batch))
                batch = []
    if batch:
        vectors.append(_encode(encoder, batch))
    return Scenes(np.vstack(vectors), tuple(truth))


def _encode(encoder: Encoder, batch: Sequence[object]) -> Vectors:
    import torch

    return encoder.encode_images(torch.stack(list(batch)))  # type: ignore[arg-type]


def top_tag_figures(tagger: Tagger, scenes: Scenes, lang: Language) -> list[ClassFigures]:
    """Per emoji class: precision and recall of the top tag (single-object scenes)."""
    top = tagger.top(scenes.vectors, lang)
    out = []
    for cls in synth.CLASSES:
        shows = [cls.key in t for t in scenes.truth]
        tops = [k == cls.key for k in top]
        hits = sum(s and t for s, t in zip(shows, tops, strict=True))
        out.append(
            ClassFigures(
                cls.key,
                precision=hits / sum(tops) if any(tops) else 0.0,
                recall=hits / sum(shows) if any(shows) else 0.0,
                support=sum(shows),
            )
        )
    return out


def micro_f1(
    scores: Vectors, keys: Sequence[str], truth: Sequence[frozenset[str]], threshold: float, k: int
) -> tuple[float, float, float]:
    """(precision, recall, F1) of "up to ``k`` labels scoring >= threshold" as tags."""
    true_pos = predicted = 0
    for row, shown in zip(scores, truth, strict=True):
        best = np.argsort(-row, kind="stable")[:k]
        picked = [keys[int(i)] for i in best if row[int(i)] >= threshold]
        predicted += len(picked)
        true_pos += sum(p in shown for p in picked)
    relevant = sum(len(t) for t in truth)
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / relevant if relevant else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_threshold(
    scores: Vectors, keys: Sequence[str], truth: Sequence[frozenset[str]], k: int
) -> float:
    """The threshold with the best micro-F1, searched over the scores' own quantiles."""
    tops = np.sort(scores, axis=1)[:, -k:].ravel()
    candidates = np.unique(np.quantile(tops, np.linspace(0.0, 1.0, 201)))
    f1s = [micro_f1(scores, keys, truth, float(t), k)[2] for t in candidates]
    return float(candidates[int(np.argmax(f1s))])


def calibration_table(
    tagger: Tagger, calibrate: Scenes, test: Scenes
) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and language: the threshold picked on ``calibrate`` and its precision,
    recall and F1 on ``test``."""
    k = tagger.calibration.max_tags
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in _METHODS:
        table[method] = {}
        for lang in LANGUAGES:
            keys = tagger.banks[lang].keys
            threshold = best_threshold(
                tagger.scores(calibrate.vectors, lang, method), keys, calibrate.truth, k
            )
            p, r, f1 = micro_f1(
                tagger.scores(test.vectors, lang, method), keys, test.truth, threshold, k
            )
            table[method][lang] = {"threshold": threshold, "precision": p, "recall": r, "f1": f1}
    return table


def with_calibration(tagger: Tagger, calibration: Calibration) -> Tagger:
    """The same banks and logit scale, another calibration."""
    return Tagger(tagger.banks, logit_scale=tagger.logit_scale, calibration=calibration)


def toy_tagger(*, full: bool = False) -> tuple[OpenClipEncoder, Tagger]:
    """The bundled toy model (torch, fp32) and its tagger, with the vocabulary its profile
    names (the emoji concepts) or, ``full``, the whole shipped vocabulary."""
    from .encoders.profiles import get_profile
    from .encoders.torch_backend.openclip import OpenClipEncoder
    from .labels import shipped_vocabulary

    profile = get_profile("toy-bilingual")
    encoder = OpenClipEncoder(profile, device="cpu", precision="fp32")
    vocab = shipped_vocabulary(() if full else profile.tag_vocabulary)
    banks = label_banks(vocab, encoder.encode_texts, cache_dir=None, fingerprint="")
    return encoder, Tagger(banks, logit_scale=logit_scale_of(profile.weights_file))
