"""Bulk-insert a DataFrame into one table, with the fastest exact path of the engine's backend.

``bulk_insert(conn, table, df)`` writes inside the caller's transaction and processes the frame
in chunks (the backend's ``default_chunk_rows`` unless given), so memory stays bounded by the
chunk size whatever the frame size. The paths live with their backends
(:mod:`msd_dagster.warehouse.dialects`): PostgreSQL binary COPY, MySQL/MariaDB LOAD DATA LOCAL
INFILE, SQL Server fast_executemany or multi-row VALUES, SQLite executemany; the value
conversion they share is :mod:`msd_dagster.warehouse.rows`.

SQL Server's ``cursor.bulkcopy()`` (mssql-python) cannot write inside the caller's transaction,
so it is not a path of this function: partition loads use it through
``Backend.copy_outside_transaction`` (see :mod:`.dialects.mssql.bulkcopy`).
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.dialects import backend_for
from msd_dagster.warehouse.dialects.base import BulkJob
from msd_dagster.warehouse.rows import (
    BulkInsertError,
    insert_columns,
)

__all__ = [
    "bulk_insert",
]


def bulk_insert(
    conn: sa.Connection, table: sa.Table, df: pd.DataFrame, *, chunk_rows: int | None = None
) -> int:
    """Insert every row of ``df`` into ``table`` within ``conn``'s transaction; return the count.

    ``df`` must hold exactly the table's non-identity columns (any order). The caller owns the
    transaction: nothing is committed here.
    """
    columns = insert_columns(table, df)
    if len(df) == 0:
        return 0
    backend = backend_for(conn)
    job = BulkJob(conn, table, columns, df, backend.chunk_rows(chunk_rows))
    written = backend.bulk_path(conn)(job)
    if written != len(df):
        raise BulkInsertError(f"{table.name}: wrote {written} rows, expected {len(df)}")
    return written
