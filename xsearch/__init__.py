"""xsearch: search photos and videos by describing them, in any language.

>>> from xsearch import Engine, Settings
>>> with Engine(Settings(model="toy-bilingual")) as engine:   # doctest: +SKIP
...     engine.index(["photos"])
...     for hit in engine.search("猫", limit=5):
...         print(hit.score, hit.path)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors as _errors  # tiny: no torch, no faiss

if TYPE_CHECKING:
    from .config import IndexOptions, Settings
    from .encoders.base import Encoder
    from .encoders.profiles import (
        DEFAULT_PROFILE,
        ModelProfile,
        get_profile,
        list_profiles,
        register_profile,
    )
    from .engine import Engine
    from .errors import (
        ConfigError,
        EvalDatasetError,
        IndexBackendError,
        LabelsFileError,
        MediaError,
        ModelError,
        ModelMismatchError,
        ModelUnavailableError,
        QueryError,
        QueryParseError,
        RayRunError,
        RayUnavailableError,
        StoreBusyError,
        StoreCorruptError,
        StoreError,
        StoreNotFoundError,
        UnknownModelError,
        XSearchError,
    )
    from .filters import SearchFilters, make_filters
    from .hits import SearchHit, Segment
    from .index_report import FileOutcome, IndexReport, Progress
    from .info import StoreInfo
    from .querylang import ImageData, Query, TagFilter, WeightedTerm, parse_query
    from .ray_pipeline import RayOptions
    from .tag_sync import FileTags, TagListing
    from .tags import Tag

# Where each public name lives. Importing `xsearch` stays cheap (no torch, no faiss) until
# a name that needs them is used: the CLI's start-up time depends on it.
_LOCATIONS = {
    "IndexOptions": "config",
    "Settings": "config",
    "Encoder": "encoders.base",
    "DEFAULT_PROFILE": "encoders.profiles",
    "ModelProfile": "encoders.profiles",
    "get_profile": "encoders.profiles",
    "list_profiles": "encoders.profiles",
    "register_profile": "encoders.profiles",
    "Engine": "engine",
    "StoreInfo": "info",
    "SearchHit": "hits",
    "Segment": "hits",
    "SearchFilters": "filters",
    "make_filters": "filters",
    "ImageData": "querylang",
    "Query": "querylang",
    "WeightedTerm": "querylang",
    "parse_query": "querylang",
    "TagFilter": "querylang",
    "FileTags": "tag_sync",
    "TagListing": "tag_sync",
    "Tag": "tags",
    "FileOutcome": "index_report",
    "IndexReport": "index_report",
    "Progress": "index_report",
    "RayOptions": "ray_pipeline",
}
_LOCATIONS.update(dict.fromkeys(_errors.__all__, "errors"))


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'xsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROFILE",
    "ConfigError",
    "Encoder",
    "Engine",
    "EvalDatasetError",
    "FileOutcome",
    "FileTags",
    "ImageData",
    "IndexBackendError",
    "IndexOptions",
    "IndexReport",
    "LabelsFileError",
    "MediaError",
    "ModelError",
    "ModelMismatchError",
    "ModelProfile",
    "ModelUnavailableError",
    "Progress",
    "Query",
    "QueryError",
    "QueryParseError",
    "RayOptions",
    "RayRunError",
    "RayUnavailableError",
    "SearchFilters",
    "SearchHit",
    "Segment",
    "Settings",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreInfo",
    "StoreNotFoundError",
    "Tag",
    "TagFilter",
    "TagListing",
    "UnknownModelError",
    "WeightedTerm",
    "XSearchError",
    "__version__",
    "get_profile",
    "list_profiles",
    "make_filters",
    "parse_query",
    "register_profile",
]
