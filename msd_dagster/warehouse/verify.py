"""Compare what a partition load wrote with the frames it was given: the checks' logic.

Per table, for one partition:

* ``database_rows``: rows of the partition in the database (see :mod:`.queries` for what a
  partition's rows are in shared tables);
* ``missing_keys``: natural keys of the frame that the database lacks (must be 0);
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


def _missing_keys(
    conn: sa.Connection, table_name: str, partition_key: str, frame: pd.DataFrame
) -> int:
    if frame.empty:
        return 0
    keys = list(NATURAL_KEYS[table_name])
    table = warehouse_table(conn, table_name)
    statement = sa.select(*[table.c[k] for k in keys])
    if table_name not in WHOLE_TABLE_KEYS:
        condition = partition_filter(conn, table, partition_key)
        if condition is not None:
            statement = statement.where(condition)
    # Plain tuples: given SQLAlchemy Rows, pandas probes each one through Row's (slow,
    # exception-raising) attribute fallback, which took most of the checks' time.
    rows = [tuple(row) for row in conn.execute(statement)]
    in_database = pd.DataFrame.from_records(rows, columns=keys)
    in_database = in_database.astype("string")
    expected = frame[keys].astype("string").drop_duplicates()
    merged = expected.merge(in_database.drop_duplicates(), on=keys, how="left", indicator=True)
    return int((merged["_merge"] == "left_only").sum())


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
