"""Compare what a partition load wrote with the frames it was given: the checks' logic.

Per table, for one partition:

* ``database_rows``: rows of the partition in the database (see :mod:`.queries` for what a
  partition's rows are in shared tables);
* ``missing_keys``: natural keys of the frame that the database lacks (must be 0), exact, but
  for the analysis tables computed from per-track position ranges (``_missing_positions``);
* ``rows_ok``: track tables must hold exactly the frame's rows; shared tables (artists, their
  terms, tags and similar artists, the dictionaries) must hold at least every frame row, since
  other partitions add to them;
* ``duplicates`` / ``orphans``: repeated natural keys and unresolved foreign keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.queries import (
    count_duplicate_natural_keys,
    count_orphan_foreign_keys,
    count_rows,
    partition_filter,
    total_tracks,
)
from msd_dagster.warehouse.schema import MSD_TABLES, NATURAL_KEYS, TRACK_TABLES

TRACK_TABLE_NAMES = frozenset(t.name for t in TRACK_TABLES)
ANALYSIS_TABLE_NAMES = TRACK_TABLE_NAMES - {"msd_track"}
# Beyond this many tracks an IN list gets long (SQL Server allows 2,100 parameters).
MAX_TRACKS_FETCHED_BY_ID = 500
# Shared tables whose partition rows cannot be found by a filter; their keys are read whole.
WHOLE_TABLE_KEYS = frozenset({"msd_artist", "msd_r_term", "msd_r_mbtag"})

__all__ = ["TableVerdict", "table_totals", "total_tracks", "verify_partition"]


@dataclass(frozen=True)
class TableVerdict:
    table: str
    frame_rows: int
    database_rows: int
    missing_keys: int
    duplicates: int
    orphans: int

    @property
    def rows_ok(self) -> bool:
        if self.table in TRACK_TABLE_NAMES:
            return self.database_rows == self.frame_rows and self.missing_keys == 0
        return self.missing_keys == 0

    @property
    def passed(self) -> bool:
        return self.rows_ok and self.duplicates == 0 and self.orphans == 0


def _fetch_keys(conn: sa.Connection, table: sa.Table, keys: list[str], condition) -> pd.DataFrame:
    statement = sa.select(*[table.c[k] for k in keys])
    if condition is not None:
        statement = statement.where(condition)
    # Plain tuples: given SQLAlchemy Rows, pandas probes each one through Row's (slow,
    # exception-raising) attribute fallback.
    rows = [tuple(row) for row in conn.execute(statement)]
    return pd.DataFrame.from_records(rows, columns=keys)


def _count_absent(expected: pd.DataFrame, in_database: pd.DataFrame, keys: list[str]) -> int:
    expected = expected[keys].astype("string").drop_duplicates()
    in_database = in_database[keys].astype("string").drop_duplicates()
    merged = expected.merge(in_database, on=keys, how="left", indicator=True)
    return int((merged["_merge"] == "left_only").sum())


def _missing_keys(
    conn: sa.Connection, table_name: str, partition_key: str, frame: pd.DataFrame
) -> int:
    if frame.empty:
        return 0
    table = warehouse_table(conn, table_name)
    if table_name in ANALYSIS_TABLE_NAMES:
        return _missing_positions(conn, table, partition_key, frame)
    keys = list(NATURAL_KEYS[table_name])
    condition = None
    if table_name not in WHOLE_TABLE_KEYS:
        condition = partition_filter(conn, table, partition_key)
    return _count_absent(frame, _fetch_keys(conn, table, keys, condition), keys)


def _position_ranges(track_ids: pd.Series, positions: pd.Series) -> pd.DataFrame:
    grouped = positions.groupby(track_ids.to_numpy())
    return pd.DataFrame(
        {"distinct": grouped.nunique(), "first": grouped.min(), "last": grouped.max()}
    )


def _missing_positions(
    conn: sa.Connection, table: sa.Table, partition_key: str, frame: pd.DataFrame
) -> int:
    """Frame keys ``(track_id, position)`` absent from the database, exactly, without reading
    the partition's ~850,000 keys: per track, the database's distinct positions and their
    range. Where both the frame's and the database's positions of a track are gap-free ranges
    (always, unless something else wrote the table), the missing keys are the frame's range
    minus the overlap; other tracks' keys are fetched and compared one by one.
    """
    track_column, position_column = NATURAL_KEYS[table.name]
    position = table.c[position_column]
    statement = (
        sa.select(
            table.c.track_id,
            sa.func.count(sa.distinct(position)),
            sa.func.min(position),
            sa.func.max(position),
        )
        .where(partition_filter(conn, table, partition_key))
        .group_by(table.c.track_id)
    )
    rows = [tuple(row) for row in conn.execute(statement)]
    in_database = pd.DataFrame.from_records(
        rows, columns=["track_id", "distinct_db", "first_db", "last_db"], index="track_id"
    )
    expected = _position_ranges(frame[track_column], frame[position_column])
    both = expected.join(in_database, how="left")
    absent = both["distinct_db"].isna()
    gap_free = (both["distinct"] == both["last"] - both["first"] + 1) & (
        both["distinct_db"] == both["last_db"] - both["first_db"] + 1
    )
    overlap = (
        both[["last", "last_db"]].min(axis=1) - both[["first", "first_db"]].max(axis=1) + 1
    ).clip(lower=0)
    missing = int(both.loc[absent, "distinct"].sum())
    simple = gap_free & ~absent
    missing += int((both.loc[simple, "distinct"] - overlap[simple]).sum())
    other = both.index[~simple & ~absent]
    if len(other):
        keys = [track_column, position_column]
        condition = (
            table.c.track_id.in_(list(other))
            if len(other) <= MAX_TRACKS_FETCHED_BY_ID
            else partition_filter(conn, table, partition_key)
        )
        fetched = _fetch_keys(conn, table, keys, condition)
        missing += _count_absent(frame[frame[track_column].isin(other)], fetched, keys)
    return missing


def verify_partition(
    engine: sa.Engine, partition_key: str, frames: Mapping[str, pd.DataFrame]
) -> list[TableVerdict]:
    """One verdict per msd_* table for the partition."""
    verdicts = []
    with engine.connect() as conn:
        for table in MSD_TABLES:
            name = table.name
            verdicts.append(
                TableVerdict(
                    table=name,
                    frame_rows=len(frames[name]),
                    database_rows=count_rows(conn, name, partition_key),
                    missing_keys=_missing_keys(conn, name, partition_key, frames[name]),
                    duplicates=count_duplicate_natural_keys(conn, name, partition_key),
                    orphans=count_orphan_foreign_keys(conn, name, partition_key),
                )
            )
    return verdicts


def table_totals(engine: sa.Engine) -> dict[str, int]:
    """Rows per msd_* table in the whole database."""
    with engine.connect() as conn:
        return {table.name: count_rows(conn, table.name) for table in MSD_TABLES}
