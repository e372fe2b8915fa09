"""Zero-shot tags: the vocabulary's concepts that a picture or video segment shows.

No caption model is involved. Each concept's prompts (``labels.py``) are encoded by the
store's own text tower once, averaged and normalised into one *label vector*, and cached
under the store (``<store>/tags/``, keyed by the model's fingerprint and the vocabulary's
digest). A concept is encoded in one language, the first of ``SCORING_ORDER`` that names it
(English for every shipped concept), and shown in each language under that language's
name. Encoding each language's prompts for its own tags was measured worse and costlier:
with the toy model's 49 concepts the Chinese top tag was 0.926/0.889 (precision/recall)
from Chinese prompts (four templates) against 0.938/0.898 from English ones (one), and with
the full vocabulary 0.786/0.323 against 0.914/0.532 (``python -m bench.tags
[--full-vocabulary]``). The shipped vocabulary's 32,764 prompts (four templates, both
languages) kept a first ``xsearch index`` of 6 pictures with the default profile (its
XLM-R text tower, random weights from ``bench/fakehub.py``) busy for more than 600 s on a
2-core CPU; with its 4,020 English prompts of one template the same run took 157 s.
A stored image vector is then scored against every label vector of a language, and the
labels whose *calibrated* score clears a threshold are its tags.

Calibration. A raw cosine says little on its own (its scale differs between models and
between labels), so it is made relative to the other labels. Two ways were measured on the
generated emoji scenes (``python -m bench.tags``, the bundled toy model; thresholds chosen
for the best micro-F1 on 490 1- and 2-object held-out scenes of seed 101, scored on 490 of
seed 202):

- *softmax*: the label's probability under a softmax over the whole vocabulary at the
  model's logit scale (``exp(logit_scale)`` from the checkpoint; 17.28 for the toy model);
- *margin*: the label's cosine minus the best cosine of a background set of contentless
  prompts ("a photo", "一张图片", ...).

==========  =========  =========  ======  =====
vocabulary  method     threshold  prec.   F1
==========  =========  =========  ======  =====
49 (toy's)  softmax    0.197      0.826   0.819
49 (toy's)  margin     0.205      0.573   0.615
3,184       softmax    0.066      0.298   0.330
3,184       margin     0.230      0.184   0.266
==========  =========  =========  ======  =====

Both languages score alike, as they share the label vectors. (Each language from its own
prompts, four templates, the Chinese rows were 0.802 and 0.578 at 49 concepts and 0.220
and 0.167 at 3,184.)

The softmax won every time, so it is the method, with one threshold of 0.2 for both
languages (the toy model's own vocabulary). The margin lets labels that are near
everything crowd in; the softmax makes them share their mass. The full vocabulary shows what
a model does with words it never learnt (the toy model's top tag for a dog often becomes
another concept of the vocabulary), which is why a profile names the
vocabulary parts it knows (``ModelProfile.tag_vocabulary``). Subtracting each label's mean
cosine over contentless backgrounds (a per-label prior) did not help the top tag either: en
0.663 → 0.650, zh 0.401 → 0.412 at half weight, and lower at full weight; that was measured
on the earlier vocabulary of 1,322 concepts and not re-run since.

Per video, the file's tags come from the mean of its frame vectors; each frame is tagged
too, and neighbouring frames with the same tag form one segment (its start, end and best
score), so a long video's beach and its city are both found.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .encoders.base import Vectors, l2_normalise
from .labels import LANGUAGES, Concept, Language, Vocabulary

__all__ = [
    "BACKGROUND_PROMPTS",
    "DEFAULT_CALIBRATION",
    "Calibration",
    "FrameVector",
    "LabelBank",
    "Tag",
    "Tagger",
    "label_banks",
    "logit_scale_of",
    "tagger_identity",
]

#: Prompts that name no concept: the reference of the "margin" calibration.
BACKGROUND_PROMPTS: dict[Language, tuple[str, ...]] = {
    "en": ("a photo", "a picture", "an image", "a photo of something", "a photo of an object"),
    "zh": ("照片", "一张照片", "图片", "一张图片", "一张东西的照片"),
}
# CLIP's initial logit scale, for checkpoints that do not hold one (or cannot be read).
_DEFAULT_LOGIT_SCALE = 100.0
_ENCODE_BATCH = 256
# Bumped when the scoring changes, so that stores are re-tagged (2: one scoring language).
_SCORING_VERSION = 2
#: The language whose prompts stand for a concept in every language's tags (the first that
#: names it). English prompts scored the Chinese tags better than Chinese prompts did
#: (module docstring), and one language's prompts halve the text-tower work of a model's
#: first run.
SCORING_ORDER: tuple[Language, ...] = ("en", "zh")

TextEncoder = Callable[[Sequence[str]], Vectors]


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """How raw cosines become tags."""

    # "softmax" (probability over the vocabulary) or "margin" (over the background set).
    method: Literal["softmax", "margin"] = "softmax"
    # The calibrated score a label needs to be a tag.
    threshold: float = 0.2
    # At most this many tags per file or frame, best first.
    max_tags: int = 5


DEFAULT_CALIBRATION = Calibration()


@dataclass(frozen=True)
class Tag:
    """One tag of a file (``start`` and ``end`` None) or of a video segment (seconds)."""

    key: str
    label: str
    lang: Language
    score: float
    start: float | None = None
    end: float | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "key": self.key,
            "label": self.label,
            "lang": self.lang,
            "score": round(self.score, 4),
        }
        if self.start is not None:
            doc["start"], doc["end"] = round(self.start, 3), round(self.end or self.start, 3)
        return doc


@dataclass(frozen=True)
class FrameVector:
    """A stored vector of a file: a whole image (times None) or one video frame."""

    vector: Vectors
    t_start: float | None = None
    t_end: float | None = None


@dataclass(frozen=True)
class LabelBank:
    """The label vectors of one language: row i is concept ``keys[i]``, shown as ``labels[i]``."""

    lang: Language
    keys: tuple[str, ...]
    labels: tuple[str, ...]
    matrix: Vectors
    background: Vectors = field(repr=False)


def logit_scale_of(checkpoint: Path | None) -> float:
    """``exp(logit_scale)`` of an open_clip safetensors checkpoint, else CLIP's 100."""
    if checkpoint is None or checkpoint.suffix != ".safetensors":
        return _DEFAULT_LOGIT_SCALE
    from .encoders.checkpoint import Checkpoint

    try:
        with Checkpoint(checkpoint) as ckpt:
            if not ckpt.floats(["logit_scale"]):
                return _DEFAULT_LOGIT_SCALE
            return float(np.exp(ckpt.read("logit_scale").reshape(-1)[0]))
    except (OSError, ValueError, KeyError):
        return _DEFAULT_LOGIT_SCALE


def _encode(encode: TextEncoder, texts: Sequence[str]) -> Vectors:
    chunks = [encode(texts[i : i + _ENCODE_BATCH]) for i in range(0, len(texts), _ENCODE_BATCH)]
    return np.vstack(chunks).astype(np.float32)


def _scoring_prompts(vocab: Vocabulary, concept: Concept) -> list[str]:
    """The prompts that stand for ``concept`` in every language: those of its first
    language in ``SCORING_ORDER`` that names it."""
    for lang in SCORING_ORDER:
        if concept.names(lang):
            return vocab.prompts(concept, lang)
    return []


def _mean_rows(vectors: Vectors, groups: Sequence[Sequence[str]]) -> Vectors:
    """One normalised row per group: the mean of its prompts' vectors."""
    rows, at = [], 0
    for group in groups:
        rows.append(vectors[at : at + len(group)].mean(axis=0))
        at += len(group)
    return l2_normalise(np.vstack(rows)) if rows else vectors


def _build_banks(vocab: Vocabulary, encode: TextEncoder) -> dict[Language, LabelBank]:
    """Each concept is encoded once, whatever the language it is shown in; a language's
    bank holds the concepts it names, under its own names."""
    concepts = [c for c in vocab.concepts if any(c.names(lang) for lang in LANGUAGES)]
    prompts = [_scoring_prompts(vocab, c) for c in concepts]
    flat = [p for group in prompts for p in group]
    matrix = _mean_rows(_encode(encode, flat), prompts) if flat else np.zeros((0, 0), np.float32)
    background = _encode(encode, BACKGROUND_PROMPTS[SCORING_ORDER[0]])
    banks = {}
    for lang in LANGUAGES:
        rows = [i for i, c in enumerate(concepts) if c.names(lang)]
        banks[lang] = LabelBank(
            lang,
            tuple(concepts[i].key for i in rows),
            tuple(concepts[i].names(lang)[0] for i in rows),
            matrix[rows] if rows else np.zeros((0, matrix.shape[1]), np.float32),
            background,
        )
    return banks


def label_banks(
    vocab: Vocabulary, encode: TextEncoder, *, cache_dir: Path | None, fingerprint: str
) -> dict[Language, LabelBank]:
    """The label vectors of every language, from ``cache_dir`` or encoded (then cached).

    ``encode`` is called only when the cache holds no vectors of this model (``fingerprint``)
    and vocabulary; the cache file is written atomically.
    """
    path = (
        cache_dir / f"labels-{fingerprint}-{vocab.digest}-s{_SCORING_VERSION}.npz"
        if cache_dir
        else None
    )
    if path is not None and path.exists():
        banks = _load(path)
        if banks is not None:
            return banks
    banks = _build_banks(vocab, encode)
    if path is not None:
        _save(path, banks)
        # Vectors of an earlier vocabulary (or model) of this store are not needed again.
        for stale in path.parent.glob("labels-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    return banks


def _save(path: Path, banks: dict[Language, LabelBank]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    names: dict[str, list[list[str]]] = {}
    for lang, bank in banks.items():
        arrays[f"{lang}_matrix"], arrays[f"{lang}_background"] = bank.matrix, bank.background
        names[lang] = [list(bank.keys), list(bank.labels)]
    arrays["names"] = np.frombuffer(json.dumps(names, ensure_ascii=False).encode(), np.uint8)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".labels-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> dict[Language, LabelBank] | None:
    """The cached banks, or None for a file that cannot be read (it is then made again)."""
    try:
        with np.load(path) as data:
            names = json.loads(bytes(data["names"]).decode())
            return {
                lang: LabelBank(
                    lang,
                    tuple(names[lang][0]),
                    tuple(names[lang][1]),
                    data[f"{lang}_matrix"].astype(np.float32),
                    data[f"{lang}_background"].astype(np.float32),
                )
                for lang in LANGUAGES
            }
    except (OSError, ValueError, KeyError):
        return None


def tagger_identity(fingerprint: str, vocab_digest: str, calibration: Calibration) -> str:
    """What stored tags depend on (model, vocabulary, calibration, scoring): a change of any
    of it re-tags a store."""
    c = calibration
    return json.dumps(
        [fingerprint, vocab_digest, c.method, c.threshold, c.max_tags, _SCORING_VERSION]
    )


class Tagger:
    """Scores vectors against the label banks and turns scores into tags."""

    def __init__(
        self,
        banks: dict[Language, LabelBank],
        *,
        logit_scale: float,
        calibration: Calibration = DEFAULT_CALIBRATION,
    ) -> None:
        self.banks = banks
        self.logit_scale = logit_scale
        self.calibration = calibration

    def scores(self, vectors: Vectors, lang: Language, method: str | None = None) -> Vectors:
        """Calibrated scores, one row per vector, one column per label of ``lang``."""
        bank = self.banks[lang]
        cosines = np.asarray(vectors, np.float32).reshape(-1, bank.matrix.shape[1]) @ bank.matrix.T
        if (method or self.calibration.method) == "softmax":
            logits = cosines * np.float32(self.logit_scale)
            logits -= logits.max(axis=1, keepdims=True)
            weights = np.exp(logits)
            out: Vectors = weights / weights.sum(axis=1, keepdims=True)
            return out
        reference = (np.asarray(vectors, np.float32) @ bank.background.T).max(axis=1)
        margin: Vectors = cosines - reference[:, None]
        return margin

    def top(self, vectors: Vectors, lang: Language) -> list[str]:
        """The key of the best label of each vector (whatever its score)."""
        best = self.scores(vectors, lang).argmax(axis=1)
        return [self.banks[lang].keys[int(i)] for i in best]

    def tags_of(self, vectors: Vectors, lang: Language) -> list[list[Tag]]:
        """The tags of each vector in ``lang``, best first."""
        bank, c = self.banks[lang], self.calibration
        out: list[list[Tag]] = []
        for row in self.scores(vectors, lang):
            order = np.argsort(-row, kind="stable")[: c.max_tags]
            out.append(
                [
                    Tag(bank.keys[int(i)], bank.labels[int(i)], lang, float(row[int(i)]))
                    for i in order
                    if row[int(i)] >= c.threshold
                ]
            )
        return out

    def tag_file(self, frames: Sequence[FrameVector]) -> list[Tag]:
        """Tags of one stored file, both languages: the whole file, then video segments."""
        if not frames:
            return []
        matrix = np.vstack([f.vector for f in frames]).astype(np.float32)
        whole = l2_normalise(matrix.mean(axis=0, keepdims=True))
        out: list[Tag] = []
        for lang in LANGUAGES:
            out += self.tags_of(whole, lang)[0]
            if len(frames) > 1 or frames[0].t_start is not None:
                out += _segments(frames, self.tags_of(matrix, lang))
        return out


def _segments(frames: Sequence[FrameVector], per_frame: list[list[Tag]]) -> list[Tag]:
    """Runs of neighbouring frames that share a tag, as one tag each with its time range."""
    out: list[Tag] = []
    open_runs: dict[str, Tag] = {}
    for frame, tags in zip(frames, per_frame, strict=True):
        start = frame.t_start or 0.0
        end = frame.t_end if frame.t_end is not None else start
        here = {t.key: t for t in tags}
        for key in list(open_runs):
            if key not in here:
                out.append(open_runs.pop(key))
        for key, tag in here.items():
            run = open_runs.get(key)
            if run is None:
                open_runs[key] = Tag(tag.key, tag.label, tag.lang, tag.score, start, end)
            else:
                open_runs[key] = Tag(
                    run.key, run.label, run.lang, max(run.score, tag.score), run.start, end
                )
    out += open_runs.values()
    out.sort(key=lambda t: (t.start or 0.0, -t.score))
    return out
