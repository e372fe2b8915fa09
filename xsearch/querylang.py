"""The query language: text, images and stored media, added and subtracted with weights.

One grammar serves the CLI, the library and the HTTP API::

    query   = [sign] term { sign term }
    sign    = "+" | "-"                  a sign stands alone: spaces (or a quote) on both sides
    term    = [weight ":"] atom
    weight  = decimal number > 0         2:beach   0.5:"old town"
    atom    = quoted                     "any text, \\" and \\\\ escaped"   (always text)
            | "image:" (word | quoted)   image:pool.jpg   image:"my photos/pool.jpg"
            | "id:" digits               id:42            (a file already in the store)
            | "tag:" (word | quoted)     tag:beach  tag:海滩  tag:"ice cream"  (a filter)
            | path                       ./pool.jpg  ../a.png  /x/y.jpg  ~/z.jpg  pool.jpg
            | phrase                     words up to the next sign: red car at night

A number and a colon at the start of a term is a weight: quote text such as ``"12:30"``.
A *path* is one word that starts with ``/``, ``./``, ``../`` or ``~/``, or ends in an image
extension. Quote it to search for the words instead (``"IMG_0001.jpg"``). Inside a phrase,
``-`` and ``+`` only act as signs when they stand alone, so ``t-shirt`` stays one word.

A ``tag:`` term filters instead of scoring: ``+ tag:beach`` keeps only files tagged with
that concept (its name in English or Chinese, or its key), ``- tag:night`` drops those
tagged night; a query of tags alone ranks the tagged files by their names as text.

Example: ``2:beach + ./pool.jpg - night`` looks for a beach, like pool.jpg, not at night.
Each term's vector is normalised, scaled by its signed weight and summed; the sum is
normalised again. Parsing is pure: files are looked at only when the query is embedded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .errors import QueryError, QueryParseError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ImagePath",
    "MediaRef",
    "Query",
    "TagFilter",
    "Term",
    "Text",
    "WeightedTerm",
    "build_query",
    "describe_query",
    "format_query",
    "parse_query",
]

#: Extensions that make a single word an image path.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
)
_PATH_STARTS = ("/", "./", "../", "~/")
_WEIGHT = re.compile(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?):")
_SIGNS = ("+", "-")


@dataclass(frozen=True)
class Text:
    """Text in any language the model knows."""

    text: str


@dataclass(frozen=True)
class ImagePath:
    """An image file on this machine (never accepted from HTTP clients)."""

    path: str


@dataclass(frozen=True)
class ImageData:
    """An image given as bytes, e.g. an upload. Not part of the textual grammar."""

    data: bytes = field(repr=False)
    label: str = "uploaded image"


@dataclass(frozen=True)
class MediaRef:
    """A file already in the store, by id: "more like this"."""

    media_id: int


@dataclass(frozen=True)
class TagFilter:
    """``tag:NAME``: files with (or, subtracted, without) a tag, in either language."""

    name: str


Term = Text | ImagePath | ImageData | MediaRef | TagFilter


@dataclass(frozen=True)
class WeightedTerm:
    term: Term
    # Negative for subtracted terms; never zero.
    weight: float = 1.0
    # Where the term stands in the query text, for error messages; not part of equality.
    span: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Query:
    """A parsed query: weighted terms, at least one of them positive."""

    terms: tuple[WeightedTerm, ...]
    # The text it was parsed from, for error messages; not part of equality.
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.terms:
            raise QueryError("The query is empty: give some text or an image to search for.")
        for t in self.terms:
            if not math.isfinite(t.weight) or t.weight == 0:
                raise QueryError(f"Term weights must be finite and non-zero, not {t.weight}.")
            if isinstance(t.term, Text) and not t.term.text.strip():
                raise QueryError("A text term of the query is empty.")
            if isinstance(t.term, ImagePath) and not t.term.path:
                raise QueryError("An image term of the query has no file name.")
            if isinstance(t.term, TagFilter) and not t.term.name.strip():
                raise QueryError("A tag: term of the query has no tag name.")
        if all(t.weight < 0 for t in self.terms):
            raise QueryError(
                "Every term of the query is subtracted; add something to look for, "
                "e.g. 'beach - night'."
            )

    @classmethod
    def parse(cls, text: str) -> Query:
        return parse_query(text)

    @classmethod
    def of(cls, term: Term, weight: float = 1.0) -> Query:
        """A one-term query, e.g. ``Query.of(Text("a cat"))`` for text taken literally."""
        return cls((WeightedTerm(term, weight),))

    def plus(self, term: Term, weight: float = 1.0) -> Query:
        """This query with one more term (e.g. an uploaded image)."""
        return replace(self, terms=(*self.terms, WeightedTerm(term, weight)))

    def map_paths(self, change: Callable[[str], str]) -> Query:
        """This query with every image path passed through ``change`` (e.g. expanduser)."""
        terms = tuple(
            replace(t, term=ImagePath(change(t.term.path))) if isinstance(t.term, ImagePath) else t
            for t in self.terms
        )
        return replace(self, terms=terms)

    def keyword_text(self) -> str:
        """The words of the positive text terms: what keyword search looks for."""
        return " ".join(
            t.term.text for t in self.terms if isinstance(t.term, Text) and t.weight > 0
        )

    def tag_filters(self) -> list[WeightedTerm]:
        """The ``tag:`` terms: positive ones are required, subtracted ones excluded."""
        return [t for t in self.terms if isinstance(t.term, TagFilter)]

    def vector_terms(self) -> list[WeightedTerm]:
        """The terms that are embedded; for a query of tags alone, the positive tag names
        as text (the tagged files are then ranked by how well they show it)."""
        terms = [t for t in self.terms if not isinstance(t.term, TagFilter)]
        if any(t.weight > 0 for t in terms):
            return terms
        names = [
            replace(t, term=Text(t.term.name))
            for t in self.tag_filters()
            if t.weight > 0 and isinstance(t.term, TagFilter)
        ]
        return [*terms, *names]

    def error(self, term: WeightedTerm, problem: str) -> QueryError:
        """An error about one term, pointing at it in the query text when that is known."""
        if self.source is not None and term.span is not None:
            return QueryParseError(self.source, term.span[0], problem)
        return QueryError(problem)

    def __str__(self) -> str:
        return format_query(self)


# -- lexing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "quoted" or "sign"
    text: str
    start: int
    end: int


def _lex(source: str) -> list[_Token]:
    """Words (runs of non-space, non-quote characters), quoted strings and lone signs."""
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            tokens.append(_quoted(source, i))
            i = tokens[-1].end
        else:
            j = i
            while j < n and not source[j].isspace() and source[j] != '"':
                j += 1
            word = source[i:j]
            kind = "sign" if word in _SIGNS else "word"
            tokens.append(_Token(kind, word, i, j))
            i = j
    return tokens


def _quoted(source: str, start: int) -> _Token:
    out: list[str] = []
    i = start + 1
    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source) and source[i + 1] in '"\\':
            out.append(source[i + 1])
            i += 2
        elif ch == '"':
            return _Token("quoted", "".join(out), start, i + 1)
        else:
            out.append(ch)
            i += 1
    raise QueryParseError(source, start, 'this quote is never closed; add a closing "')


# -- parsing ---------------------------------------------------------------------------------


def _is_path(word: str) -> bool:
    return word.startswith(_PATH_STARTS) or word.lower().endswith(IMAGE_EXTENSIONS)


def _is_prefixed(word: str) -> bool:
    return word.startswith(("image:", "id:", "tag:")) or bool(_WEIGHT.match(word))


def _is_special(word: str) -> bool:
    """A word that must start a term of its own: a path, image:, id:, tag: or a weight."""
    return _is_path(word) or _is_prefixed(word)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _lex(source)
        self.pos = 0

    def fail(self, at: int, problem: str) -> QueryParseError:
        return QueryParseError(self.source, at, problem)

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def adjacent_quoted(self, after: _Token) -> _Token | None:
        nxt = self.peek()
        if nxt is not None and nxt.kind == "quoted" and nxt.start == after.end:
            return self.take()
        return None

    def parse(self) -> Query:
        if not self.tokens:
            raise self.fail(0, "the query is empty; give some text or an image")
        terms: list[WeightedTerm] = []
        sign = 1.0
        first = self.peek()
        if first is not None and first.kind == "sign":
            sign = -1.0 if self.take().text == "-" else 1.0
        while True:
            terms.append(self.term(sign))
            tok = self.peek()
            if tok is None:
                break
            if tok.kind != "sign":
                raise self.fail(tok.start, "expected '+' or '-' between two terms")
            sign = -1.0 if self.take().text == "-" else 1.0
        if all(t.weight < 0 for t in terms):
            raise self.fail(
                terms[0].span[0] if terms[0].span else 0,
                "every term is subtracted; add something to look for, e.g. 'beach - night'",
            )
        return Query(tuple(terms), source=self.source)

    def term(self, sign: float) -> WeightedTerm:
        tok = self.peek()
        if tok is None:
            raise self.fail(len(self.source), "expected a term after the sign")
        if tok.kind == "sign":
            raise self.fail(tok.start, f"expected a term, not a second sign {tok.text!r}")
        self.take()
        start, weight = tok.start, 1.0
        body = tok
        if tok.kind == "word" and (m := _WEIGHT.match(tok.text)):
            weight = float(m.group(1))
            if weight <= 0 or not math.isfinite(weight):
                raise self.fail(tok.start, "a weight must be a positive number; use - to subtract")
            rest = tok.text[m.end() :]
            at = tok.start + m.end()
            quoted = None if rest else self.adjacent_quoted(tok)
            if not rest and quoted is None:
                raise self.fail(at, "expected a term right after the weight (no space)")
            body = quoted or _Token("word", rest, at, tok.end)
        term, end = self.atom(body)
        return WeightedTerm(term, sign * weight, span=(start, end))

    def atom(self, tok: _Token) -> tuple[Term, int]:
        if tok.kind == "quoted":
            if not tok.text.strip():
                raise self.fail(tok.start, "the quoted text is empty")
            return Text(tok.text), tok.end
        word = tok.text
        for prefix in ("image:", "id:", "tag:"):
            if word.startswith(prefix):
                rest, at = word[len(prefix) :], tok.start + len(prefix)
                if prefix == "id:":
                    if not rest.isascii() or not rest.isdigit():
                        raise self.fail(at, "id: needs the number of a file in the store")
                    return MediaRef(int(rest)), tok.end
                make = ImagePath if prefix == "image:" else TagFilter
                if rest:
                    return make(rest), tok.end
                quoted = self.adjacent_quoted(tok)
                empty = quoted is None or not (
                    quoted.text if make is ImagePath else quoted.text.strip()
                )
                if quoted is None or empty:
                    example = 'image:"my photo.jpg"' if make is ImagePath else 'tag:"ice cream"'
                    what = "a file name" if make is ImagePath else "a tag name"
                    raise self.fail(at, f"{prefix} needs {what}, e.g. {example}")
                return make(quoted.text), quoted.end
        if _is_path(word):
            return ImagePath(word), tok.end
        return self.phrase(tok)

    def phrase(self, first: _Token) -> tuple[Term, int]:
        words, end = [first.text], first.end
        while (tok := self.peek()) is not None and tok.kind == "word":
            if _is_special(tok.text):
                raise self.fail(
                    tok.start, "this must be a term of its own: put '+' or '-' before it"
                )
            words.append(self.take().text)
            end = tok.end
        return Text(" ".join(words)), end


def parse_query(source: str) -> Query:
    """Parse ``source``; raises :class:`~xsearch.errors.QueryParseError` with the position."""
    return _Parser(source).parse()


# -- formatting ------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bare_phrase_ok(text: str) -> bool:
    words = text.split(" ")
    return all(w and '"' not in w and not any(c.isspace() for c in w) for w in words) and not any(
        w in _SIGNS or _is_special(w) for w in words
    )


def _format_term(term: Term) -> str:
    if isinstance(term, Text):
        return term.text if _bare_phrase_ok(term.text) else _quote(term.text)
    if isinstance(term, ImagePath):
        p = term.path
        if _is_path(p) and not _is_prefixed(p) and '"' not in p and not any(c.isspace() for c in p):
            return p
        return "image:" + _quote(p)
    if isinstance(term, MediaRef):
        return f"id:{term.media_id}"
    if isinstance(term, TagFilter):
        n = term.name
        bare = n and '"' not in n and not any(c.isspace() for c in n)
        return "tag:" + (n if bare else _quote(n))
    raise QueryError(f"The {term.label} cannot be written as query text.")


def format_query(query: Query) -> str:
    """The canonical text of ``query``: ``parse_query(format_query(q)) == q``."""
    return _format(query, describe=False)


def describe_query(query: Query) -> str:
    """Like :func:`format_query`, but shows image bytes as ``[label]`` instead of failing."""
    return _format(query, describe=True)


def _format(query: Query, *, describe: bool) -> str:
    parts: list[str] = []
    for i, t in enumerate(query.terms):
        sign = "-" if t.weight < 0 else "+"
        if i or t.weight < 0:
            parts.append(sign)
        size = abs(t.weight)
        short = f"{size:g}"
        weight = "" if size == 1.0 else f"{short if float(short) == size else repr(size)}:"
        shown = f"[{t.term.label}]" if describe and isinstance(t.term, ImageData) else None
        parts.append(weight + (shown or _format_term(t.term)))
    return " ".join(parts)


def build_query(
    text: str | None, images: Sequence[ImagePath | ImageData] = (), *, allow_paths: bool = True
) -> Query:
    """The query of a search box or command line: parsed ``text`` plus extra images.

    With ``allow_paths=False`` (the HTTP API) image paths in the text are refused: a client
    must not make the server read files of its choosing.
    """
    query = parse_query(text) if text and text.strip() else None
    if query is not None and not allow_paths:
        for t in query.terms:
            if isinstance(t.term, ImagePath):
                raise query.error(
                    t, "image paths are not accepted here; upload the image or use id:N"
                )
    for image in images:
        query = query.plus(image) if query is not None else Query.of(image)
    if query is None:
        raise QueryError("The query is empty: give some text or an image to search for.")
    return query
