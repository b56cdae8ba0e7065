"""SQLite: one writer at a time, foreign keys and WAL per connection, ``executemany`` bulk path.

The lock timeout is SQLite's busy timeout: a second loader waits that long for the write lock
(``BEGIN IMMEDIATE``), then fails with "database is locked", which is retried as a lock timeout.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect

from msd_dagster.warehouse.dialects.base import (
    Backend,
    BulkJob,
    BulkPath,
    LockErrorKind,
)
from msd_dagster.warehouse.rows import insert_sql, row_batches

# Connection execution option read by the SQLite "begin" listener: "IMMEDIATE" takes the write
# lock when the transaction starts, so two loaders queue on the busy timeout instead of failing
# with SQLITE_BUSY when a deferred reader tries to upgrade to a writer.
SQLITE_BEGIN_OPTION = "msd_sqlite_begin"
DEFAULT_SQLITE_BUSY_TIMEOUT_S = 300.0

_sqlite_configured: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def install_sqlite_pragmas(
    engine: sa.Engine, *, busy_timeout_s: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S, wal: bool = True
) -> sa.Engine:
    """Make a SQLite engine safe for concurrent partition loads (no-op for other dialects).

    Every new connection gets ``foreign_keys=ON`` (SQLite ignores foreign keys otherwise),
    ``journal_mode=WAL`` (readers never block the writer) and a busy timeout (a second loader
    waits for the first instead of failing). Transactions are begun explicitly, so DDL and
    DML of a load share one transaction, and ``BEGIN IMMEDIATE`` can be requested with the
    :data:`SQLITE_BEGIN_OPTION` execution option. Call it before the engine's first connection.
    """
    if engine.dialect.name not in SQLiteBackend.dialect_names or engine in _sqlite_configured:
        return engine
    timeout_ms = int(busy_timeout_s * 1000)
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver-level autocommit: pysqlite would otherwise BEGIN lazily (DEFERRED, and not
        # before DDL); the "begin" listener below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
            if wal and not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        mode = str(options.get(SQLITE_BEGIN_OPTION, "DEFERRED")).upper()
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be DEFERRED/IMMEDIATE/EXCLUSIVE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    _sqlite_configured.add(engine)
    return engine


def sqlite_pragmas_installed(engine: sa.Engine) -> bool:
    return engine in _sqlite_configured


def create_sqlite_engine(
    path: str | Path,
    *,
    busy_timeout_s: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S,
    **engine_options: Any,
) -> sa.Engine:
    """A SQLite engine on ``path`` with the pragmas of :func:`install_sqlite_pragmas`."""
    connect_args = dict(engine_options.pop("connect_args", None) or {})
    connect_args.setdefault("timeout", busy_timeout_s)
    engine = sa.create_engine(f"sqlite:///{path}", connect_args=connect_args, **engine_options)
    return install_sqlite_pragmas(engine, busy_timeout_s=busy_timeout_s)


def _executemany(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
    sql = insert_sql(conn.dialect, table, columns)
    written = 0
    for rows in row_batches(df, columns, chunk_rows, conn.dialect):
        conn.exec_driver_sql(sql, rows)
        written += len(rows)
    return written


class SQLiteBackend(Backend):
    """SQLite files, through the standard library's sqlite3."""

    name = "sqlite"
    dialect_names = ("sqlite",)
    display_name = "SQLite"
    catalog_kind = "sqlite"
    driver_packages = ("sqlite3",)
    default_chunk_rows = 100_000
    max_bind_parameters = 30_000
    default_lock_timeout_s = DEFAULT_SQLITE_BUSY_TIMEOUT_S
    lock_timeout_setting = "busy_timeout"
    temp_schema = "temp."
    on_conflict_insert = staticmethod(sqlite_dialect.insert)
    # An INTEGER PRIMARY KEY is the rowid alias: BIGINT would not autoincrement.
    column_types = {"surrogate_key": lambda _: sa.Integer()}
    fingerprint_dialect = sqlite_dialect.dialect()

    row_count_method = "upper bound: the highest row id (exact until rows are deleted)"

    def table_row_counts(self, conn: sa.Connection, tables: Sequence[sa.Table]) -> dict[str, int]:
        # SQLite keeps no row count and COUNT(*) reads a whole index: the rowid alias (the
        # identity key) is its largest value in O(log n); reloads leave gaps, so >= count.
        counts = {}
        for table in tables:
            statement = sa.select(sa.func.max(sa.literal_column("rowid"))).select_from(table)
            counts[table.name] = int(conn.execute(statement).scalar() or 0)
        return counts

    def database_folder(self, url: sa.URL) -> Path | None:
        if url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).parent

    def engine_options(
        self, url: sa.URL, options: dict[str, Any], connect_args: dict[str, Any]
    ) -> sa.URL:
        # The busy timeout; foreign keys and WAL come with configure_engine.
        connect_args.setdefault("timeout", self.lock_timeout_s)
        return url

    def configure_engine(self, engine: sa.Engine) -> None:
        install_sqlite_pragmas(engine, busy_timeout_s=float(self.lock_timeout_s or 0))

    def writer(self, conn: sa.Connection) -> sa.Connection:
        # Take the write lock at BEGIN: concurrent loaders queue on the busy timeout.
        return conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})

    def prepare_load_connection(self, conn: sa.Connection) -> sa.Connection:
        if not sqlite_pragmas_installed(conn.engine):
            # A plain engine: pysqlite runs PRAGMA outside a transaction, so this takes effect.
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()
        if conn.exec_driver_sql("PRAGMA foreign_keys").scalar() != 1:
            raise RuntimeError("SQLite foreign keys could not be enabled on this engine")
        conn.rollback()
        return self.writer(conn)

    def float_bits(self, type_: sa.Float, type_name: str) -> int:
        return 64  # SQLite REAL is always an 8-byte IEEE double

    def bulk_path(self, conn: sa.Connection) -> BulkPath:
        return _executemany

    @classmethod
    def lock_error(cls, orig: BaseException) -> LockErrorKind | None:
        # SQLITE_BUSY after the busy timeout (Python 3.11+ sets sqlite_errorcode).
        if getattr(orig, "sqlite_errorcode", None) == 5 or "database is locked" in str(orig):
            return "lock timeout"
        return None
