"""PostgreSQL: binary ``COPY ... FROM STDIN`` (psycopg 3), ``ON CONFLICT`` upserts, an advisory
schema lock and ``lock_timeout`` set for every session at connect.

Floats travel as IEEE doubles in COPY BINARY, so they are bit-exact.

The analysis tables are partitioned by ``track_id`` range, one partition per folder
(``msd_segment_p_ab`` holds folder A/B). A rerun empties the folder's partitions with
``TRUNCATE``, which frees their space when it commits, where a ``DELETE`` would leave the old
rows' space behind until a vacuum; and each folder's indexes stay the size of one folder.
Databases created before the partitioning keep their plain tables, and the ``DELETE``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from msd_dagster.source.layout import partition_track_range
from msd_dagster.warehouse.dialects.base import (
    Backend,
    BulkJob,
    BulkPath,
    DatabaseEncodingError,
    LockErrorKind,
)
from msd_dagster.warehouse.rows import (
    ColumnData,
    column_kind,
    driver_errors,
    iter_chunks,
    normalize_chunk,
    qualified_name,
    rows_of,
)

_PG_SCHEMA_LOCK_KEY = 0x6D73645F736368  # arbitrary constant bigint ("msd_sch")
_PG_PARTITION_LOCK_CLASS = 0x6D736470  # arbitrary int ("msdp"): first key of a partition's lock
# Drivers that pass libpq "options" (the lock timeout is set there: a SET would be undone by
# the first rollback).
_LIBPQ_DRIVERS = ("psycopg", "psycopg2")

# The partitioned tables among :names, with their identity column.
_PARTITIONED_PARENTS = """
SELECT c.relname, a.attname
FROM pg_partitioned_table p
JOIN pg_class c ON c.oid = p.partrelid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attidentity <> ''
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname IN :names
"""
_ATTACHED_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname IN :names
"""


def folder_partition_name(table_name: str, partition_key: str) -> str:
    """The physical partition of ``table_name`` holding a folder: ``msd_bar``, ``"A/B"`` ->
    ``msd_bar_p_ab``."""
    return f"{table_name}_p_{partition_key.replace('/', '').lower()}"


def _expanding(sql: str) -> sa.TextClause:
    return sa.text(sql).bindparams(sa.bindparam("names", expanding=True))


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


def _postgres_copy(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
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


class PostgreSQLBackend(Backend):
    """PostgreSQL through psycopg 3 (binary COPY) or psycopg2; analysis rows partitioned by
    folder."""

    name = "postgresql"
    dialect_names = ("postgresql",)
    display_name = "PostgreSQL"
    catalog_kind = "postgres"
    driver_packages = ("psycopg", "psycopg2")
    default_chunk_rows = 100_000
    max_bind_parameters = 30_000
    default_lock_timeout_s = 60.0
    lock_timeout_setting = "lock_timeout"
    temp_schema = "pg_temp."
    on_conflict_insert = staticmethod(postgresql.insert)
    # Collation "C": keys compare byte for byte, never in the database locale's order.
    column_types = {
        "key_text": lambda t: postgresql.VARCHAR(t.length, collation="C"),
        "msd_id": lambda t: postgresql.CHAR(t.length, collation="C"),
    }
    fingerprint_dialect = postgresql.dialect()
    # The statistics collector's live-row count: one catalog read, updated as transactions
    # commit (may lag a committed load by a moment).
    row_count_method = "estimate: pg_stat_user_tables.n_live_tup"
    # A partitioned table's figure is the sum of its partitions'.
    row_count_query = """
        SELECT c.relname, COALESCE(SUM(s.n_live_tup), 0)
        FROM pg_class c
        LEFT JOIN pg_inherits i ON i.inhparent = c.oid
        JOIN pg_stat_user_tables s ON s.relid = COALESCE(i.inhrelid, c.oid)
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relname IN :names
        GROUP BY c.relname
    """

    def engine_options(
        self, url: sa.URL, options: dict[str, Any], connect_args: dict[str, Any]
    ) -> sa.URL:
        if self.lock_timeout_s is not None and self.driver in _LIBPQ_DRIVERS:
            setting = f"-c lock_timeout={int(self.lock_timeout_s * 1000)}"
            connect_args["options"] = " ".join(filter(None, [connect_args.get("options"), setting]))
        return url

    def lock_schema(self, conn: sa.Connection) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK_KEY)))

    def lock_partition(self, conn: sa.Connection, partition_key: str) -> None:
        # A DELETE sees the rows committed when it started, not those a concurrent load of the
        # same partition is inserting: without this lock both would insert them.
        key = zlib.crc32(partition_key.encode()) - 2**31  # a signed int4
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_PARTITION_LOCK_CLASS, key)))

    def place_table(self, table: sa.Table, by_folder: bool) -> None:
        if by_folder:
            # A partitioned table's own keys must hold its partition key: a primary key of
            # (id, track_id) would double its index. So the identity key is each partition's
            # primary key (own_partition_tables), unique across them by its sequence; the
            # natural key (track_id, position) is the partitioned table's unique constraint.
            for column in table.primary_key.columns:
                column.primary_key = False
            table.append_constraint(sa.PrimaryKeyConstraint())
            table.dialect_kwargs["postgresql_partition_by"] = "RANGE (track_id)"

    def own_partition_tables(
        self, engine: sa.Engine, partition_key: str, by_folder: Sequence[str]
    ) -> dict[str, str]:
        lo, hi = partition_track_range(partition_key)
        names = {t: folder_partition_name(t, partition_key) for t in sorted(by_folder)}
        with engine.connect() as conn, conn.begin():
            found = conn.execute(_expanding(_PARTITIONED_PARENTS), {"names": list(names)})
            parents = {table: id_column for table, id_column in found}
            if not parents:
                return {}  # a database made before the partitioning: plain tables
            # Loads of one folder take turns from here (also their transactions: lock_partition).
            self.lock_partition(conn, partition_key)
            attached = set(
                conn.execute(
                    _expanding(_ATTACHED_PARTITIONS), {"names": list(names.values())}
                ).scalars()
            )
            prep = conn.dialect.identifier_preparer
            for table, id_column in sorted(parents.items()):
                if names[table] in attached:
                    continue
                # CREATE ... PARTITION OF would lock the parent against every running load;
                # ATTACH takes a lock that inserts into other partitions do not wait for.
                child, parent = prep.quote(names[table]), prep.quote(table)
                conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {child} "
                    f"(LIKE {parent}, PRIMARY KEY ({prep.quote(id_column)}))"
                )
                conn.exec_driver_sql(
                    f"ALTER TABLE {parent} ATTACH PARTITION {child} "
                    f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
                )
        return {table: names[table] for table in parents}

    def check_encoding(self, conn: sa.Connection) -> None:
        encoding = conn.exec_driver_sql("SHOW server_encoding").scalar()
        if str(encoding).upper() not in ("UTF8", "UTF-8"):
            raise DatabaseEncodingError(
                f"PostgreSQL database encoding is {encoding}: non-Latin text (e.g. Gurmukhi or CJK "
                "tags) cannot be stored. Create the database with ENCODING 'UTF8' "
                "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)."
            )

    def bulk_path(self, conn: sa.Connection) -> BulkPath:
        return _postgres_copy if self.driver == "psycopg" else super().bulk_path(conn)

    def stage_table_kwargs(self) -> dict[str, Any]:
        return {"prefixes": ["TEMPORARY"], "postgresql_on_commit": "DROP"}

    @classmethod
    def lock_error(cls, orig: BaseException) -> LockErrorKind | None:
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate in ("40P01", "40001"):  # deadlock / serialization failure
            return "deadlock"
        if sqlstate == "55P03":  # lock_not_available: lock_timeout expired
            return "lock timeout"
        return None
