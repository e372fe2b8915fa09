"""What every int8 export is measured on, and the measure: agreement with fp32.

The probe pictures and texts are xsearch's own generated scenes and their class names and
captions (``synth``): varied colours, textures and objects, the same on every machine, so
no calibration or test data is downloaded. :func:`agreement` compares the int8 vectors of
the probes with fp32 ones (cosines, and how much of each probe's nearest-neighbour list
survives); ``export_records.Agreement`` holds the result and the gate it must pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .export_records import Agreement
from .preprocess import ImagePreprocess

__all__ = ["NOT_MEASURED", "PROBE_PICTURES", "agreement", "probe_pixels", "probe_texts", "worst"]

PROBE_PICTURES = 48
_PROBE_SEED = 20261130
_NEIGHBOURS = 10
#: The agreement of a draft record, before its graphs are measured.
NOT_MEASURED = Agreement(pictures=0, cosine_min=0.0, cosine_mean=0.0, neighbours_kept=0.0)


def probe_pixels(preprocess: ImagePreprocess, n: int) -> npt.NDArray[np.float32]:
    """``n`` generated pictures, preprocessed for the model; the same on every machine."""
    from ... import synth

    rng = np.random.default_rng(_PROBE_SEED)
    pictures = [
        synth.render_picture(rng, synth.CLASSES, preprocess.size, split="heldout")[0]
        for _ in range(n)
    ]
    return np.stack([preprocess(p) for p in pictures])


def probe_texts() -> list[str]:
    """Every class name of the generated pictures in English and Chinese, and captions of a
    few words, of 20 to 60 tokens (beyond the shortest padded length), and beyond the
    context (truncated)."""
    from ... import synth

    texts = [synth.class_query(c, lang) for c in synth.CLASSES for lang in synth.LANGUAGES]
    some = synth.CLASSES[:: max(1, len(synth.CLASSES) // 8)]
    texts += [" ".join(synth.captions(c, "en")[:3]) for c in some]
    texts += [", ".join(synth.captions(c, "en")[2:9]) for c in some]
    texts += ["，".join(synth.captions(c, "zh")[1:6]) for c in some]
    texts.append(" ".join(synth.captions(some[0], "en")))
    return texts


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Cosines per picture, and how much of each picture's nearest-neighbour list survives."""
    ref, cand = _unit(reference.astype(np.float64)), _unit(candidate.astype(np.float64))
    cosines = (ref * cand).sum(axis=1)
    k = min(_NEIGHBOURS, len(ref) - 1)
    kept = 1.0
    if k > 0:
        kept = float(
            np.mean([len(a & b) / k for a, b in zip(_knn(ref, k), _knn(cand, k), strict=True)])
        )
    return Agreement(
        pictures=len(ref),
        cosine_min=float(cosines.min()),
        cosine_mean=float(cosines.mean()),
        neighbours_kept=kept,
    )


def worst(measured: Sequence[Agreement], texts: int) -> Agreement:
    """The agreement of the worst of several graphs, each measured on what it holds."""
    return Agreement(
        pictures=texts,
        cosine_min=min(m.cosine_min for m in measured),
        cosine_mean=min(m.cosine_mean for m in measured),
        neighbours_kept=min(m.neighbours_kept for m in measured),
    )


def _knn(vectors: np.ndarray, k: int) -> list[set[int]]:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in scores]
