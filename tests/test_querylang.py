"""Issue 7: the query language — examples, errors with positions, Hypothesis round trips."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from xsearch.errors import QueryError, QueryParseError
from xsearch.querylang import (
    ImageData,
    ImagePath,
    MediaRef,
    Query,
    TagFilter,
    Text,
    WeightedTerm,
    format_query,
    parse_query,
)


def terms(source: str) -> list[tuple[object, float]]:
    return [(t.term, t.weight) for t in parse_query(source).terms]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a red car at night", [(Text("a red car at night"), 1.0)]),
        ("猫", [(Text("猫"), 1.0)]),
        ("t-shirt", [(Text("t-shirt"), 1.0)]),
        ("-night", [(Text("-night"), 1.0)]),
        (
            "2:beach + ./pool.jpg - night",
            [(Text("beach"), 2.0), (ImagePath("./pool.jpg"), 1.0), (Text("night"), -1.0)],
        ),
        (
            '"2:beach" + ./pool.jpg - "night"',
            [(Text("2:beach"), 1.0), (ImagePath("./pool.jpg"), 1.0), (Text("night"), -1.0)],
        ),
        ('0.5:"old town" -"rain"', [(Text("old town"), 0.5), (Text("rain"), -1.0)]),
        ("- night + beach", [(Text("night"), -1.0), (Text("beach"), 1.0)]),
        ("+ beach", [(Text("beach"), 1.0)]),
        ("holiday.JPG", [(ImagePath("holiday.JPG"), 1.0)]),
        ("~/pics/a.png + /abs/b", [(ImagePath("~/pics/a.png"), 1.0), (ImagePath("/abs/b"), 1.0)]),
        ('image:"my photo.jpg" + id:42', [(ImagePath("my photo.jpg"), 1.0), (MediaRef(42), 1.0)]),
        ("3:image:x - 1.5:id:7", [(ImagePath("x"), 3.0), (MediaRef(7), -1.5)]),
        ('tag:猫 - tag:"ice cream"', [(TagFilter("猫"), 1.0), (TagFilter("ice cream"), -1.0)]),
        ('"say \\"cheese\\" \\\\ now"', [(Text('say "cheese" \\ now'), 1.0)]),
        ("  spaced   out  words ", [(Text("spaced out words"), 1.0)]),
    ],
)
def test_examples(source: str, expected: list[tuple[object, float]]) -> None:
    assert terms(source) == expected


@pytest.mark.parametrize(
    ("source", "position", "problem"),
    [
        ("", 0, "empty"),
        ("beach -", 7, "expected a term"),
        ("beach + - night", 8, "second sign"),
        ('cat + "never closed', 6, "never closed"),
        ("cat ./a.jpg", 4, "term of its own"),
        ("beach id:3", 6, "term of its own"),
        ("- night", 2, "every term is subtracted"),
        ("0:cat", 0, "positive"),
        ("cat + id:x", 9, "id: needs"),
        ('"a" b', 4, "between two terms"),
        ("2: cat", 2, "right after the weight"),
        ("image:", 6, "image: needs"),
        ('cat + ""', 6, "empty"),
    ],
)
def test_errors_point_at_the_offending_term(source: str, position: int, problem: str) -> None:
    with pytest.raises(QueryParseError) as caught:
        parse_query(source)
    err = caught.value
    assert err.position == position
    assert problem in err.problem
    # The message repeats the query with a caret under the offending character.
    lines = str(err).splitlines()
    assert lines[-2] == "  " + source and lines[-1] == "  " + " " * position + "^"


def test_query_objects() -> None:
    q = Query.of(Text("a cat")).plus(ImageData(b"..."), 0.5)
    assert q.keyword_text() == "a cat"
    assert parse_query("beach - night + 2:sea").keyword_text() == "beach sea"
    with pytest.raises(QueryError):
        Query(())
    with pytest.raises(QueryError, match="subtracted"):
        Query((WeightedTerm(Text("x"), -1.0),))
    with pytest.raises(QueryError, match="cannot be written"):
        format_query(q)
    # Positions are not part of equality: a query equals its re-parsed canonical form.
    assert parse_query("  beach   -  night") == parse_query("beach - night")


# -- Hypothesis ------------------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() != "")
_path = st.one_of(
    st.builds(lambda s: "./" + s + ".jpg", st.text(min_size=0, max_size=10)),
    st.text(min_size=1, max_size=15),
)
_term = st.one_of(
    st.builds(Text, _text),
    st.builds(ImagePath, _path),
    st.builds(MediaRef, st.integers(min_value=0, max_value=10**12)),
    st.builds(TagFilter, _text),
)
_weight = st.one_of(
    st.just(1.0),
    st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, 2.0, 3.0, 1e-5]),
)
_weighted = st.builds(
    WeightedTerm, _term, st.tuples(_weight, st.booleans()).map(lambda p: -p[0] if p[1] else p[0])
)
_queries = (
    st.lists(_weighted, min_size=1, max_size=5)
    .filter(lambda ts: any(t.weight > 0 for t in ts))
    .map(lambda ts: Query(tuple(ts)))
)


@settings(max_examples=300, deadline=None)
@given(_queries)
@example(Query((WeightedTerm(Text("12:30 meeting")),)))
@example(Query((WeightedTerm(ImagePath("image:x.jpg")), WeightedTerm(Text("+"), -2.0))))
@example(Query((WeightedTerm(Text(' "quoted" \\ ')),)))
def test_format_then_parse_is_identity(query: Query) -> None:
    text = format_query(query)
    assert parse_query(text) == query
    # The canonical text is a fixed point.
    assert format_query(parse_query(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_parses_or_fails_with_a_position(source: str) -> None:
    try:
        query = parse_query(source)
    except QueryParseError as err:
        assert 0 <= err.position <= len(source)
        return
    # Whatever parsed re-parses to the same query from its canonical text.
    assert parse_query(format_query(query)) == query
    for term in query.terms:
        assert term.span is not None
        start, end = term.span
        assert 0 <= start < end <= len(source)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abcxyz猫京都 -", min_size=1, max_size=8), min_size=1, max_size=4))
def test_plain_words_are_one_text_term(words: list[str]) -> None:
    source = " ".join(words)
    assume(source.strip() and all(w not in ("+", "-") for w in source.split()))
    assert terms(source) == [(Text(" ".join(source.split())), 1.0)]
