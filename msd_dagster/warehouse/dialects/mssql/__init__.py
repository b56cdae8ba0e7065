"""SQL Server / Azure SQL: schema ``dbo``, NVARCHAR text, ``MERGE`` upserts from ``#temp``
staging tables, ``sp_getapplock`` schema lock, ``SET LOCK_TIMEOUT`` at connect, and three bulk
paths:

* ``mssql+pyodbc``: ``fast_executemany`` with explicit ``setinputsizes`` (the driver cannot
  describe parameters of ``#temp`` tables and would otherwise bind NVARCHAR text as VARCHAR),
  in chunks bounded to 64 MiB of parameter buffer;
* ``mssql+mssqlpython``: multi-row ``VALUES`` statements with fewer than 2,100 parameters and
  at most 1,000 rows each, inside the load transaction; and for a partition's analysis rows,
  ``cursor.bulkcopy()`` into per-load staging tables before the transaction
  (:mod:`.bulkcopy`, which explains how the partition stays atomic).

Nothing here imports pyodbc or mssql-python at import time: ``import pyodbc`` fails on machines
without the unixODBC library, so it is imported when an ``mssql+pyodbc`` engine is created.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mssql as mssql_dialect

from msd_dagster.warehouse.dialects.base import (
    Backend,
    BulkJob,
    BulkPath,
    LockErrorKind,
    PartitionLockTimeout,
    StagedCopy,
    partition_lock_name,
    pop_query,
    query_value,
)
from msd_dagster.warehouse.dialects.mssql.bulkcopy import bulk_copy_to_staging, drop_temp_table_sql
from msd_dagster.warehouse.merge_rules import SOURCE_COLUMN, merge_columns
from msd_dagster.warehouse.rows import (
    column_kind,
    driver_errors,
    insert_sql,
    qualified_name,
    row_batches,
)

# Every warehouse table lives in this schema (``SELECT COUNT(1) FROM dbo.msd_bar``).
MSSQL_SCHEMA = "dbo"
# Key text compares by code point: also between the tables and the #temp staging tables, which
# live in tempdb, whose default collation may differ (no collation conflict).
MSSQL_BINARY_COLLATION = "Latin1_General_100_BIN2"

# SQL Server limits: 2,100 parameters per statement, 1,000 row constructors per VALUES.
MSSQL_MAX_PARAMETERS = 2_099
MSSQL_MAX_VALUES_ROWS = 1_000
# pyodbc fast_executemany allocates rows x declared column widths at once: cap that buffer.
MSSQL_FAST_EXECUTEMANY_BUFFER_BYTES = 64 * 1024 * 1024

# ODBC SQL type codes for pyodbc setinputsizes (from sql.h / sqlext.h; no pyodbc import needed).
SQL_VARCHAR = 12
SQL_WVARCHAR = -9
SQL_INTEGER = 4
SQL_SMALLINT = 5
SQL_BIGINT = -5
SQL_DOUBLE = 8
SQL_TYPE_TIMESTAMP = 93

# pyodbc connection attribute SQL_COPT_SS_ACCESS_TOKEN (msodbcsql.h).
SQL_COPT_SS_ACCESS_TOKEN = 1256
ACCESS_TOKEN_QUERY_KEYS = ("accesstoken", "access_token")
# The schema lock's own wait (sp_getapplock): longer than the lock timeout, since creating the
# tables may wait for another process creating them.
_SCHEMA_LOCK_WAIT_MS = 600_000
DEFAULT_BULKCOPY_TIMEOUT_S = 3600


class OdbcDriverMissingError(ImportError):
    """pyodbc (or the unixODBC library it links against) is not installed."""


# --------------------------------------------------------------------------------------------
# Connecting


def azure_access_token_connect_args(token: str) -> dict[str, Any]:
    """``connect_args`` passing an Entra ID access token to pyodbc.

    The ODBC driver wants the token as a length-prefixed UTF-16-LE byte string (the
    ``ACCESSTOKEN`` struct) in connection attribute 1256 (``SQL_COPT_SS_ACCESS_TOKEN``), set
    before connecting: ``create_engine(url, connect_args={"attrs_before": {1256: struct}})``.
    """
    if not token:
        raise ValueError("empty access token")
    encoded = token.encode("utf-16-le")
    token_struct = struct.pack(f"<I{len(encoded)}s", len(encoded), encoded)
    return {"attrs_before": {SQL_COPT_SS_ACCESS_TOKEN: token_struct}}


@dataclass(frozen=True)
class _AccessToken:
    token: str
    expires_on: int | None = None


@dataclass(frozen=True)
class StaticAccessToken:
    """An Entra ID access token as mssql-python's ``token_provider`` (an object with
    ``get_token(scope)``). mssql-python 1.16 hands a ``token_provider``'s token to the separate
    connection of ``cursor.bulkcopy()``; a raw token in ``attrs_before`` it does not."""

    token: str

    def get_token(self, *_scopes: str, **_kwargs: Any) -> _AccessToken:
        return _AccessToken(self.token)

    def __repr__(self) -> str:  # never show the token
        return "StaticAccessToken(***)"


def _import_pyodbc() -> Any:
    import pyodbc  # noqa: PLC0415 - deliberately lazy

    return pyodbc


def _require_pyodbc(driver_name: str | None) -> None:
    try:
        pyodbc = _import_pyodbc()
    except ImportError as exc:
        detail = str(exc)
        if "pyodbc" in detail and "No module named" in detail:
            cause = "the pyodbc package is not installed (pip install pyodbc)"
        else:
            cause = f"pyodbc cannot load the unixODBC library ({detail})"
        raise OdbcDriverMissingError(
            f"mssql+pyodbc: {cause}. Install the ODBC driver manager and Microsoft ODBC Driver "
            "18 for SQL Server - on Debian/Ubuntu add Microsoft's package repository "
            "(https://learn.microsoft.com/sql/connect/odbc/linux-mac/installing-the-microsoft-"
            "odbc-driver-for-sql-server), then `sudo ACCEPT_EULA=Y apt-get install -y "
            "msodbcsql18 unixodbc` - or use an mssql+mssqlpython:// URL "
            "(pip install mssql-python), whose driver needs no system ODBC installation."
        ) from exc
    if driver_name:
        installed = list(pyodbc.drivers())
        if driver_name not in installed:
            raise OdbcDriverMissingError(
                f"mssql+pyodbc: ODBC driver {driver_name!r} is not installed (installed: "
                f"{installed or 'none'}). On Debian/Ubuntu: `sudo ACCEPT_EULA=Y apt-get install -y "
                "msodbcsql18` from Microsoft's package repository, or use mssql+mssqlpython://."
            )


# --------------------------------------------------------------------------------------------
# Bulk paths


def mssql_input_sizes(
    columns: Sequence[sa.Column], dialect: sa.Dialect
) -> list[tuple[int, int, int]]:
    """pyodbc ``setinputsizes`` entries (sql type, size, decimal digits) for ``columns``."""
    sizes = []
    for column in columns:
        kind = column_kind(column)
        impl = column.type.dialect_impl(dialect)
        if kind == "text":
            length = getattr(impl, "length", None) or 0
            national = isinstance(impl, sa.Unicode | sa.NVARCHAR | sa.NCHAR)
            sizes.append((SQL_WVARCHAR if national else SQL_VARCHAR, length, 0))
        elif kind == "int":
            if isinstance(column.type, sa.BigInteger):
                sizes.append((SQL_BIGINT, 0, 0))
            elif isinstance(column.type, sa.SmallInteger):
                sizes.append((SQL_SMALLINT, 0, 0))
            else:
                sizes.append((SQL_INTEGER, 0, 0))
        elif kind == "float":
            sizes.append((SQL_DOUBLE, 0, 0))
        else:
            precision = getattr(impl, "precision", None)
            digits = 6 if precision is None else min(int(precision), 7)
            sizes.append((SQL_TYPE_TIMESTAMP, 20 + digits, digits))
    return sizes


def mssql_row_buffer_bytes(sizes: Sequence[tuple[int, int, int]]) -> int:
    """Bytes pyodbc's fast_executemany buffers per row (value + length indicator per column)."""
    total = 0
    for sql_type, size, _ in sizes:
        if sql_type == SQL_WVARCHAR:
            total += 2 * (size + 1)
        elif sql_type == SQL_VARCHAR:
            total += size + 1
        else:
            total += 16
        total += 8
    return total


def mssql_fast_chunk_rows(
    columns: Sequence[sa.Column], dialect: sa.Dialect, chunk_rows: int
) -> int:
    per_row = mssql_row_buffer_bytes(mssql_input_sizes(columns, dialect))
    return max(1, min(chunk_rows, MSSQL_FAST_EXECUTEMANY_BUFFER_BYTES // per_row))


def mssql_rows_per_statement(n_columns: int) -> int:
    """Rows per multi-row VALUES statement: < 2,100 parameters and <= 1,000 rows."""
    if n_columns > MSSQL_MAX_PARAMETERS:
        raise ValueError(f"{n_columns} columns exceed SQL Server's parameter limit")
    return max(1, min(MSSQL_MAX_VALUES_ROWS, MSSQL_MAX_PARAMETERS // n_columns))


def mssql_values_statements(
    dialect: sa.Dialect,
    table: sa.Table,
    columns: Sequence[sa.Column],
    rows: Sequence[tuple[Any, ...]],
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(SQL, flat parameters) of multi-row INSERTs covering ``rows``."""
    per_statement = mssql_rows_per_statement(len(columns))
    full_sql = insert_sql(dialect, table, columns, per_statement)
    for start in range(0, len(rows), per_statement):
        batch = rows[start : start + per_statement]
        sql = (
            full_sql
            if len(batch) == per_statement
            else insert_sql(dialect, table, columns, len(batch))
        )
        yield sql, tuple(v for row in batch for v in row)


def _mssql_fast_executemany(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
    dialect = conn.dialect
    sql = insert_sql(dialect, table, columns)
    sizes = mssql_input_sizes(columns, dialect)
    rows_per_call = mssql_fast_chunk_rows(columns, dialect, chunk_rows)
    raw = conn.connection.dbapi_connection
    written = 0
    with driver_errors(conn, sql), contextlib.closing(raw.cursor()) as cursor:
        cursor.fast_executemany = True
        for rows in row_batches(df, columns, rows_per_call, dialect):
            cursor.setinputsizes(sizes)
            cursor.executemany(sql, rows)
            written += len(rows)
    return written


def _mssql_values(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
    dialect = conn.dialect
    written = 0
    for rows in row_batches(df, columns, chunk_rows, dialect):
        for sql, params in mssql_values_statements(dialect, table, columns, rows):
            conn.exec_driver_sql(sql, params)
        written += len(rows)
    return written


def mssql_merge_sql(dialect: sa.Dialect, target: sa.Table, stage: sa.Table) -> str:
    """``MERGE`` implementing merge_rules."""
    keys, columns, _, is_artist = merge_columns(target, stage)
    q = dialect.identifier_preparer.quote
    t, s = qualified_name(dialect, target), qualified_name(dialect, stage)
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in keys)
    matched = ""
    if is_artist:
        src = q(SOURCE_COLUMN)
        wins = f"s.{src} IS NOT NULL AND (t.{src} IS NULL OR s.{src} <= t.{src})"
        # See merged_artist_value: the winner's non-NULL values replace, others fill NULLs.
        sets = ", ".join(
            f"t.{q(c)} = CASE WHEN {wins} THEN COALESCE(s.{q(c)}, t.{q(c)}) "
            f"ELSE COALESCE(t.{q(c)}, s.{q(c)}) END"
            for c in columns
            if c not in keys and c != SOURCE_COLUMN
        )
        matched = (
            f" WHEN MATCHED THEN UPDATE SET {sets}, "
            f"t.{src} = CASE WHEN {wins} THEN s.{src} ELSE t.{src} END"
        )
    elif len(columns) > len(keys):
        attributes = [c for c in columns if c not in keys]
        fillable = " OR ".join(f"(t.{q(c)} IS NULL AND s.{q(c)} IS NOT NULL)" for c in attributes)
        sets = ", ".join(f"t.{q(c)} = COALESCE(t.{q(c)}, s.{q(c)})" for c in attributes)
        matched = f" WHEN MATCHED AND ({fillable}) THEN UPDATE SET {sets}"
    # HOLDLOCK: serializable range locks, so a concurrent MERGE cannot insert the same key
    # between the match and the insert.
    return (
        f"MERGE INTO {t} WITH (HOLDLOCK) AS t USING {s} AS s ON {on}{matched}"
        f" WHEN NOT MATCHED BY TARGET THEN INSERT ({', '.join(q(c) for c in columns)})"
        f" VALUES ({', '.join(f's.{q(c)}' for c in columns)});"
    )


def _app_lock(conn: sa.Connection, resource: str, what: str, wait_ms: int | None = None) -> None:
    """An exclusive application lock held until the transaction ends. sp_getapplock raises
    nothing when it times out (``wait_ms``, else the session's LOCK_TIMEOUT) or is chosen as a
    deadlock victim: it returns -1 or -3, and the caller must not go on without the lock."""
    timeout = f", @LockTimeout = {int(wait_ms)}" if wait_ms is not None else ""
    got = conn.execute(
        sa.text(
            "DECLARE @result int; EXEC @result = sp_getapplock @Resource = :resource, "
            f"@LockMode = 'Exclusive', @LockOwner = 'Transaction'{timeout}; SELECT @result"
        ),
        {"resource": resource},
    ).scalar()
    if got is None or got < 0:
        raise PartitionLockTimeout(
            f"{what}: another load held its lock (sp_getapplock returned {got})"
        )


@dataclass(frozen=True)
class SQLServerBackend(Backend):
    """SQL Server and Azure SQL, through pyodbc or mssql-python (three bulk paths: module doc)."""

    name = "mssql"
    dialect_names = ("mssql",)
    display_name = "SQL Server"
    catalog_kind = "sqlserver"
    driver_packages = ("pyodbc", "mssql_python")
    table_schema = MSSQL_SCHEMA
    default_chunk_rows = 50_000
    default_lock_timeout_s = 60.0
    lock_timeout_setting = "LOCK_TIMEOUT"
    distinct_national_text = True
    upsert_sql = staticmethod(mssql_merge_sql)
    column_types = {
        "key_text": lambda t: mssql_dialect.NVARCHAR(t.length, collation=MSSQL_BINARY_COLLATION),
        "msd_id": lambda t: mssql_dialect.CHAR(t.length, collation=MSSQL_BINARY_COLLATION),
        # DATETIME would round microseconds away.
        "timestamp": lambda _: mssql_dialect.DATETIME2(precision=6),
    }
    fingerprint_dialect = mssql_dialect.dialect()
    # The storage engine's own row count (heap or clustered index): exact, no scan.
    row_count_method = "exact: sys.dm_db_partition_stats"
    row_count_query = (
        "SELECT OBJECT_NAME(object_id), SUM(row_count) FROM sys.dm_db_partition_stats "
        f"WHERE index_id IN (0, 1) AND OBJECT_SCHEMA_NAME(object_id) = '{MSSQL_SCHEMA}' "
        "AND OBJECT_NAME(object_id) IN :names GROUP BY object_id"
    )

    # mssql+mssqlpython: analysis rows through cursor.bulkcopy() (.bulkcopy); False keeps
    # them on the multi-row VALUES path inside the transaction.
    bulkcopy: bool = True
    bulkcopy_timeout_s: int = DEFAULT_BULKCOPY_TIMEOUT_S

    def engine_options(
        self, url: sa.URL, options: dict[str, Any], connect_args: dict[str, Any]
    ) -> sa.URL:
        url, token = pop_query(url, ACCESS_TOKEN_QUERY_KEYS)
        if self.driver == "mssqlpython":
            # mssql-python refuses ODBC keywords it controls (Driver) or does not know
            # (ConnectTimeout: its login timeout is the connect() argument).
            url, _ = pop_query(url, ("driver",))
            url, timeout = pop_query(url, ("connecttimeout",))
            if timeout:
                connect_args.setdefault("timeout", int(timeout))
            if token:
                connect_args.setdefault("token_provider", StaticAccessToken(token))
            return url
        if self.driver == "pyodbc":
            _require_pyodbc(query_value(url.query, "driver"))
            options.setdefault("fast_executemany", True)
            timeout = query_value(url.query, "ConnectTimeout")
            if timeout and "timeout" not in connect_args:
                connect_args["timeout"] = int(timeout)  # ODBC drivers before 18.7
        if token:
            attrs = dict(connect_args.get("attrs_before") or {})
            attrs.update(azure_access_token_connect_args(token)["attrs_before"])
            connect_args["attrs_before"] = attrs
        return url

    def configure_engine(self, engine: sa.Engine) -> None:
        if self.lock_timeout_s is None:
            return
        statement = f"SET LOCK_TIMEOUT {int(self.lock_timeout_s * 1000)}"

        # A session setting, not undone by a rollback, so once per connection is enough.
        @event.listens_for(engine, "connect")
        def _set_lock_timeout(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()

    def lock_schema(self, conn: sa.Connection) -> None:
        _app_lock(conn, "msd_dagster_schema", "the schema", _SCHEMA_LOCK_WAIT_MS)

    def lock_partition(self, conn: sa.Connection, partition_key: str) -> None:
        _app_lock(conn, partition_lock_name(partition_key), f"partition {partition_key}")

    def bulk_path(self, conn: sa.Connection) -> BulkPath:
        if self.driver == "pyodbc" and getattr(conn.dialect, "fast_executemany", False):
            return _mssql_fast_executemany
        return _mssql_values

    @property
    def stages_outside_transaction(self) -> bool:
        return self.bulkcopy and self.driver == "mssqlpython"

    def stage_copies(
        self, conn: sa.Connection, frames: Mapping[sa.Table, pd.DataFrame], chunk_rows: int
    ) -> contextlib.AbstractContextManager[Mapping[str, StagedCopy]]:
        return bulk_copy_to_staging(conn, frames, chunk_rows, timeout_s=self.bulkcopy_timeout_s)

    def stage_name(self, target: sa.Table) -> str:
        return "#" + super().stage_name(target)  # local temp table: private to the session

    def stage_table_kwargs(self) -> dict[str, Any]:
        return {}

    def drop_stage_sql(self, dialect: sa.Dialect, stage: sa.Table) -> str:
        return drop_temp_table_sql(dialect, stage.name)

    @classmethod
    def lock_error(cls, orig: BaseException) -> LockErrorKind | None:
        # pyodbc appends the native error number, "(1205)"; mssql-python gives the text only.
        message = str(orig)
        if "deadlock" in message.lower() and ("(1205)" in message or "victim" in message):
            return "deadlock"
        if "(1222)" in message or "Lock request time out period exceeded" in message:
            return "lock timeout"
        return None
