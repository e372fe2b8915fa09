"""open_clip's CLIP tokenizer rebuilt on Hugging Face ``tokenizers``, so queries can be
tokenized without importing torch (which open_clip's tokenizer module imports).

The rebuilt tokenizer is written next to an int8 text export and used only if it gives
exactly open_clip's token ids on every probe text (``onnx_export.py`` checks that before
saving it). The steps are open_clip's ``SimpleTokenizer``: ftfy and HTML unescaping,
whitespace folded, lower case; split by CLIP's regular expression; byte-level BPE with
``</w>`` closing each word; start and end tokens; truncated to the context (the last token
then becomes the end token) and padded with zeros.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["ClipTokenizer", "build_clip_tokenizer"]

_START, _END = "<start_of_text>", "<end_of_text>"
# CLIP's split pattern (open_clip/tokenizer.py), applied to lower-cased text.
_PATTERN = (
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
# open_clip reads the merges up to this line of its vocabulary file.
_MERGES = 49152 - 256 - 2


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (as in CLIP)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build_clip_tokenizer(bpe_path: Path, target: Path) -> None:
    """Write a ``tokenizers`` JSON equivalent to ``SimpleTokenizer(bpe_path)`` to ``target``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1 : _MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += [_START, _END]
    tokenizer = Tokenizer(
        models.BPE(
            vocab={token: i for i, token in enumerate(vocab)},
            merges=merges,  # type: ignore[arg-type]
            end_of_word_suffix="</w>",
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # open_clip maps these two strings to their ids even inside user text.
    tokenizer.add_special_tokens([_START, _END])
    tokenizer.save(str(target))


class ClipTokenizer:
    """Token ids as open_clip gives them: (n, context) int64, zero-padded."""

    def __init__(self, path: Path, context_length: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._context = context_length
        start, end = self._tokenizer.token_to_id(_START), self._tokenizer.token_to_id(_END)
        if start is None or end is None:
            raise ValueError(f"{path} is not a CLIP tokenizer (no start or end token)")
        self._start, self._end = start, end

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        out = np.zeros((len(texts), self._context), dtype=np.int64)
        encoded = self._tokenizer.encode_batch([_clean(t) for t in texts], add_special_tokens=False)
        for row, enc in zip(out, encoded, strict=True):
            ids = [self._start, *enc.ids, self._end][: self._context]
            ids[-1] = self._end
            row[: len(ids)] = ids
        return out


def _clean(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()
