"""Why a model's cached int8 image export is not used on this CPU, found without torch.

:func:`~xsearch.encoders.onnx_backend.export_records.current_export` says whether there is an
export to use;
this module says what stood in the way where there is none, for ``xsearch info`` and the
notice of a run that exports anew: one made for another CPU (exports are kept per CPU, see
``export_records.this_machine``), one made from a checkpoint that has changed since, a missing
graph, or a record this release cannot read. An export that is there but misses the
agreement gate is described by ``Agreement.shortfall``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .export_records import (
    MODEL_FILE,
    TowerExport,
    export_directory,
    safe_profile_name,
    this_machine,
)

__all__ = ["refused_export"]


def refused_export(cache_root: Path, profile: str, checkpoint: Path | None) -> str | None:
    """Why the image export of ``profile`` (with ``checkpoint``) cached under ``cache_root``
    for this CPU cannot be used as it is, or why one cached for another CPU is not: a
    sentence without a full stop. None where there is a current one, or none was ever made."""
    directory = export_directory(cache_root, profile, checkpoint)
    export = TowerExport.load(directory)
    if export is not None:
        if not export.model_path.is_file():
            return f"the export cached at {directory} lacks its graph {MODEL_FILE}"
        if export.weights is not None and not export.weights.current():
            return (
                f"the export cached at {directory} was made from {export.weights.path}, "
                "which has changed since"
            )
        return None
    if directory.exists():
        return (
            f"the export cached at {directory} has no record this xsearch can read (an "
            "older format, or a damaged file)"
        )
    other = next(_made_for_other_cpus(cache_root, profile, checkpoint), None)
    if other is not None:
        return (
            f"the export cached at {other.directory} was made for another CPU "
            f"({other.machine}); this one ({this_machine()}) needs its own"
        )
    return None


def _made_for_other_cpus(
    cache_root: Path, profile: str, checkpoint: Path | None
) -> Iterator[TowerExport]:
    """The exports of this model and checkpoint cached for other CPUs: those whose recorded
    CPU puts them in the folder they are in (records older than that field are not known)."""
    for folder in sorted((cache_root / "onnx").glob(f"{safe_profile_name(profile)}-*")):
        export = TowerExport.load(folder)
        if (
            export is not None
            and export.machine
            and export.profile == profile
            and export_directory(cache_root, profile, checkpoint, export.machine) == folder
        ):
            yield export
