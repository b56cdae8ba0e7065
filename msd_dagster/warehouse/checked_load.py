"""A partition load that verifies what it wrote before committing it.

The checks' numbers (:func:`~msd_dagster.warehouse.verify.verify_partition`) are computed in
the load's own transaction, after the rows are written; a partition that fails them is rolled
back, so the database never holds a partition that its checks reject.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from msd_dagster import stopping
from msd_dagster.warehouse.partition_load import WrittenPartition, load_partition
from msd_dagster.warehouse.verify import TableVerdict, verify_partition


class PartitionCheckFailed(RuntimeError):
    """The partition's rows did not pass their checks; nothing of it was committed."""

    def __init__(self, partition_key: str, verdicts: list[TableVerdict]) -> None:
        self.partition_key = partition_key
        self.verdicts = verdicts
        failed = [v for v in verdicts if not v.passed]
        super().__init__(
            f"partition {partition_key}: the load was rolled back, its checks failed for "
            + "; ".join(f"{v.table} ({v.summary()})" for v in failed)
        )


@dataclass
class CheckedLoad:
    """Rows written per table, the verdicts computed before commit, and the seconds taken."""

    written: dict[str, int]
    verdicts: list[TableVerdict] = field(default_factory=list)
    seconds: float = 0.0


def load_and_verify(
    engine: sa.Engine,
    partition_key: str,
    frames: Mapping[str, pd.DataFrame],
    source_rows: Mapping[str, int] | None = None,
) -> CheckedLoad:
    """Load one partition (:func:`load_partition`) and verify it in the same transaction.

    Raises :class:`PartitionCheckFailed` (after the rollback) when a verdict fails.
    """
    started = time.perf_counter()
    verdicts: list[TableVerdict] = []

    def verify(conn: sa.Connection, written: WrittenPartition) -> None:
        verdicts[:] = verify_partition(
            conn, partition_key, written.frames, source_rows, written.shared_missing
        )
        if not all(v.passed for v in verdicts):
            raise PartitionCheckFailed(partition_key, list(verdicts))
        stopping.committing()  # from here a stop waits until the folder's records are stored

    written = load_partition(engine, partition_key, frames, before_commit=verify)
    stopping.pause_at("after-commit", partition_key)
    return CheckedLoad(written, verdicts, time.perf_counter() - started)
