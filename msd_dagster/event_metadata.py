"""The metadata entries that are read back from the event log: one name each, and the shape of
the JSON ones.

The assets write them (:mod:`msd_dagster.defs.assets.folders`,
:mod:`msd_dagster.defs.assets.additional_files`, the profile's facts); ``msd-dagster load``
(:mod:`msd_dagster.runs.progress`), the whole-dataset check and the benchmarks read them. A
name changed here changes on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads these names before it imports pandas
    from msd_dagster.msd.frames import RejectedFile

# raw/song_files
LIST_SECONDS = "list_seconds"
# normalized/songs
TRACKS = "tracks"
REJECTED_FILES = "rejected_files"  # how many
REJECTED_LIST = "rejected_list"  # the first REJECTED_LISTED, with their reasons
PARSE_SECONDS = "parse_seconds"
# warehouse/msd_* and warehouse/additional_files
ROWS_WRITTEN = "rows_written"
LOAD_SECONDS = "load_seconds"
DATABASE = "database"  # the masked URL of the database the rows went to
# The step failure of a folder run
FAILED_FOLDERS = "failed_folders"

# Rejected files named in the metadata; the rest are counted (and kept in the rejected frame).
REJECTED_LISTED = 1000


def rejected_entries(rejected: Sequence[RejectedFile]) -> list[dict[str, str]]:
    """The ``REJECTED_LIST`` value: the first ``REJECTED_LISTED`` files and why."""
    return [{"name": r.name, "reason": r.reason} for r in rejected[:REJECTED_LISTED]]


def rejected_from_entries(entries: Iterable[Mapping[str, str]]) -> list[tuple[str, str]]:
    """``(name, reason)`` of each file of a ``REJECTED_LIST`` value."""
    return [(entry["name"], entry["reason"]) for entry in entries]


def failed_folder_entry(partition: str, stage: str, reason: str) -> dict[str, str]:
    """One item of the ``FAILED_FOLDERS`` value."""
    return {"partition": partition, "stage": stage, "reason": reason}


def failures_by_folder(entries: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """``{partition: "stage: reason"}`` of a ``FAILED_FOLDERS`` value."""
    return {entry["partition"]: f"{entry['stage']}: {entry['reason']}" for entry in entries}


def table_rows_key(table: str) -> str:
    """The profile's entry of a table's row count (plotted over materializations)."""
    return f"rows/{table}"
