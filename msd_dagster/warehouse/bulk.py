"""Bulk-insert a DataFrame into one table, with the fastest exact path of each dialect.

``bulk_insert(conn, table, df)`` writes inside the caller's transaction and processes the frame
in chunks, so memory stays bounded by the chunk size whatever the frame size:

* PostgreSQL (psycopg 3): ``COPY ... FROM STDIN (FORMAT BINARY)``; floats travel as IEEE
  doubles, so they are bit-exact.
* MySQL/MariaDB (PyMySQL): ``LOAD DATA LOCAL INFILE`` of a CSV chunk written by Arrow
  (shortest round-trip float text) when the connection allows local infile, with the row count
  and warnings checked (LOCAL turns errors into warnings); otherwise multi-row INSERTs sized
  under ``max_allowed_packet``.
* SQL Server: pyodbc ``fast_executemany`` with explicit ``setinputsizes`` (the driver cannot
  describe parameters of ``#temp`` tables and would otherwise bind NVARCHAR text as VARCHAR);
  other drivers (``mssql+mssqlpython``) use multi-row ``VALUES`` statements with fewer than
  2,100 parameters and at most 1,000 rows each.
* SQLite: ``executemany``.

Values: NaN / NA / NaT become NULL; integers, floats, text and timestamps are converted to the
column's Python type column by column (vectorized), never formatted through ``str(float)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.ddl import qualified_name

# Rows converted and sent per chunk (bounded memory). Narrow analysis rows are ~60 bytes.
DEFAULT_CHUNK_ROWS: dict[str, int] = {
    "postgresql": 100_000,
    "mysql": 100_000,
    "mariadb": 100_000,
    "sqlite": 100_000,
    "mssql": 50_000,
}
FALLBACK_CHUNK_ROWS = 10_000

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

_MYSQL_LOCAL_INFILE_KEY = "msd_mysql_local_infile"
_MYSQL_MAX_PACKET_KEY = "msd_mysql_max_allowed_packet"


class BulkInsertError(RuntimeError):
    """The database accepted fewer rows than sent, or reported data warnings."""


# --------------------------------------------------------------------------------------------
# DataFrame -> column values


@dataclass(frozen=True)
class ColumnData:
    """One column of a chunk, normalized for its SQL type.

    ``values``: float64, int64, object (str) or datetime64[us]; ``mask``: True where NULL
    (``None`` when nothing is NULL).
    """

    name: str
    kind: str
    values: np.ndarray
    mask: np.ndarray | None

    def objects(self) -> np.ndarray:
        """Native Python values (float, int, str, datetime) with None for NULL."""
        # astype(object): numpy scalars -> Python float / int / datetime
        out = self.values if self.kind == "text" else self.values.astype(object)
        if self.mask is not None:
            if out is self.values:
                out = out.copy()
            out[self.mask] = None
        return out

    def arrow(self) -> Any:
        import pyarrow as pa

        if self.kind == "text":
            return pa.array(self.objects(), type=pa.string())
        arrow_type = {
            "float": pa.float64(),
            "int": pa.int64(),
            "datetime": pa.timestamp("us"),
        }[self.kind]
        return pa.array(self.values, type=arrow_type, mask=self.mask)


def column_kind(column: sa.Column) -> str:
    """float / int / text / datetime, from the column's SQL type."""
    type_ = column.type
    if isinstance(type_, sa.Float):
        return "float"
    if isinstance(type_, sa.Integer):
        return "int"
    if isinstance(type_, sa.String):
        return "text"
    if isinstance(type_, sa.DateTime):
        return "datetime"
    raise TypeError(f"column {column.table.name}.{column.name}: unsupported type {type_!r}")


def _none_if_empty(mask: np.ndarray) -> np.ndarray | None:
    return mask if mask.any() else None


def normalize_column(series: pd.Series, column: sa.Column) -> ColumnData:
    """Convert one pandas column to the representation of :class:`ColumnData`."""
    kind = column_kind(column)
    where = f"{column.table.name}.{column.name}"
    if kind == "float":
        try:
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: values are not numbers ({exc})") from None
        return ColumnData(column.name, kind, values, _none_if_empty(np.isnan(values)))
    if kind == "int":
        if pd.api.types.is_integer_dtype(series.dtype):  # numpy int or nullable Int32/Int64
            mask = series.isna().to_numpy()
            values = series.to_numpy(dtype=np.int64, na_value=0)
            return ColumnData(column.name, kind, values, _none_if_empty(mask))
        # float (NaN forced the dtype) or object: integral values only, never truncated.
        mask = series.isna().to_numpy()
        try:
            as_float = series.to_numpy(dtype=np.float64, na_value=0.0)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: values are not integers ({exc})") from None
        if not np.array_equal(as_float, np.trunc(as_float)):
            raise ValueError(f"{where}: non-integral values in an integer column")
        return ColumnData(column.name, kind, as_float.astype(np.int64), _none_if_empty(mask))
    if kind == "text":
        mask = series.isna().to_numpy()
        if mask.all():  # an all-missing column may have any dtype (often float64 NaN)
            return ColumnData(column.name, kind, np.full(len(series), None, dtype=object), None)
        if not isinstance(series.dtype, pd.StringDtype):
            inferred = pd.api.types.infer_dtype(series, skipna=True)
            if inferred not in ("string", "empty"):
                raise TypeError(
                    f"{where}: expected text, found {inferred} values (decode bytes to str first)"
                )
        values = series.to_numpy(dtype=object)
        return ColumnData(column.name, kind, values, _none_if_empty(mask))
    # datetime: naive UTC, microsecond precision (what every dialect's column stores).
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy(dtype="datetime64[us]")
    return ColumnData(column.name, kind, values, _none_if_empty(np.isnat(values)))


def insert_columns(table: sa.Table, df: pd.DataFrame) -> list[sa.Column]:
    """The columns written for ``table`` (all but the identity key), checked against ``df``."""
    columns = [c for c in table.columns if c.identity is None]
    names = {c.name for c in columns}
    missing = sorted(names - set(df.columns))
    extra = sorted(set(map(str, df.columns)) - names)
    if missing or extra:
        raise ValueError(
            f"frame for {table.name} does not match its columns: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    return columns


def normalize_chunk(chunk: pd.DataFrame, columns: Sequence[sa.Column]) -> list[ColumnData]:
    return [normalize_column(chunk[c.name], c) for c in columns]


def _float_processor() -> Any:
    from sqlalchemy.engine import processors

    return getattr(processors, "to_float", None)


_TO_FLOAT = _float_processor()


def rows_of(
    data: Sequence[ColumnData], processors: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    """Row tuples of native Python values; ``processors`` are SQLAlchemy bind processors."""
    arrays = []
    for i, col in enumerate(data):
        proc = processors[i] if processors else None
        if col.kind in ("float", "int") and (
            proc is None or (proc is _TO_FLOAT and col.kind == "float")
        ):
            # tolist(): the same Python floats / ints as astype(object), in one C loop; the
            # float processor would return each value unchanged, so it is skipped.
            objs = col.values.tolist()
            if col.mask is not None:
                for j in np.flatnonzero(col.mask).tolist():
                    objs[j] = None
        else:
            objs = col.objects()
            if proc is not None:
                objs = [None if v is None else proc(v) for v in objs]
        arrays.append(objs)
    return list(zip(*arrays, strict=True))


def iter_chunks(df: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(df), chunk_rows):
        yield df.iloc[start : start + chunk_rows]


def row_batches(
    df: pd.DataFrame,
    columns: Sequence[sa.Column],
    chunk_rows: int,
    dialect: sa.Dialect | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """``df`` as lists of at most ``chunk_rows`` row tuples, bound for ``dialect`` (if given)."""
    processors = _processors(columns, dialect) if dialect is not None else None
    for chunk in iter_chunks(df, chunk_rows):
        yield rows_of(normalize_chunk(chunk, columns), processors)


@contextlib.contextmanager
def driver_errors(conn: sa.Connection, statement: str) -> Iterator[None]:
    """Raise driver errors of raw-cursor work (COPY, fast_executemany) as SQLAlchemy errors.

    Callers then see ``sqlalchemy.exc.IntegrityError`` / ``OperationalError`` ... whatever the
    path, and a connection the server killed is invalidated instead of going back to the pool.
    """
    dialect = conn.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        invalidated = False
        with contextlib.suppress(Exception):
            if dialect.is_disconnect(exc, conn.connection.dbapi_connection, None):
                conn.invalidate(exc)
                invalidated = True
        raise sa.exc.DBAPIError.instance(
            statement,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        ) from exc


def _processors(columns: Sequence[sa.Column], dialect: sa.Dialect) -> list[Any]:
    return [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]


def _placeholder(dialect: sa.Dialect) -> str:
    if dialect.name in ("mssql", "sqlite"):
        return "?"  # pyodbc, mssql-python and sqlite3 all take qmark parameters
    return {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle, "?")


def insert_sql(
    dialect: sa.Dialect, table: sa.Table, columns: Sequence[sa.Column], rows: int = 1
) -> str:
    """``INSERT INTO t (c1, ...) VALUES (?, ...)[, (...)]`` for the driver's paramstyle."""
    prep = dialect.identifier_preparer
    marks = "(" + ", ".join([_placeholder(dialect)] * len(columns)) + ")"
    names = ", ".join(prep.quote(c.name) for c in columns)
    return f"INSERT INTO {qualified_name(dialect, table)} ({names}) VALUES " + ", ".join(
        [marks] * rows
    )


# --------------------------------------------------------------------------------------------
# Public entry point


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
    dialect = conn.dialect
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS.get(dialect.name, FALLBACK_CHUNK_ROWS)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    name, driver = dialect.name, dialect.driver
    if name == "postgresql" and driver == "psycopg":
        written = _postgres_copy(conn, table, columns, df, chunk_rows)
    elif name in ("mysql", "mariadb") and driver == "pymysql":
        if _mysql_local_infile(conn):
            written = _mysql_load_data(conn, table, columns, df, chunk_rows)
        else:
            written = _mysql_executemany(conn, table, columns, df, chunk_rows)
    elif name == "mssql":
        if driver == "pyodbc" and getattr(dialect, "fast_executemany", False):
            written = _mssql_fast_executemany(conn, table, columns, df, chunk_rows)
        else:
            written = _mssql_values(conn, table, columns, df, chunk_rows)
    elif name == "sqlite":
        written = _executemany(conn, table, columns, df, chunk_rows)
    else:
        written = _sqlalchemy_executemany(conn, table, columns, df, chunk_rows)
    if written != len(df):
        raise BulkInsertError(f"{table.name}: wrote {written} rows, expected {len(df)}")
    return written


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _postgres_type(column: sa.Column) -> str:
    kind = column_kind(column)
    if kind == "float":
        precision = getattr(column.type, "precision", None)
        return "float4" if isinstance(column.type, sa.REAL) or (precision or 53) <= 24 else "float8"
    if kind == "int":
        if isinstance(column.type, sa.BigInteger):
            return "int8"
        return "int2" if isinstance(column.type, sa.SmallInteger) else "int4"
    if kind == "text":
        return "text"  # binary text is accepted by char/varchar receive functions
    return "timestamp"


PG_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
PG_BINARY_TRAILER = b"\xff\xff"
# Binary COPY wire types of the fixed-width PostgreSQL types (network byte order).
_PG_FIXED = {
    "float8": np.dtype(">f8"),
    "float4": np.dtype(">f4"),
    "int2": np.dtype(">i2"),
    "int4": np.dtype(">i4"),
    "int8": np.dtype(">i8"),
    "timestamp": np.dtype(">i8"),
}
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: PostgreSQL's epoch


def postgres_binary_rows(data: Sequence[ColumnData], types: Sequence[str]) -> memoryview | None:
    """The tuples of a chunk in COPY BINARY format, built with numpy in one pass.

    Only when every row has the same layout: no NULL and, per text column, one UTF-8 byte
    length (e.g. the 18-character track ids of the analysis tables). ``None`` otherwise, or when
    an integer does not fit its column: the caller then sends rows one by one, whose dumpers
    produce the same bytes (and raise the same errors).
    """
    n = len(data[0].values) if data else 0
    fields: list[tuple[str, Any]] = [("count", ">i2")]
    values: list[tuple[str, np.ndarray]] = []
    for i, (col, type_) in enumerate(zip(data, types, strict=True)):
        if col.mask is not None:
            return None
        if type_ == "text":
            array = col.arrow()
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[
                array.offset : array.offset + n + 1
            ]
            width = int(offsets[1] - offsets[0]) if n else 0
            if n and (np.diff(offsets) != width).any():
                return None
            fields.append((f"l{i}", ">i4"))
            values.append((f"l{i}", np.full(n, width, dtype=">i4")))
            if width:
                dtype = np.dtype(f"S{width}")
                fields.append((f"v{i}", dtype))
                data_buffer = array.buffers()[2]
                values.append(
                    (f"v{i}", np.frombuffer(data_buffer, dtype, count=n, offset=int(offsets[0])))
                )
            continue
        else:
            dtype = _PG_FIXED.get(type_)
            if dtype is None:
                return None
            payload = col.values
            if type_ == "timestamp":
                payload = payload.astype("datetime64[us]").view(np.int64) - _PG_EPOCH_US
            elif dtype.kind == "i" and n:
                info = np.iinfo(dtype)
                if payload.min() < info.min or payload.max() > info.max:
                    return None
        fields.append((f"l{i}", ">i4"))
        fields.append((f"v{i}", dtype))
        values.append((f"l{i}", np.full(n, dtype.itemsize, dtype=">i4")))
        values.append((f"v{i}", payload))
    rows = np.empty(n, dtype=np.dtype(fields))  # packed: no padding between fields
    rows["count"] = len(data)
    for name, array in values:
        rows[name] = array
    return rows.data  # the tuples' bytes, without a copy


def _postgres_copy(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
    dialect = conn.dialect
    prep = dialect.identifier_preparer
    sql = (
        f"COPY {qualified_name(dialect, table)} "
        f"({', '.join(prep.quote(c.name) for c in columns)}) FROM STDIN (FORMAT BINARY)"
    )
    types = [_postgres_type(c) for c in columns]
    raw = conn.connection.dbapi_connection
    written = 0
    with driver_errors(conn, sql), raw.cursor() as cursor:
        with cursor.copy(sql) as copy:
            copy.set_types(types)
            # Blocks built with numpy where the chunk allows it, else rows through psycopg's
            # dumpers. psycopg adds the signature before a first write_row() and the trailer
            # when write_row() was used; a stream of blocks only must carry both itself.
            row_mode = False
            for chunk in iter_chunks(df, chunk_rows):
                data = normalize_chunk(chunk, columns)
                block = postgres_binary_rows(data, types)
                if block is None:
                    row_mode = True
                    for row in rows_of(data):
                        copy.write_row(row)
                else:
                    if written == 0:
                        copy.write(PG_BINARY_SIGNATURE)
                    copy.write(block)
                written += len(chunk)
            if written and not row_mode:
                copy.write(PG_BINARY_TRAILER)
        if cursor.rowcount >= 0:
            written = cursor.rowcount
    return written


# --------------------------------------------------------------------------------------------
# MySQL / MariaDB


def _mysql_local_infile(conn: sa.Connection) -> bool:
    """Client flag LOCAL_FILES set (local_infile=True) and the server allows it."""
    info = conn.connection.info
    if _MYSQL_LOCAL_INFILE_KEY not in info:
        from pymysql.constants import CLIENT

        raw = conn.connection.dbapi_connection
        enabled = bool(getattr(raw, "client_flag", 0) & CLIENT.LOCAL_FILES)
        if enabled:
            enabled = bool(conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar())
        info[_MYSQL_LOCAL_INFILE_KEY] = enabled
    return bool(info[_MYSQL_LOCAL_INFILE_KEY])


def _mysql_load_data(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    dialect = conn.dialect
    prep = dialect.identifier_preparer
    # NULL is the unquoted word NULL (ESCAPED BY ''); Arrow quotes every string, so the text
    # 'NULL' stays text, and embedded quotes are doubled, newlines kept inside quotes.
    options = pacsv.WriteOptions(include_header=False, null_string="NULL", quoting_style="needed")
    names = ", ".join(prep.quote(c.name) for c in columns)
    written = 0
    fd, path = tempfile.mkstemp(prefix="msd_load_", suffix=".csv")
    os.close(fd)
    try:
        sql = (
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {qualified_name(dialect, table)} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
            f"ESCAPED BY '' ({names})"
        )
        for chunk in iter_chunks(df, chunk_rows):
            data = normalize_chunk(chunk, columns)
            arrow_table = pa.Table.from_arrays(
                [c.arrow() for c in data], names=[c.name for c in data]
            )
            pacsv.write_csv(arrow_table, path, options)
            loaded = conn.exec_driver_sql(sql).rowcount
            # LOCAL implies IGNORE: bad values, duplicate keys and foreign-key failures become
            # warnings and rows are skipped. Treat any warning as the error it would have been.
            warnings = [
                tuple(w)
                for w in conn.exec_driver_sql("SHOW WARNINGS LIMIT 5")
                if str(w[0]).lower() != "note"
            ]
            if warnings:
                raise _mysql_warning_error(dialect, sql, table, warnings)
            if loaded != len(chunk):
                raise BulkInsertError(
                    f"LOAD DATA into {table.name}: {loaded} of {len(chunk)} rows loaded"
                )
            written += loaded
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return written


def _mysql_warning_error(
    dialect: sa.Dialect, sql: str, table: sa.Table, warnings: list[tuple[Any, ...]]
) -> sa.exc.DBAPIError:
    """The error the first warning stands for (1062 duplicate key -> IntegrityError ...)."""
    import pymysql.err

    _, code, message = warnings[0][:3]
    error_class = pymysql.err.error_map.get(int(code), pymysql.err.DataError)
    detail = f"LOAD DATA into {table.name}: {message}" + (
        f" (and {len(warnings) - 1} more warning(s))" if len(warnings) > 1 else ""
    )
    return sa.exc.DBAPIError.instance(
        sql, None, error_class(int(code), detail), dialect.loaded_dbapi.Error, dialect=dialect
    )


def _mysql_executemany(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
    dialect = conn.dialect
    info = conn.connection.info
    if _MYSQL_MAX_PACKET_KEY not in info:
        info[_MYSQL_MAX_PACKET_KEY] = int(
            conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar()
        )
    sql = insert_sql(dialect, table, columns)
    raw = conn.connection.dbapi_connection
    written = 0
    with driver_errors(conn, sql), contextlib.closing(raw.cursor()) as cursor:
        # PyMySQL rewrites executemany into multi-row INSERTs of at most max_stmt_length bytes.
        packet = info[_MYSQL_MAX_PACKET_KEY]
        cursor.max_stmt_length = max(64_000, min(4 * 1024 * 1024, packet - 65_536))
        for rows in row_batches(df, columns, chunk_rows, dialect):
            cursor.executemany(sql, rows)
            written += len(rows)
    return written


# --------------------------------------------------------------------------------------------
# SQL Server


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


def _mssql_fast_executemany(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
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


def _mssql_values(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
    dialect = conn.dialect
    written = 0
    for rows in row_batches(df, columns, chunk_rows, dialect):
        for sql, params in mssql_values_statements(dialect, table, columns, rows):
            conn.exec_driver_sql(sql, params)
        written += len(rows)
    return written


# --------------------------------------------------------------------------------------------
# SQLite and anything else


def _executemany(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
    dialect = conn.dialect
    sql = insert_sql(dialect, table, columns)
    written = 0
    for rows in row_batches(df, columns, chunk_rows, dialect):
        conn.exec_driver_sql(sql, rows)
        written += len(rows)
    return written


def _sqlalchemy_executemany(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    df: pd.DataFrame,
    chunk_rows: int,
) -> int:
    # Unknown driver: SQLAlchemy's own executemany / insertmanyvalues batching.
    names = [c.name for c in columns]
    written = 0
    for rows in row_batches(df, columns, chunk_rows):
        conn.execute(sa.insert(table), [dict(zip(names, row, strict=True)) for row in rows])
        written += len(rows)
    return written
