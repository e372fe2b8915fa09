"""The one exception tree of xsearch.

Every error that xsearch raises on purpose derives from :class:`XSearchError`. Each one
carries the data it is about and a message that says how to fix the problem. Only the CLI
(and the server) turn these into printed messages and exit codes.

::

    XSearchError
    ├── ConfigError              a setting or argument is invalid
    │   └── LabelsFileError      a tag vocabulary file (--labels) is malformed; file and line
    ├── ModelError
    │   ├── UnknownModelError    no profile of that name
    │   └── ModelUnavailableError  weights not cached and not downloadable
    ├── StoreError
    │   ├── StoreNotFoundError   no store at that location
    │   ├── ModelMismatchError   the store was built by another model
    │   ├── StoreBusyError       another process is writing to the store
    │   └── StoreCorruptError    the store cannot be read or repaired
    ├── IndexBackendError        the vector index backend failed or is missing
    ├── QueryError
    │   └── QueryParseError      the query text does not parse; carries the position
    ├── MediaError               a single file could not be used (reported, never fatal for a run)
    ├── RayUnavailableError      --ray without the ray extra, or no cluster at that address
    ├── RayRunError              the Ray cluster failed the run (what was committed stays)
    └── EvalDatasetError         an evaluation dataset is malformed
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "EvalDatasetError",
    "IndexBackendError",
    "LabelsFileError",
    "MediaError",
    "ModelError",
    "ModelMismatchError",
    "ModelUnavailableError",
    "QueryError",
    "QueryParseError",
    "RayRunError",
    "RayUnavailableError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreNotFoundError",
    "UnknownModelError",
    "XSearchError",
]


class XSearchError(Exception):
    """Root of every error that xsearch raises on purpose. Meant for users: the message says what to do."""

    exit_code: int = 1


class ConfigError(XSearchError):
    """A setting or argument is invalid; the message names it."""

    exit_code = 2


class LabelsFileError(ConfigError):
    """A tag vocabulary file is malformed. Carries the file and the line (0: the whole file)."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        super().__init__(
            f"Bad labels file {where}: {problem}. See 'Tags' in the README for the format."
        )


class ModelError(XSearchError):
    """A model profile cannot be used."""


class UnknownModelError(ModelError):
    """No model profile has this name."""

    exit_code = 2

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"Unknown model profile {name!r}. Choose one of: {', '.join(known)} "
            "(`xsearch models` lists them with details)."
        )


class ModelUnavailableError(ModelError):
    """The weights of a model are neither cached nor downloadable right now."""

    def __init__(self, profile: str, model: str, missing: list[str], reason: str) -> None:
        self.profile = profile
        self.model = model
        self.missing = missing
        self.reason = reason
        files = "\n".join(f"  - {m}" for m in missing)
        super().__init__(
            f"The weights of model profile {profile!r} ({model}) are not on this machine, "
            f"and they cannot be downloaded: {reason}.\n"
            f"Missing:\n{files}\n"
            "To fix this, do one of:\n"
            f"  1. On a machine with internet, run `xsearch models --download {profile}`, then copy "
            "its Hugging Face cache (~/.cache/huggingface/hub) to this machine;\n"
            f"  2. point at a local checkpoint file: `--model {profile} --checkpoint PATH`;\n"
            "  3. or pick another profile that is available offline (`xsearch models`), "
            "e.g. `--model toy-bilingual` for the bundled demo model."
        )


class StoreError(XSearchError):
    """The store cannot be used."""


class StoreNotFoundError(StoreError):
    """There is no store at the given location."""

    def __init__(self, location: Path) -> None:
        self.location = location
        super().__init__(
            f"No xsearch store at {location}. Run `xsearch index FOLDER --store {location}` "
            "first, or point --store (or XSEARCH_HOME) at an existing store."
        )


class ModelMismatchError(StoreError):
    """The store was built with another model than the one requested."""

    exit_code = 2

    def __init__(self, location: Path, stored: str, requested: str) -> None:
        self.location = location
        self.stored = stored
        self.requested = requested
        super().__init__(
            f"The store at {location} was built with model {stored!r}, not {requested!r}. "
            f"Vectors of different models cannot be mixed. Leave out --model to use {stored!r}, "
            "or index into a new store with --store DIR."
        )


class StoreBusyError(StoreError):
    """Another process holds the writer lock of the store."""

    exit_code = 3

    def __init__(self, location: Path, holder: str) -> None:
        self.location = location
        self.holder = holder
        super().__init__(
            f"Another xsearch process is writing to the store at {location} ({holder}). "
            "Wait for it to finish, or stop it; queries keep working meanwhile."
        )


class StoreCorruptError(StoreError):
    """The store's database cannot be read."""


class IndexBackendError(XSearchError):
    """The vector index backend is missing or failed."""


class QueryError(XSearchError):
    """A query cannot be run."""

    exit_code = 2


class QueryParseError(QueryError):
    """The query text does not follow the grammar. ``position`` is the offending offset."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        self.text = text
        self.position = position
        self.problem = problem
        caret = " " * position + "^"
        super().__init__(
            f"Cannot parse query at position {position}: {problem}\n  {text}\n  {caret}"
        )


class MediaError(XSearchError):
    """One file cannot be decoded. ``reason`` is a short category, ``detail`` the specifics."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}: {detail}")


class RayUnavailableError(XSearchError):
    """``--ray`` was asked for, but Ray is not installed or its cluster cannot be reached."""

    exit_code = 2

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(problem)


class RayRunError(XSearchError):
    """Ray failed the run (an actor that cannot start, a lost node, an error in a task).
    Everything committed before it stays; the same command resumes."""

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(
            f"The Ray run on {address!r} failed: {problem}\nWhat was indexed so far is "
            "saved; fix the cause and run the same command again to resume (Ray's logs are "
            "under /tmp/ray/session_latest/logs on each node)."
        )


class EvalDatasetError(XSearchError):
    """An evaluation dataset is malformed; the message names the file and line."""

    exit_code = 2
