"""Load one partition (an ``X/Y`` folder of song files) into the ``msd_*`` tables atomically.

One transaction per partition:

1. Shared, artist-level tables are upserted from temporary staging tables
   (:mod:`msd_dagster.warehouse.staging`, with the rules of
   :mod:`msd_dagster.warehouse.merge_rules`): rows whose natural key is missing are inserted,
   nothing is ever deleted, and the result does not depend on load order.
2. The partition's track rows are replaced: deleted from the five analysis tables and
   ``msd_track`` by track-id range (or, where an analysis table keeps the partition in a
   physical partition of its own, on PostgreSQL, that partition is truncated), then
   bulk-inserted.

The frames may come in chunks of tracks (:func:`load_partition_stream`): the old track rows
are deleted first, each chunk's analysis rows are written before the next chunk is read, and
the small frames (``msd_track``, the shared tables) are written after the last chunk, so a
load's memory follows its chunk, not its partition. It is still one transaction.

Any failure rolls everything back, so the previous contents stay intact; rerunning a partition
with the same frames gives the same contents. Deadlocks and lock timeouts between concurrent
loads are retried (the whole transaction, which is safe because it is all-or-nothing).

With ``mssql+mssqlpython`` the analysis rows are bulk-copied before the transaction and moved
in it (:mod:`msd_dagster.warehouse.dialects.mssql.bulkcopy`), so the same holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    SHARED_TABLE_NAMES,
    SHARED_TABLES,
    TABLES_BY_NAME,
    TRACK_TABLE_NAMES,
    TRACK_TABLES,
    load_columns,
)
from msd_dagster.warehouse.staging import upsert_shared
from msd_dagster.warehouse.transactions import (
    invalidate_if_disconnected,
    open_load_connection,
    retry_deadlocks,
)
from msd_dagster.warehouse.verify import FrameKeys

__all__ = [
    "PartitionFrames",
    "WholeFrames",
    "load_partition",
    "load_partition_stream",
    "prepare_frames",
    "prepare_shared",
    "prepare_track_chunk",
]


# --------------------------------------------------------------------------------------------
# Frames


class PartitionFrames(Protocol):
    """A partition's twelve frames as a load reads them: the track tables in chunks, then the
    shared tables whole. A load reads them once per attempt (a retried transaction asks its
    ``open_frames`` for a fresh pass)."""

    def track_chunks(self) -> Iterable[Mapping[str, pd.DataFrame]]:
        """``msd_track`` and the five analysis tables, chunk by chunk; a track and its
        analysis rows are in one chunk."""
        ...

    def shared_frames(self) -> Mapping[str, pd.DataFrame]:
        """The six shared tables, whole; asked once every chunk has been read."""
        ...


@dataclass(frozen=True)
class WholeFrames:
    """The twelve frames at once, as one chunk."""

    frames: Mapping[str, pd.DataFrame]

    def track_chunks(self) -> Iterable[Mapping[str, pd.DataFrame]]:
        return [{name: self.frames[name] for name in TRACK_TABLE_NAMES}]

    def shared_frames(self) -> Mapping[str, pd.DataFrame]:
        return {name: self.frames[name] for name in SHARED_TABLE_NAMES}


def _check_names(frames: Mapping[str, pd.DataFrame], expected: Sequence[str], what: str) -> None:
    missing = sorted(set(expected) - set(frames))
    unknown = sorted(set(frames) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"frames must be keyed by the {what}: missing {missing or 'none'}, "
            f"unknown {unknown or 'none'}"
        )


def _prepare_table(name: str, df: pd.DataFrame, partition_key: str) -> pd.DataFrame:
    table = TABLES_BY_NAME[name]
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
        lo, hi = partition_track_range(partition_key)
        track_ids = df["track_id"]
        outside = ~((track_ids >= lo) & (track_ids < hi))
        if outside.any():
            examples = list(track_ids[outside].astype(str).unique()[:3])
            raise ValueError(
                f"frame {name}: {int(outside.sum())} row(s) outside partition {partition_key} "
                f"(track ids must start with {lo!r}), e.g. {examples}"
            )
        return df
    if name == "msd_artist":
        df = df.sort_values(["artist_id", SOURCE_COLUMN], na_position="last", kind="stable")
    else:
        df = df.sort_values(keys, kind="stable")
    return df.drop_duplicates(subset=keys, keep="first")


def _check_references(prepared: Mapping[str, pd.DataFrame]) -> None:
    for ref in CHECKED_REFERENCES:  # no database constraint catches these (schema docstring)
        child = prepared[ref.table][ref.column]
        unknown = ~child.isin(prepared[ref.parent_table][ref.parent_column])
        if unknown.any():
            examples = list(child[unknown].astype(str).unique()[:3])
            raise ValueError(
                f"frame {ref.table}: {int(unknown.sum())} row(s) whose {ref.column} is not in "
                f"the {ref.parent_table} frame of this partition, e.g. {examples}"
            )


def prepare_track_chunk(
    frames: Mapping[str, pd.DataFrame], partition_key: str
) -> dict[str, pd.DataFrame]:
    """Validate one chunk of the six track tables (see :func:`prepare_frames`); its analysis
    rows must belong to its own ``msd_track`` rows."""
    _check_names(frames, TRACK_TABLE_NAMES, "six track tables")
    prepared = {name: _prepare_table(name, frames[name], partition_key) for name in frames}
    _check_references(prepared)
    return prepared


def prepare_shared(
    frames: Mapping[str, pd.DataFrame], partition_key: str
) -> dict[str, pd.DataFrame]:
    """Validate, sort and deduplicate the six shared tables (see :func:`prepare_frames`)."""
    _check_names(frames, SHARED_TABLE_NAMES, "six shared msd_* tables")
    return {name: _prepare_table(name, frames[name], partition_key) for name in SHARED_TABLE_NAMES}


def prepare_frames(
    frames: Mapping[str, pd.DataFrame], partition_key: str
) -> dict[str, pd.DataFrame]:
    """Validate the twelve frames and put their columns in table order.

    Track tables must only hold track ids of the partition (a stray row would survive a rerun
    of this partition and be deleted by another's). Shared tables are sorted by natural key
    (consistent lock order between concurrent loads) and deduplicated: ``msd_artist`` keeps the
    row with the smallest ``source_track_id`` (NULL last), other tables the first occurrence.
    """
    _check_names(frames, list(TABLES_BY_NAME), "twelve msd_* tables")
    prepared = {name: _prepare_table(name, frames[name], partition_key) for name in TABLES_BY_NAME}
    _check_references(prepared)
    return prepared


# --------------------------------------------------------------------------------------------
# The load


@dataclass(frozen=True)
class WrittenPartition:
    """What a load wrote, as ``before_commit`` sees it: what the checks need of the frames as
    loaded (validated, deduplicated; :class:`~msd_dagster.warehouse.verify.FrameKeys`) and,
    per shared table, the staged keys the table still lacked after the merge (0 unless
    something is wrong)."""

    frames: FrameKeys
    shared_missing: Mapping[str, int]


BeforeCommit = Callable[[sa.Connection, WrittenPartition], None]


def _whole(chunks: Iterable[Mapping[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Every chunk in one (for a bulk copy that must have all rows before the transaction)."""
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in TRACK_TABLE_NAMES}
    for chunk in chunks:
        for name in TRACK_TABLE_NAMES:
            parts[name].append(chunk[name])
    return {
        name: pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        for name, frames in parts.items()
        if frames
    }


def _load_once(
    engine: sa.Engine,
    partition_key: str,
    open_frames: Callable[[], PartitionFrames],
    chunk_rows: int | None,
    before_commit: BeforeCommit | None = None,
) -> dict[str, int]:
    dialect = engine.dialect
    backend = backend_for(engine)
    lo, hi = partition_track_range(partition_key)
    counts: dict[str, int] = dict.fromkeys(TRACK_TABLE_NAMES, 0)
    missing: dict[str, int] = {}
    by_folder = [t.name for t in ANALYSIS_TABLES]
    own_partitions = backend.own_partition_tables(engine, partition_key, by_folder)
    with open_load_connection(engine) as conn:
        try:
            source = open_frames()
            # Each chunk validated once, as it is read (a concatenation stays valid).
            chunks: Iterable[Mapping[str, pd.DataFrame]] = (
                prepare_track_chunk(chunk, partition_key) for chunk in source.track_chunks()
            )
            outside: dict[sa.Table, pd.DataFrame] = {}
            if backend.stages_outside_transaction:
                # Its bulk copy cannot join the transaction: the whole partition is staged first.
                whole = _whole(chunks)
                chunks = [whole]
                outside = {warehouse_table(dialect, t): whole[t.name] for t in ANALYSIS_TABLES}
            with (
                backend.copy_outside_transaction(conn, outside, chunk_rows) as staged,
                conn.begin(),
            ):
                backend.lock_partition(conn, partition_key)
                for table in reversed(TRACK_TABLES):  # children before msd_track
                    target = warehouse_table(dialect, table)
                    if table.name in own_partitions:
                        own = dialect.identifier_preparer.quote(own_partitions[table.name])
                        conn.exec_driver_sql(f"TRUNCATE TABLE {own}")
                    else:
                        conn.execute(
                            sa.delete(target).where(target.c.track_id >= lo, target.c.track_id < hi)
                        )
                # The analysis rows chunk by chunk (no constraint ties them to msd_track, whose
                # rows need their artists first), the small frames once every chunk is read.
                keys = FrameKeys()
                tracks: list[pd.DataFrame] = []
                for prepared in chunks:
                    for table in ANALYSIS_TABLES:
                        target = warehouse_table(dialect, table)
                        if table.name in staged:
                            counts[table.name] += staged[table.name].insert_into(conn, target)
                        else:
                            counts[table.name] += bulk_insert(
                                conn, target, prepared[table.name], chunk_rows=chunk_rows
                            )
                    keys.add_track_chunk(prepared)
                    tracks.append(prepared["msd_track"])
                    del prepared  # the next chunk is built without this one in memory
                shared = prepare_shared(source.shared_frames(), partition_key)
                for table in SHARED_TABLES:
                    target = warehouse_table(dialect, table)
                    upserted = upsert_shared(conn, target, shared[table.name], chunk_rows)
                    counts[table.name], missing[table.name] = upserted
                if tracks:
                    track_table = warehouse_table(dialect, "msd_track")
                    track_frame = pd.concat(tracks, ignore_index=True)
                    counts["msd_track"] = bulk_insert(
                        conn, track_table, track_frame, chunk_rows=chunk_rows
                    )
                keys.set_shared(shared)
                if before_commit is not None:  # raising rolls the whole partition back
                    before_commit(conn, WrittenPartition(keys, missing))
        except BaseException as exc:
            invalidate_if_disconnected(conn, exc)
            raise
        finally:
            backend.release_partition(conn, partition_key)
    return counts


def load_partition_stream(
    engine: sa.Engine,
    partition_key: str,
    open_frames: Callable[[], PartitionFrames],
    *,
    chunk_rows: int | None = None,
    deadlock_retries: int = 3,
    before_commit: BeforeCommit | None = None,
) -> dict[str, int]:
    """Write one partition in a single transaction, chunk by chunk; return rows written per
    table.

    ``open_frames()`` gives one pass over the partition's frames (:class:`PartitionFrames`);
    each chunk of analysis rows is validated and written before the next is read, so memory
    follows the chunk, not the partition. The partition's track rows are deleted first, its
    shared rows upserted and its ``msd_track`` rows inserted after the last chunk, then
    ``before_commit(conn, written)`` (:class:`WrittenPartition`) runs. Any error, in the
    frames or in the database, rolls the whole partition back.
    """
    return retry_deadlocks(
        lambda: _load_once(engine, partition_key, open_frames, chunk_rows, before_commit),
        f"partition {partition_key}",
        deadlock_retries,
        backend=backend_for(engine),
    )


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
    prepared = WholeFrames(prepare_frames(frames, partition_key))
    return load_partition_stream(
        engine,
        partition_key,
        lambda: prepared,
        chunk_rows=chunk_rows,
        deadlock_retries=deadlock_retries,
        before_commit=before_commit,
    )
