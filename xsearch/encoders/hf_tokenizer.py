"""A Hugging Face text tower's tokenizer without torch or transformers.

open_clip's ``HFTokenizer`` wraps a transformers tokenizer, and both import torch; a cold
query through them spends seconds on imports before it tokenizes a word. The tokenizer
that transformers builds is a ``tokenizers`` one underneath (its ``backend_tokenizer``):
saved to ``tokenizer.json`` next to an int8 text export, it is loaded here with the
``tokenizers`` library alone. The rest of ``HFTokenizer`` is repeated here: its text
cleaning (ftfy, HTML unescaping, whitespace; "canonicalize" also drops punctuation and
lower-cases), truncation to the context with the model's special tokens kept, and padding
with the model's pad id. The copy is used only where it gave exactly open_clip's token ids
on every probe text (``hf_text_export.py`` checks that before saving it).
"""

from __future__ import annotations

import html
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["CLEANERS", "HFFileTokenizer"]


def _basic(text: str) -> str:
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    return " ".join(_basic(text).split()).strip()


def _lower(text: str) -> str:
    return _whitespace(text).lower()


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _canonicalize(text: str) -> str:
    text = _basic(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


#: open_clip's ``get_clean_fn`` names and what each does.
CLEANERS: dict[str, Callable[[str], str]] = {
    "whitespace": _whitespace,
    "lower": _lower,
    "canonicalize": _canonicalize,
}


class HFFileTokenizer:
    """Token ids as open_clip's ``HFTokenizer`` gives them: (n, context) int64, padded
    with ``pad_id``, from a saved ``tokenizer.json``."""

    def __init__(self, path: Path, context_length: int, pad_id: int, clean: str) -> None:
        from tokenizers import Tokenizer

        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r} for {path}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        # Counts the special tokens the post-processor adds, as transformers' truncation does.
        self._tokenizer.enable_truncation(max_length=context_length)
        self._clean = CLEANERS[clean]
        self._context = context_length
        self._pad = pad_id

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        out = np.full((len(texts), self._context), self._pad, dtype=np.int64)
        encoded = self._tokenizer.encode_batch([self._clean(t) for t in texts])
        for row, enc in zip(out, encoded, strict=True):
            ids = enc.ids[: self._context]
            row[: len(ids)] = ids
        return out
