"""The tag vocabulary: concepts with English and Chinese names, and prompt templates.

The shipped vocabulary lives in ``xsearch/data/labels``: ``emoji.tsv`` (the concepts of the
generated emoji pictures, so the bundled toy model has its own words), ``everyday.tsv``
(scenes, people, events, things and food, written for xsearch), ``everyday_more.tsv`` (more
of them: places, weather, festivals, sports, roles, animals, plants, dishes, household
things, clothing, vehicles, tools, documents and screens, written for xsearch),
``imagenet.tsv`` (the
ImageNet classes, English from open_clip and Chinese from cn-clip; see
``scripts/build_labels.py``) and ``templates.json`` (prompts per language).

A user file (``--labels FILE``) adds concepts, or replaces shipped ones with the same key.
Two formats are read:

- **TSV** (any name but ``.json``): ``key<TAB>English names<TAB>Chinese names`` per line,
  names separated by ``|`` with the shown one first, either language may be empty; blank
  lines and lines starting with ``#`` are ignored, and a first line ``key<TAB>en<TAB>zh``
  is a header. The shipped templates apply.
- **JSON**: ``{"labels": [{"key": "beach", "en": ["beach"], "zh": ["海滩", "沙滩"]}],
  "templates": {"en": ["a photo of a {}."], "zh": ["{}的照片"]}}``; ``templates`` is
  optional and replaces the shipped templates of the languages it names.

A key is ASCII letters, digits, ``_`` and ``-``: the language-neutral name of a concept,
stored with each tag. Any mistake raises :class:`~xsearch.errors.LabelsFileError` naming
the file and line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from .errors import LabelsFileError

__all__ = [
    "LANGUAGES",
    "SHIPPED_PARTS",
    "Concept",
    "Language",
    "Vocabulary",
    "load_labels_file",
    "shipped_vocabulary",
    "vocabulary",
]

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
#: The parts of the shipped vocabulary, most specific first.
SHIPPED_PARTS = ("emoji", "everyday", "everyday_more", "imagenet")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")


@dataclass(frozen=True)
class Concept:
    """One taggable concept: a language-neutral key and its names per language."""

    key: str
    # Names per language, the shown one first; a language without names is not tagged.
    en: tuple[str, ...] = ()
    zh: tuple[str, ...] = ()

    def names(self, lang: Language) -> tuple[str, ...]:
        return self.en if lang == "en" else self.zh

    def label(self, lang: Language) -> str | None:
        """The shown name in ``lang``, or None when the concept has none there."""
        names = self.names(lang)
        return names[0] if names else None


@dataclass(frozen=True)
class Vocabulary:
    """Concepts and the prompt templates of each language (``{}`` is a name)."""

    concepts: tuple[Concept, ...]
    templates: Mapping[Language, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        keys = [c.key for c in self.concepts]
        if len(set(keys)) != len(keys):
            raise ValueError("concept keys must be unique")

    def __len__(self) -> int:
        return len(self.concepts)

    @functools.cached_property
    def digest(self) -> str:
        """A hash of everything that shapes the label vectors: names and templates."""
        doc = {
            "concepts": [[c.key, c.en, c.zh] for c in self.concepts],
            "templates": {lang: list(self.templates.get(lang, ())) for lang in LANGUAGES},
        }
        return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()[:16]

    def prompts(self, concept: Concept, lang: Language) -> list[str]:
        """The texts whose mean vector stands for ``concept`` in ``lang``."""
        out: dict[str, None] = {}
        for name in concept.names(lang):
            for template in self.templates.get(lang, ("{}",)):
                out[template.replace("{}", name)] = None
        return list(out)

    def key_for(self, word: str) -> str | None:
        """The key of the concept called ``word`` in any language (or by its key), else None."""
        return self._by_word.get(word.strip().casefold())

    @functools.cached_property
    def _by_word(self) -> dict[str, str]:
        found: dict[str, str] = {}
        # Shown names win over synonyms, and earlier concepts over later ones.
        for depth in range(max((len(c.en) + len(c.zh) for c in self.concepts), default=0)):
            for c in self.concepts:
                for lang in LANGUAGES:
                    names = c.names(lang)
                    if depth < len(names):
                        found.setdefault(names[depth].casefold(), c.key)
        for c in self.concepts:
            found.setdefault(c.key.casefold(), c.key)
        return found

    def extended(self, other: Vocabulary) -> Vocabulary:
        """This vocabulary with ``other``'s concepts added (same key: ``other``'s wins)."""
        theirs = {c.key: c for c in other.concepts}
        mine = tuple(theirs.pop(c.key, c) for c in self.concepts)
        templates = {**self.templates, **other.templates}
        return Vocabulary((*mine, *theirs.values()), templates)


def _split_names(cell: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in cell.split("|") if n.strip()))


def _parse_tsv(text: str, source: str) -> list[Concept]:
    concepts: list[Concept] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = line.split("\t")
        if number == 1 and [c.strip().lower() for c in cells] == ["key", "en", "zh"]:
            continue
        if len(cells) != 3:
            raise LabelsFileError(
                source,
                number,
                f"expected 3 tab-separated columns (key, English, Chinese), found {len(cells)}",
            )
        key, en, zh = cells[0].strip(), _split_names(cells[1]), _split_names(cells[2])
        concepts.append(_checked(Concept(key, en, zh), source, number, seen))
    return concepts


def _checked(concept: Concept, source: str, line: int, seen: dict[str, int]) -> Concept:
    if not _KEY.fullmatch(concept.key):
        raise LabelsFileError(
            source,
            line,
            f"the key {concept.key!r} must be 1-64 ASCII letters, digits, '_' or '-'",
        )
    if concept.key in seen:
        raise LabelsFileError(
            source, line, f"the key {concept.key!r} is also on line {seen[concept.key]}"
        )
    if not concept.en and not concept.zh:
        raise LabelsFileError(source, line, f"{concept.key!r} has no English or Chinese name")
    seen[concept.key] = line
    return concept


def _line_of(text: str, needle: str) -> int:
    """The line where ``needle`` first appears in ``text`` (1 when it cannot be found)."""
    at = text.find(needle)
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def _string_list(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return _split_names(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    return None


def _parse_json(text: str, source: str) -> Vocabulary:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsFileError(source, exc.lineno, f"not valid JSON ({exc.msg})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise LabelsFileError(source, 1, 'expected an object with a "labels" list')
    concepts: list[Concept] = []
    seen: dict[str, int] = {}
    for item in doc["labels"]:
        key = item.get("key") if isinstance(item, dict) else None
        line = _line_of(text, json.dumps(key, ensure_ascii=False)) if key else 1
        if not isinstance(key, str):
            raise LabelsFileError(source, line, f'every label needs a string "key": {item!r}')
        names = {lang: _string_list(item.get(lang, [])) for lang in LANGUAGES}
        for lang, value in names.items():
            if value is None:
                raise LabelsFileError(
                    source, line, f'"{lang}" of {key!r} must be a list of strings'
                )
        concept = Concept(key.strip(), names["en"] or (), names["zh"] or ())
        concepts.append(_checked(concept, source, line, seen))
    return Vocabulary(tuple(concepts), _templates(doc.get("templates", {}), source, text))


def _templates(raw: object, source: str, text: str) -> dict[Language, tuple[str, ...]]:
    line = _line_of(text, '"templates"')
    if not isinstance(raw, dict):
        raise LabelsFileError(source, line, '"templates" must map a language to a list')
    out: dict[Language, tuple[str, ...]] = {}
    for lang, value in raw.items():
        if lang not in LANGUAGES:
            if str(lang).startswith("_"):
                continue  # a comment
            raise LabelsFileError(source, line, f"unknown template language {lang!r} (en, zh)")
        templates = _string_list(value) if isinstance(value, list) else None
        if not templates or not all("{}" in t for t in templates):
            raise LabelsFileError(
                source, line, f'templates of {lang!r} must be a non-empty list, each with "{{}}"'
            )
        out[lang] = templates
    return out


def load_labels_file(path: Path) -> Vocabulary:
    """A user's vocabulary file (TSV or JSON, see the module docstring), checked."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise LabelsFileError(source, line, "not UTF-8 text") from exc
    except OSError as exc:
        raise LabelsFileError(source, 0, f"cannot be read ({exc.strerror or exc})") from exc
    if path.suffix.lower() == ".json":
        vocab = _parse_json(text, source)
    else:
        vocab = Vocabulary(tuple(_parse_tsv(text, source)))
    if not vocab.concepts:
        raise LabelsFileError(source, 0, "it holds no labels")
    return vocab


@functools.cache
def shipped_vocabulary(parts: tuple[str, ...] = ()) -> Vocabulary:
    """The vocabulary that comes with xsearch (3,184 concepts), or only some of its parts."""
    unknown = set(parts) - set(SHIPPED_PARTS)
    if unknown:
        raise ValueError(f"no vocabulary part {sorted(unknown)}; there are {SHIPPED_PARTS}")
    folder = resources.files("xsearch") / "data" / "labels"
    concepts: list[Concept] = []
    for part in parts or SHIPPED_PARTS:
        name = f"{part}.tsv"
        concepts += _parse_tsv((folder / name).read_text(encoding="utf-8"), name)
    raw = json.loads((folder / "templates.json").read_text(encoding="utf-8"))
    templates = {lang: tuple(raw[lang]) for lang in LANGUAGES}
    return Vocabulary(tuple(_dedupe(concepts)), templates)


def _dedupe(concepts: Iterable[Concept]) -> list[Concept]:
    """The first concept of each key (the parts are listed most specific first)."""
    out: dict[str, Concept] = {}
    for c in concepts:
        out.setdefault(c.key, c)
    return list(out.values())


def vocabulary(user_files: Sequence[Path] = (), *, parts: tuple[str, ...] = ()) -> Vocabulary:
    """The shipped vocabulary (all of it, or ``parts``) extended by the user's files."""
    vocab = shipped_vocabulary(parts)
    for path in user_files:
        vocab = vocab.extended(load_labels_file(path))
    return vocab
