"""SentencePiece-style tokenizers of a real model's kind and size, made offline.

The multilingual profiles tokenize with SentencePiece Unigram vocabularies of a quarter of
a million pieces (XLM-R: 250,002 with its four fairseq specials and ``<mask>``; mT5's, used
by SigLIP i18n: 250,000; NLLB: 256,204 with its 202 language codes). The real files come
from the hub, which this machine cannot reach. The ones written here are built with the
``tokenizers`` library in the same layout (Unigram model, Metaspace pre-tokenizer, the
model's special tokens and template), so that transformers' tokenizer classes load them and
a query costs what it costs with the real file.

The pieces are synthesised, deterministically: every character of the common scripts
(Latin, Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai, Hangul, kana, CJK ideographs,
emoji), each also with the word-start mark ``▁``, a few hundred whole words of the
languages the tests query in, then Latin syllables up to the vocabulary size. Scores favour
longer pieces, so "a cat" becomes ``▁a ▁cat`` and "猫です" ``▁猫 です``, as with real text:
nothing in those scripts falls to ``<unk>``. Only the vectors are meaningless.

Where the real tokenizer normalises with SentencePiece's precompiled ``nmt_nfkc`` map
(not available offline), this one uses NFKC, which that map is built from.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["nllb_tokenizer", "synthesised_pieces", "t5_tokenizer", "xlmr_tokenizer"]

XLMR_SIZE = 250_002
MT5_SIZE = 250_000
NLLB_SPM_SIZE = 256_000  # SentencePiece pieces; fairseq specials and language codes follow

# Whole words, so that the queries of the tests and benchmarks are words, not letters.
_WORD_LIST = (
    "a an the of and in on with photo picture image cat cats dog dogs red blue green car "
    "tree house flower sun beach mountain city street night snow water bird fish apple "
    "banana people man woman child playing sitting running sleeping white black small big "
    "Katze Hund Foto Bild ein eine der die das und mit im rot blau Haus Baum Auto Blume "
    "chat chien photo une un le la les rouge maison arbre voiture fleur gato perro foto "
    "una el casa árbol coche кошка собака фото дом красный قطة كلب صورة منزل شجرة سيارة "
    "猫 狗 照片 图片 一只 红色 苹果 汽车 房子 树 花 海滩 山 城市 夜晚 雪 鸟 鱼 "
    "です ます ねこ いぬ 写真 の は が を に 猫の 犬の 고양이 개 사진 बिल्ली कुत्ता แมว สุนัข "
    "🐱 🐶 🐈 🐕 🌸 🍎 🚗 🏠 🌳 ❤️ 😀"
)
_WORDS = tuple(_WORD_LIST.split())

# (first, last) code points of the scripts whose characters all get a piece.
_SCRIPTS = (
    (0x21, 0x7E),  # ASCII printable
    (0xA1, 0x24F),  # Latin-1 supplement, Latin extended A and B
    (0x370, 0x3FF),  # Greek
    (0x400, 0x4FF),  # Cyrillic
    (0x590, 0x5FF),  # Hebrew
    (0x600, 0x6FF),  # Arabic
    (0x900, 0x97F),  # Devanagari
    (0xE00, 0xE7F),  # Thai
    (0x1100, 0x11FF),  # Hangul jamo
    (0x2000, 0x206F),  # general punctuation
    (0x2190, 0x21FF),  # arrows
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x3000, 0x30FF),  # CJK punctuation, hiragana, katakana
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7A3),  # Hangul syllables
    (0xFE00, 0xFE0F),  # variation selectors (emoji presentation)
    (0xFF01, 0xFF5E),  # full-width forms
    (0x1F300, 0x1FAFF),  # emoji
)
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z")
_ONSETS += ("br", "ch", "cl", "dr", "fl", "gr", "kr", "pl", "pr", "sch", "sh", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "y", "ae", "ai", "au", "ei", "ie", "oo", "ou", "ä", "ö", "ü")
_CODAS = ("", "n", "r", "s", "t", "l", "m", "ng", "nd", "st", "ch", "ck", "rt", "tz", "x")


def _characters() -> Iterator[str]:
    for first, last in _SCRIPTS:
        for code in range(first, last + 1):
            yield chr(code)


def _syllables() -> Iterator[str]:
    for onset, vowel, coda in itertools.product(_ONSETS, _VOWELS, _CODAS):
        yield onset + vowel + coda


def synthesised_pieces(n: int) -> list[tuple[str, float]]:
    """``n`` distinct (piece, log-probability) pairs, the same on every machine.

    A longer piece scores little below a single character, so the Viterbi segmentation
    takes whole words and syllables where the vocabulary has them.
    """
    pieces: dict[str, float] = {"▁": -3.0}
    for rank, word in enumerate(_WORDS):
        pieces.setdefault("▁" + word, -6.0 - rank * 1e-3)
        pieces.setdefault(word, -6.5 - rank * 1e-3)
    for char in _characters():
        pieces.setdefault(char, -12.0)
        pieces.setdefault("▁" + char, -11.5)
    # Syllables, alone and in pairs, lower and capitalised, until the vocabulary is full.
    syllables = list(_syllables())
    generated = itertools.chain(
        syllables,
        itertools.starmap(lambda a, b: a + b, itertools.product(syllables, repeat=2)),
    )
    for rank, piece in enumerate(generated):
        if len(pieces) >= n:
            break
        score = -9.0 - min(rank, 10**6) * 1e-6
        for form in ("▁" + piece, piece, "▁" + piece.capitalize()):
            if len(pieces) < n:
                pieces.setdefault(form, score)
    if len(pieces) < n:
        raise ValueError(f"only {len(pieces)} pieces can be synthesised, not {n}")
    return list(pieces.items())[:n]


def _unigram(
    vocab: Sequence[tuple[str, float]], unk_id: int, specials: Sequence[str]
) -> dict[str, object]:
    """The skeleton of a SentencePiece Unigram ``tokenizer.json``, as transformers' converter
    writes it (normaliser, Metaspace, special tokens); the caller adds the post-processor."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.Unigram(list(vocab), unk_id=unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(  # type: ignore[assignment]
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(  # type: ignore[assignment]
        replacement="▁", prepend_scheme="always"
    )
    tokenizer.decoder = decoders.Metaspace(  # type: ignore[assignment]
        replacement="▁", prepend_scheme="always"
    )
    tokenizer.add_special_tokens(list(specials))
    doc: dict[str, object] = json.loads(tokenizer.to_str())
    return doc


def _template(single: list[str], pair: list[str], ids: dict[str, int]) -> dict[str, object]:
    from tokenizers import processors

    processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=list(ids.items())
    )
    doc: dict[str, object] = json.loads(processor.__getstate__())
    return doc


def _write(folder: Path, doc: dict[str, object], config: dict[str, object]) -> None:
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, ensure_ascii=False)
    Tokenizer.from_str(text)  # the file must load: fail here, not in the first query
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def xlmr_tokenizer(folder: Path, size: int = XLMR_SIZE) -> None:
    """XLM-RoBERTa's tokenizer: ``<s> <pad> </s> <unk>``, SentencePiece pieces, ``<mask>``
    last; texts become ``<s> … </s>``."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = [(s, 0.0) for s in specials] + synthesised_pieces(size - 5) + [("<mask>", 0.0)]
    doc = _unigram(vocab, unk_id=3, specials=[*specials, "<mask>"])
    doc["post_processor"] = _template(
        ["<s>", "$A", "</s>"], ["<s>", "$A", "</s>", "</s>", "$B", "</s>"], {"<s>": 0, "</s>": 2}
    )
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}
    _write(folder, doc, config)


def t5_tokenizer(folder: Path, size: int = MT5_SIZE) -> None:
    """mT5's tokenizer (SigLIP i18n's): ``<pad> </s> <unk>`` first; texts end in ``</s>``."""
    specials = ["<pad>", "</s>", "<unk>"]
    vocab = [(s, 0.0) for s in specials] + synthesised_pieces(size - 3)
    doc = _unigram(vocab, unk_id=2, specials=specials)
    doc["post_processor"] = _template(["$A", "</s>"], ["$A", "</s>", "$B", "</s>"], {"</s>": 1})
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 64, "extra_ids": 0}
    _write(folder, doc, config)


# NLLB-200's language codes, of which the tests need a few; the rest are numbered stand-ins,
# so that the ids of ``<mask>`` and the vocabulary size are the real ones.
_NLLB_LANGUAGES = ("eng_Latn", "zho_Hans", "jpn_Jpan", "deu_Latn", "arb_Arab", "fra_Latn")
NLLB_LANGUAGE_CODES = 202


def _bpe_merges(pieces: Sequence[str], n: int) -> tuple[list[str], list[tuple[str, str]]]:
    """``n`` BPE tokens and the merges that build them: every character first, then each
    longer piece with the prefixes it is merged from, one character at a time."""
    tokens = [p for p in pieces if len(p) == 1 or p == "▁"]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    for piece in pieces:
        for end in range(2, len(piece) + 1):
            if len(tokens) >= n:
                return tokens, merges
            prefix = piece[:end]
            if prefix not in known and piece[: end - 1] in known and piece[end - 1] in known:
                known.add(prefix)
                tokens.append(prefix)
                merges.append((piece[: end - 1], piece[end - 1]))
    raise ValueError(f"only {len(tokens)} BPE tokens can be synthesised, not {n}")


def nllb_tokenizer(folder: Path) -> None:
    """NLLB-200's tokenizer: fairseq specials, SentencePiece BPE tokens, 202 language
    codes, ``<mask>``; texts become ``eng_Latn … </s>`` (the source-language prefix)."""
    from tokenizers import Tokenizer, models

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    codes = list(_NLLB_LANGUAGES) + [
        f"l{i:03d}_Xxxx" for i in range(NLLB_LANGUAGE_CODES - len(_NLLB_LANGUAGES))
    ]
    # SentencePiece's own three specials are not among its pieces.
    words = [p for p, _ in synthesised_pieces(NLLB_SPM_SIZE)]
    pieces, merges = _bpe_merges(words, NLLB_SPM_SIZE - 3)
    vocab = [*specials, *pieces, *codes, "<mask>"]
    doc = _unigram([(t, 0.0) for t in vocab], unk_id=3, specials=[*specials, *codes, "<mask>"])
    bpe = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(vocab)},
            merges=merges,
            unk_token="<unk>",
            fuse_unk=True,
        )
    )
    doc["model"] = json.loads(bpe.to_str())["model"]
    eng = len(specials) + len(pieces)
    doc["post_processor"] = _template(
        ["eng_Latn", "$A", "</s>"], ["eng_Latn", "$A", "$B", "</s>"], {"eng_Latn": eng, "</s>": 2}
    )
    config = {
        "tokenizer_class": "NllbTokenizer",
        "src_lang": "eng_Latn",
        "model_max_length": 1024,
        "additional_special_tokens": codes,
    }
    _write(folder, doc, config)
