"""xsearch: search photos and videos by describing them, in any language.

>>> from xsearch import Engine, Settings
>>> with Engine(Settings(model="toy-bilingual")) as engine:   # doctest: +SKIP
...     engine.index(["photos"])
...     for hit in engine.search("猫", limit=5):
...         print(hit.score, hit.path)
"""

from __future__ import annotations

from .config import IndexOptions, Settings
from .encoders.base import Encoder
from .encoders.profiles import (
    DEFAULT_PROFILE,
    ModelProfile,
    get_profile,
    list_profiles,
    register_profile,
)
from .engine import Engine, StoreInfo
from .errors import (
    ConfigError,
    EvalDatasetError,
    IndexBackendError,
    MediaError,
    ModelError,
    ModelMismatchError,
    ModelUnavailableError,
    QueryError,
    QueryParseError,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreNotFoundError,
    UnknownModelError,
    XSearchError,
)
from .hits import SearchHit, Segment
from .indexer import FileOutcome, IndexReport, Progress

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROFILE",
    "ConfigError",
    "Encoder",
    "Engine",
    "EvalDatasetError",
    "FileOutcome",
    "IndexBackendError",
    "IndexOptions",
    "IndexReport",
    "MediaError",
    "ModelError",
    "ModelMismatchError",
    "ModelProfile",
    "ModelUnavailableError",
    "Progress",
    "QueryError",
    "QueryParseError",
    "SearchHit",
    "Segment",
    "Settings",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreInfo",
    "StoreNotFoundError",
    "UnknownModelError",
    "XSearchError",
    "__version__",
    "get_profile",
    "list_profiles",
    "register_profile",
]
