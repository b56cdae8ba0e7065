"""Why a folder failed to load, and whether trying again may help (what decides a step's
retry). Plain Python: the asset turns these into its ``dg.Failure``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from msd_dagster.source.layout import SourceError
from msd_dagster.source.s3 import S3SourceError
from msd_dagster.warehouse.transactions import is_transient_database_error


@dataclass
class FolderFailure:
    """A folder the step could not load, at which stage, why, and whether trying again may
    help."""

    partition: str
    stage: str  # list, parse, load or check
    reason: str
    transient: bool


class FolderFailed(Exception):
    """Ends one folder's load; the step goes on with the next folder."""

    def __init__(self, failure: FolderFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def is_transient(exc: BaseException) -> bool:
    """Worth trying again: a source or database fault that may pass (never a bad file, a
    refused row, a failed check or a missing folder)."""
    if isinstance(exc, SourceError | S3SourceError):
        return not exc.permanent
    return is_transient_database_error(exc)


def failures_summary(failures: Sequence[FolderFailure], attempted: int) -> str:
    """One line: how many of the ``attempted`` folders failed, each with its stage and reason."""
    return f"{len(failures)} of {attempted} folder(s) failed: " + "; ".join(
        f"{f.partition} ({f.stage}): {f.reason}" for f in failures
    )
