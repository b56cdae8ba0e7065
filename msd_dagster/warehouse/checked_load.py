"""A partition load that verifies what it wrote before committing it.

The checks' numbers (:func:`~msd_dagster.warehouse.verify.verify_partition`) are computed in
the load's own transaction, after the rows are written; a partition that fails them is rolled
back, so the database never holds a partition that its checks reject.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from msd_dagster import stopping
from msd_dagster.warehouse.partition_load import (
    PartitionFrames,
    WrittenPartition,
    load_partition_stream,
)
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
    frames: PartitionFrames,
    source_rows: Callable[[], Mapping[str, int]] | None = None,
) -> CheckedLoad:
    """Load one partition and verify it in the same transaction: a pass over its frames in
    chunks (:func:`load_partition_stream`; each retry of the transaction reads them again).
    ``source_rows``: what gives the rows its files imply, once the frames are read.

    Raises :class:`PartitionCheckFailed` (after the rollback) when a verdict fails.
    """
    started = time.perf_counter()
    verdicts: list[TableVerdict] = []

    def verify(conn: sa.Connection, written: WrittenPartition) -> None:
        expected = source_rows() if source_rows else None
        verdicts[:] = verify_partition(
            conn, partition_key, written.frames, expected, written.shared_missing
        )
        if not all(v.passed for v in verdicts):
            raise PartitionCheckFailed(partition_key, list(verdicts))
        stopping.committing()  # from here a stop waits until the folder's records are stored

    written = load_partition_stream(engine, partition_key, lambda: frames, before_commit=verify)
    stopping.pause_at("after-commit", partition_key)
    return CheckedLoad(written, verdicts, time.perf_counter() - started)
