"""Load one partition (an ``X/Y`` folder of song files) into the ``msd_*`` tables atomically.

One transaction per partition:

1. Shared, artist-level tables are upserted from temporary staging tables
   (:mod:`msd_dagster.warehouse.staging`, with the rules of
   :mod:`msd_dagster.warehouse.merge_rules`): rows whose natural key is missing are inserted,
   nothing is ever deleted, and the result does not depend on load order.
2. The partition's track rows are replaced: deleted from the five analysis tables and
   ``msd_track`` by track-id range, then bulk-inserted.

Any failure rolls everything back, so the previous contents stay intact; rerunning a partition
with the same frames gives the same contents. Deadlocks and lock timeouts between concurrent
loads are retried (the whole transaction, which is safe because it is all-or-nothing).

With ``mssql+mssqlpython`` the analysis rows are bulk-copied before the transaction and moved
in it (:mod:`msd_dagster.warehouse.dialects.mssql_bulkcopy`), so the same holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from msd_dagster.source.layout import partition_track_range
from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.dialects import backend_for
from msd_dagster.warehouse.merge_rules import (
    SOURCE_COLUMN,
)
from msd_dagster.warehouse.schema import (
    ANALYSIS_TABLES,
    CHECKED_REFERENCES,
    NATURAL_KEYS,
    SHARED_TABLES,
    TABLES_BY_NAME,
    TRACK_TABLES,
    load_columns,
)
from msd_dagster.warehouse.staging import upsert_shared
from msd_dagster.warehouse.transactions import (
    invalidate_if_disconnected,
    open_load_connection,
    retry_deadlocks,
)

__all__ = [
    "load_partition",
    "prepare_frames",
]


# --------------------------------------------------------------------------------------------
# Frames


def prepare_frames(
    frames: Mapping[str, pd.DataFrame], partition_key: str
) -> dict[str, pd.DataFrame]:
    """Validate the twelve frames and put their columns in table order.

    Track tables must only hold track ids of the partition (a stray row would survive a rerun
    of this partition and be deleted by another's). Shared tables are sorted by natural key
    (consistent lock order between concurrent loads) and deduplicated: ``msd_artist`` keeps the
    row with the smallest ``source_track_id`` (NULL last), other tables the first occurrence.
    """
    lo, hi = partition_track_range(partition_key)
    missing = sorted(set(TABLES_BY_NAME) - set(frames))
    unknown = sorted(set(frames) - set(TABLES_BY_NAME))
    if missing or unknown:
        raise ValueError(
            f"frames must be keyed by the twelve msd_* tables: missing {missing or 'none'}, "
            f"unknown {unknown or 'none'}"
        )
    prepared: dict[str, pd.DataFrame] = {}
    for name, table in TABLES_BY_NAME.items():
        df = frames[name]
        columns = load_columns(table)
        absent = [c for c in columns if c not in df.columns]
        extra = [str(c) for c in df.columns if c not in set(columns)]
        if absent or extra:
            raise ValueError(
                f"frame {name}: missing column(s) {absent or 'none'}, "
                f"unexpected column(s) {extra or 'none'}"
            )
        if list(df.columns) != columns:  # the normalized frames are already in table order
            df = df[columns]
        keys = list(NATURAL_KEYS[name])
        null_keys = df[keys].isna().any(axis=1)
        if null_keys.any():
            raise ValueError(f"frame {name}: {int(null_keys.sum())} row(s) with a NULL natural key")
        if table in TRACK_TABLES:
            track_ids = df["track_id"]
            outside = ~((track_ids >= lo) & (track_ids < hi))
            if outside.any():
                examples = list(track_ids[outside].astype(str).unique()[:3])
                raise ValueError(
                    f"frame {name}: {int(outside.sum())} row(s) outside partition {partition_key} "
                    f"(track ids must start with {lo!r}), e.g. {examples}"
                )
        else:
            if name == "msd_artist":
                df = df.sort_values(["artist_id", SOURCE_COLUMN], na_position="last", kind="stable")
            else:
                df = df.sort_values(keys, kind="stable")
            df = df.drop_duplicates(subset=keys, keep="first")
        prepared[name] = df
    for ref in CHECKED_REFERENCES:  # no database constraint catches these (schema docstring)
        child = prepared[ref.table][ref.column]
        unknown = ~child.isin(prepared[ref.parent_table][ref.parent_column])
        if unknown.any():
            examples = list(child[unknown].astype(str).unique()[:3])
            raise ValueError(
                f"frame {ref.table}: {int(unknown.sum())} row(s) whose {ref.column} is not in "
                f"the {ref.parent_table} frame of this partition, e.g. {examples}"
            )
    return prepared


# --------------------------------------------------------------------------------------------
# The load


@dataclass(frozen=True)
class WrittenPartition:
    """What a load wrote, as ``before_commit`` sees it: the frames as loaded (validated,
    deduplicated) and, per shared table, the staged keys the table still lacked after the
    merge (0 unless something is wrong)."""

    frames: Mapping[str, pd.DataFrame]
    shared_missing: Mapping[str, int]


BeforeCommit = Callable[[sa.Connection, WrittenPartition], None]


def _load_once(
    engine: sa.Engine,
    lo: str,
    hi: str,
    prepared: Mapping[str, pd.DataFrame],
    chunk_rows: int | None,
    before_commit: BeforeCommit | None = None,
) -> dict[str, int]:
    dialect = engine.dialect
    counts: dict[str, int] = {}
    missing: dict[str, int] = {}
    analysis = {warehouse_table(dialect, t): prepared[t.name] for t in ANALYSIS_TABLES}
    with open_load_connection(engine) as conn:
        try:
            # Drivers whose bulk copy cannot join the transaction stage those rows first.
            with (
                backend_for(engine).copy_outside_transaction(conn, analysis, chunk_rows) as staged,
                conn.begin(),
            ):
                for table in SHARED_TABLES:
                    target = warehouse_table(dialect, table)
                    upserted = upsert_shared(conn, target, prepared[table.name], chunk_rows)
                    counts[table.name], missing[table.name] = upserted
                for table in reversed(TRACK_TABLES):  # children before msd_track
                    target = warehouse_table(dialect, table)
                    conn.execute(
                        sa.delete(target).where(target.c.track_id >= lo, target.c.track_id < hi)
                    )
                for table in TRACK_TABLES:
                    target = warehouse_table(dialect, table)
                    if table.name in staged:
                        counts[table.name] = staged[table.name].insert_into(conn, target)
                    else:
                        counts[table.name] = bulk_insert(
                            conn, target, prepared[table.name], chunk_rows=chunk_rows
                        )
                if before_commit is not None:  # raising rolls the whole partition back
                    before_commit(conn, WrittenPartition(prepared, missing))
        except BaseException as exc:
            invalidate_if_disconnected(conn, exc)
            raise
    return counts


def load_partition(
    engine: sa.Engine,
    partition_key: str,
    frames: Mapping[str, pd.DataFrame],
    *,
    chunk_rows: int | None = None,
    deadlock_retries: int = 3,
    before_commit: BeforeCommit | None = None,
) -> dict[str, int]:
    """Write one partition in a single transaction; return rows written per table.

    ``before_commit(conn, written)`` (:class:`WrittenPartition`) runs last in that transaction
    (e.g. verifying what was written); if it raises, nothing of the partition is committed.

    Shared tables report rows inserted + rows updated (artists whose winning source changed);
    track tables report rows inserted. ``frames`` maps each of the twelve ``msd_*`` table names
    to a DataFrame with exactly ``load_columns(table)``. Raises ``ValueError`` for invalid
    frames before touching the database; any database error rolls the partition back.
    """
    lo, hi = partition_track_range(partition_key)
    prepared = prepare_frames(frames, partition_key)
    return retry_deadlocks(
        lambda: _load_once(engine, lo, hi, prepared, chunk_rows, before_commit),
        f"partition {partition_key}",
        deadlock_retries,
        backend=backend_for(engine),
    )
