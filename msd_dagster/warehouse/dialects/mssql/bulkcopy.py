"""SQL Server bulk copy through mssql-python's ``cursor.bulkcopy()``, atomic per partition.

What the driver does (mssql-python 1.16.0, ``mssql_python/cursor.py``): ``Cursor.bulkcopy``
parses the connection's connection string (``Cursor._build_pycore_context``), opens a **new**
connection with it (``mssql_py_core.PyCoreConnection``) and closes that connection when done
(``Cursor._bulkcopy_teardown``). So the rows are written by another session: they never join
the calling connection's transaction, that session commits them itself, a ``#local`` temp table
of the calling session is invisible to it, and the DDL it needs must be committed first.

A partition load with ``mssql+mssqlpython`` therefore keeps the partition atomic this way:

1. before the load transaction, one global temp table per analysis table,
   ``##msd_load_<table>_<token>`` (the target's loaded columns, no constraints), created and
   **committed** by the load's own connection;
2. ``cursor.bulkcopy()`` of the frame into it (the separate session; no target is touched);
3. in the load's single transaction, after the shared upserts and the DELETE of the partition's
   rows: ``INSERT INTO dbo.<table> (...) SELECT ... FROM ##...`` (row count checked), then
   ``DROP TABLE ##...``; then the COMMIT.

A failure before the COMMIT rolls the transaction back (the previous contents stay) and the
staging tables are dropped on the way out. If the process dies instead, the server rolls the
transaction back and drops the ``##`` tables with the session that created them. The token
makes the names unique per load, so a staging table the server has not dropped yet (a dead
session not yet noticed) never collides with a rerun.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from msd_dagster.secrets import mask_text
from msd_dagster.warehouse.rows import (
    BulkInsertError,
    driver_errors,
    insert_columns,
    qualified_name,
    row_batches,
)

GLOBAL_STAGE_PREFIX = "##msd_load_"


@dataclass
class GlobalTempStage:
    """Rows of one table bulk-copied into the ``##`` table ``name``, waiting for the load
    transaction."""

    name: str
    columns: tuple[str, ...]
    rows: int
    dropped: bool = False

    def insert_into(self, conn: sa.Connection, target: sa.Table) -> int:
        """Move the rows into ``target`` and drop the staging table, in ``conn``'s transaction
        (so both are undone by a rollback, and done by the COMMIT)."""
        dialect = conn.dialect
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in self.columns)
        moved = conn.exec_driver_sql(
            f"INSERT INTO {qualified_name(dialect, target)} ({names}) "
            f"SELECT {names} FROM {quote(self.name)}"
        ).rowcount
        if moved >= 0 and moved != self.rows:  # -1: the driver did not report it
            raise BulkInsertError(
                f"{target.name}: {moved} rows moved from {self.name}, {self.rows} bulk-copied"
            )
        conn.exec_driver_sql(f"DROP TABLE {quote(self.name)}")
        self.dropped = True
        return self.rows


def drop_temp_table_sql(dialect: sa.Dialect, name: str) -> str:
    """Drop the ``#`` / ``##`` temp table ``name`` if it exists (SQL Server)."""
    quoted = dialect.identifier_preparer.quote(name)
    return f"IF OBJECT_ID('tempdb..{name}') IS NOT NULL DROP TABLE {quoted}"


def _drop_staging(conn: sa.Connection, stages: list[GlobalTempStage]) -> None:
    """Best effort, after a failure or for a stage the load did not use: a connection the
    server lost needs nothing (the ``##`` tables went with its session)."""
    if conn.invalidated or conn.closed:
        return
    with contextlib.suppress(Exception):
        if conn.in_transaction():
            conn.rollback()
        # Also at the driver: after a failed COMMIT, SQLAlchemy no longer sees a transaction,
        # but the session may still hold it open; the COMMIT below must never commit it.
        conn.connection.dbapi_connection.rollback()
        for stage in stages:
            conn.exec_driver_sql(drop_temp_table_sql(conn.dialect, stage.name))
        conn.commit()


def supports_bulkcopy(conn: sa.Connection) -> bool:
    """The connection's driver has ``cursor.bulkcopy`` (mssql-python 1.x with mssql-py-core)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        return callable(getattr(cursor, "bulkcopy", None))
    finally:
        cursor.close()


def _bulkcopy(
    conn: sa.Connection,
    stage: GlobalTempStage,
    columns: list[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
    timeout_s: int,
) -> None:
    dialect = conn.dialect
    rows = (row for batch in row_batches(df, columns, chunk_rows, dialect) for row in batch)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with driver_errors(conn, f"bulkcopy {stage.name}"):
            try:
                result = cursor.bulkcopy(
                    stage.name,
                    rows,
                    batch_size=chunk_rows,
                    timeout=timeout_s,
                    column_mappings=list(stage.columns),
                    table_lock=True,  # the staging table is this load's alone
                    keep_nulls=True,
                )
            except dialect.loaded_dbapi.Error:
                raise  # driver_errors makes it a SQLAlchemy error
            except Exception as exc:  # mssql-py-core raises plain RuntimeError / ValueError
                raise BulkInsertError(
                    mask_text(f"bulk copy into {stage.name} failed: {type(exc).__name__}: {exc}")
                ) from exc
    finally:
        cursor.close()
    copied = (result or {}).get("rows_copied")
    if copied is not None and int(copied) != stage.rows:
        raise BulkInsertError(f"bulk copy into {stage.name}: {copied} of {stage.rows} rows copied")


@contextlib.contextmanager
def bulk_copy_to_staging(
    conn: sa.Connection,
    frames: Mapping[sa.Table, pd.DataFrame],
    chunk_rows: int,
    *,
    timeout_s: int,
) -> Iterator[dict[str, GlobalTempStage]]:
    """Steps 1 and 2 of the module doc for ``frames`` (target table -> rows); yields the
    stages by table name for step 3. ``conn`` must not be in a transaction; nothing is staged
    (and every table stays on the in-transaction path) when the driver has no bulk copy."""
    if not supports_bulkcopy(conn):
        yield {}
        return
    token = secrets.token_hex(6)
    staged: dict[str, GlobalTempStage] = {}
    copies: list[tuple[GlobalTempStage, list[sa.Column], pd.DataFrame]] = []
    try:
        for target, df in frames.items():
            if df.empty:
                continue
            columns = insert_columns(target, df)
            stage = GlobalTempStage(
                f"{GLOBAL_STAGE_PREFIX}{target.name}_{token}",
                tuple(c.name for c in columns),
                len(df),
            )
            # No constraints: a heap that bulk copy fills under one table lock; the target's
            # keys check the rows in the INSERT ... SELECT.
            definition = [sa.Column(c.name, c.type) for c in columns]
            conn.execute(sa.schema.CreateTable(sa.Table(stage.name, sa.MetaData(), *definition)))
            staged[target.name] = stage
            copies.append((stage, columns, df))
        conn.commit()  # the bulk copy session only sees committed tables
        for stage, columns, df in copies:
            _bulkcopy(conn, stage, columns, df, chunk_rows, timeout_s)
        yield staged
    except BaseException:
        _drop_staging(conn, list(staged.values()))
        raise
    unused = [s for s in staged.values() if not s.dropped]
    if unused:
        _drop_staging(conn, unused)
