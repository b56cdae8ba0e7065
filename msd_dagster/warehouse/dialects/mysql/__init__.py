"""MySQL / MariaDB: ``LOAD DATA LOCAL INFILE`` bulk path, ``ON DUPLICATE KEY`` upserts, utf8mb4,
strict SQL mode, a ``GET_LOCK`` schema lock and InnoDB lock wait timeouts set at connect.

Bulk path (PyMySQL): ``LOAD DATA LOCAL INFILE`` of a CSV chunk written by Arrow (shortest
round-trip float text) when the connection allows local infile, with the row count and
warnings checked (LOCAL turns errors into warnings); otherwise multi-row INSERTs sized under
``max_allowed_packet``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.ext.compiler import compiles

from msd_dagster.warehouse.dialects.base import (
    Backend,
    BulkJob,
    BulkPath,
    DatabaseEncodingError,
    LockErrorKind,
    PartitionLockTimeout,
    partition_lock_name,
    query_value,
)
from msd_dagster.warehouse.merge_rules import SOURCE_COLUMN, merge_columns
from msd_dagster.warehouse.rows import (
    BulkInsertError,
    driver_errors,
    insert_sql,
    iter_chunks,
    normalize_chunk,
    qualified_name,
    row_batches,
)

# Every table's text is utf8mb4 (4-byte characters: emoji, rare CJK) with a binary collation.
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

_MYSQL_LOCAL_INFILE_KEY = "msd_mysql_local_infile"
_MYSQL_MAX_PACKET_KEY = "msd_mysql_max_allowed_packet"
_SCHEMA_LOCK_NAME = "msd_dagster_schema"
_SCHEMA_LOCK_WAIT_S = 600


class KeyUnicode(sa.Unicode):
    """Unicode key text, with a NO PAD binary collation (see below)."""

    cache_ok = True


@compiles(KeyUnicode, "mysql")
@compiles(KeyUnicode, "mariadb")
def _compile_key_unicode(type_: KeyUnicode, compiler: Any, **kw: Any) -> str:
    # utf8mb4_bin is a PAD SPACE collation: 'rock' = 'rock ' and a unique key would merge two
    # distinct tags. MariaDB has utf8mb4_nopad_bin, MySQL 8 utf8mb4_0900_bin (both NO PAD).
    # The server flavour is known once the dialect has connected (DDL always runs connected).
    dialect = compiler.dialect
    version = dialect.server_version_info or ()
    if dialect.is_mariadb:
        collation = "utf8mb4_nopad_bin"
    elif version and version >= (8, 0, 17):
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return f"VARCHAR({type_.length}) CHARACTER SET utf8mb4 COLLATE {collation}"


def mysql_upsert_sql(dialect: sa.Dialect, target: sa.Table, stage: sa.Table) -> str:
    """``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`` implementing merge_rules."""
    keys, columns, _, is_artist = merge_columns(target, stage)
    q = dialect.identifier_preparer.quote
    t, s = qualified_name(dialect, target), qualified_name(dialect, stage)
    column_list = ", ".join(q(c) for c in columns)
    select_list = ", ".join(f"s.{q(c)}" for c in columns)
    order = ", ".join(f"s.{q(k)}" for k in keys)
    if is_artist:
        select = f"SELECT {select_list} FROM {s} AS s ORDER BY {order}"
        src = q(SOURCE_COLUMN)
        wins = f"VALUES({src}) IS NOT NULL AND ({t}.{src} IS NULL OR VALUES({src}) <= {t}.{src})"
        # Assignments run left to right and see earlier updates: source_track_id goes last so
        # every condition compares with the existing row's source (see merged_artist_value).
        attributes = [c for c in columns if c not in keys and c != SOURCE_COLUMN]
        updates = ", ".join(
            [
                f"{t}.{q(c)} = IF({wins}, COALESCE(VALUES({q(c)}), {t}.{q(c)}), "
                f"COALESCE({t}.{q(c)}, VALUES({q(c)})))"
                for c in attributes
            ]
            + [f"{t}.{src} = IF({wins}, VALUES({src}), {t}.{src})"]
        )
    elif len(columns) > len(keys):
        select = f"SELECT {select_list} FROM {s} AS s ORDER BY {order}"
        updates = ", ".join(
            f"{t}.{q(c)} = COALESCE({t}.{q(c)}, VALUES({q(c)}))" for c in columns if c not in keys
        )
    else:
        match = " AND ".join(f"x.{q(k)} = s.{q(k)}" for k in keys)
        select = (
            f"SELECT {select_list} FROM {s} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {t} AS x WHERE {match}) ORDER BY {order}"
        )
        # No-op update: a key inserted meanwhile by a concurrent load is skipped, not an error.
        updates = f"{t}.{q(keys[0])} = {t}.{q(keys[0])}"
    return f"INSERT INTO {t} ({column_list}) {select} ON DUPLICATE KEY UPDATE {updates}"


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


def _mysql_load_data(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
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


def _mysql_executemany(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
    dialect = conn.dialect
    info = conn.connection.info
    if _MYSQL_MAX_PACKET_KEY not in info:
        info[_MYSQL_MAX_PACKET_KEY] = int(
            conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar()
        )
    sql = insert_sql(dialect, table, columns, marker="%s")  # PyMySQL: format paramstyle
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


@dataclass(frozen=True)
class MySQLBackend(Backend):
    """MySQL and MariaDB, through PyMySQL (LOAD DATA LOCAL INFILE) or mysqlclient."""

    name = "mysql"
    dialect_names = ("mysql", "mariadb")
    display_name = "MySQL/MariaDB"
    catalog_kind = "mysql"
    driver_packages = ("pymysql", "MySQLdb")
    default_chunk_rows = 100_000
    max_bind_parameters = 30_000
    default_lock_timeout_s = 60.0
    lock_timeout_setting = "innodb_lock_wait_timeout"
    upsert_sql = staticmethod(mysql_upsert_sql)
    column_types = {
        "key_text": lambda t: KeyUnicode(t.length),
        # FLOAT is single precision, DATETIME rounds microseconds away.
        "double": lambda _: mysql_dialect.DOUBLE(asdecimal=False),
        "timestamp": lambda _: mysql_dialect.DATETIME(fsp=6),
    }
    table_options = TABLE_OPTIONS
    fingerprint_dialect = mysql_dialect.dialect()

    # InnoDB's sampled estimate, read from the catalog (an exact count scans the table).
    row_count_method = "estimate: information_schema.TABLES.TABLE_ROWS"
    row_count_query = (
        "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names"
    )

    # A malicious server could ask a local-infile client for any readable file: only enable
    # LOAD DATA LOCAL INFILE (2x faster) for servers you trust.
    local_infile: bool = True

    def engine_options(
        self, url: sa.URL, options: dict[str, Any], connect_args: dict[str, Any]
    ) -> sa.URL:
        charset = query_value(url.query, "charset")
        if charset is None:
            url = url.update_query_dict({"charset": "utf8mb4"})
        elif charset.lower() != "utf8mb4":
            raise ValueError(
                f"charset={charset} cannot store every character of the dataset; use utf8mb4"
            )
        options.setdefault("pool_recycle", 3600)  # below the server's wait_timeout
        if self.driver in ("pymysql", "mysqldb"):
            connect_args.setdefault("local_infile", self.local_infile)
            # Strict mode: bad data is an error, not a warning with a silently changed value.
            # The lock waits (row locks, and metadata locks of DDL) end with an error instead
            # of stalling a load behind another session.
            timeouts = ""
            if self.lock_timeout_s is not None:
                seconds = max(1, round(self.lock_timeout_s))
                timeouts = f", innodb_lock_wait_timeout = {seconds}, lock_wait_timeout = {seconds}"
            connect_args.setdefault(
                "init_command",
                "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', "
                f"CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')){timeouts}",
            )
        return url

    def prepare_load_connection(self, conn: sa.Connection) -> sa.Connection:
        # No gap locks: concurrent loads of neighbouring partitions do not deadlock on the
        # range boundaries of their DELETEs.
        return conn.execution_options(isolation_level="READ COMMITTED")

    def lock_partition(self, conn: sa.Connection, partition_key: str) -> None:
        # READ COMMITTED: a DELETE skips rows a concurrent load of the same partition has
        # inserted but not committed, so both would insert them. A session lock, released by
        # release_partition after the transaction (or by the server with the session).
        wait = max(1, round(self.lock_timeout_s or 60))
        got = conn.execute(
            sa.select(sa.func.get_lock(partition_lock_name(partition_key), wait))
        ).scalar()
        if got != 1:
            raise PartitionLockTimeout(
                f"partition {partition_key}: another load of it held its lock (GET_LOCK) "
                f"for {wait} s"
            )

    def release_partition(self, conn: sa.Connection, partition_key: str) -> None:
        if conn.invalidated or conn.closed:
            return
        with contextlib.suppress(sa.exc.DBAPIError):
            conn.execute(sa.select(sa.func.release_lock(partition_lock_name(partition_key))))
            conn.commit()

    @contextlib.contextmanager
    def schema_lock(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        # DDL commits implicitly on MySQL, so the lock is a session lock, not a transaction.
        with engine.connect() as conn:
            got = conn.exec_driver_sql(
                f"SELECT GET_LOCK('{_SCHEMA_LOCK_NAME}', {_SCHEMA_LOCK_WAIT_S})"
            ).scalar()
            if got != 1:
                raise TimeoutError(
                    f"could not acquire the schema lock (GET_LOCK) in {_SCHEMA_LOCK_WAIT_S} s"
                )
            try:
                yield conn
                conn.commit()
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.rollback()
                    conn.exec_driver_sql(f"SELECT RELEASE_LOCK('{_SCHEMA_LOCK_NAME}')")
                    conn.commit()

    def check_encoding(self, conn: sa.Connection) -> None:
        charset = conn.exec_driver_sql("SELECT @@character_set_connection").scalar()
        if str(charset).lower() != "utf8mb4":
            raise DatabaseEncodingError(
                f"MySQL connection character set is {charset}: 4-byte characters (emoji, rare CJK) "
                "would be rejected or replaced. Connect with ?charset=utf8mb4 "
                "(create_engine_for_url does this)."
            )

    def float_bits(self, type_: sa.Float, type_name: str) -> int:
        if "REAL" not in type_name and "DOUBLE" not in type_name:
            precision = getattr(type_, "precision", None)
            return 64 if precision is not None and precision > 24 else 32  # FLOAT(p)
        return super().float_bits(type_, type_name)

    def bulk_path(self, conn: sa.Connection) -> BulkPath:
        if self.driver != "pymysql":
            return super().bulk_path(conn)
        return _mysql_load_data if _mysql_local_infile(conn) else _mysql_executemany

    def stage_table_kwargs(self) -> dict[str, Any]:
        return {"prefixes": ["TEMPORARY"], **self.table_options}

    def drop_stage_sql(self, dialect: sa.Dialect, stage: sa.Table) -> str:
        # A plain DROP TABLE would commit the load's transaction.
        return f"DROP TEMPORARY TABLE IF EXISTS {dialect.identifier_preparer.quote(stage.name)}"

    @classmethod
    def lock_error(cls, orig: BaseException) -> LockErrorKind | None:
        code = getattr(orig, "args", (None,))[:1]
        if code == (1213,):  # ER_LOCK_DEADLOCK
            return "deadlock"
        if code == (1205,):  # ER_LOCK_WAIT_TIMEOUT
            return "lock timeout"
        return None
