"""The interface every database backend implements, with the generic (ANSI SQL) behaviour.

A :class:`Backend` says what differs between databases, in one place per backend: its column
types and table options (which :mod:`msd_dagster.warehouse.schema` asks for), engine options
and URL rules, the bulk path and its chunking, staging-table DDL and the upsert statement, the
schema lock, the encoding check, the lock timeout and which driver errors are lock errors.
Generic code (``schema``, ``ddl``, ``bulk``, ``staging``, ``partition_load`` ...) asks the
registered backends or ``backend_for(engine)`` and never compares dialect names. Class
attributes are the backend's fixed capabilities; instance fields are the options of one engine.

This module and the backends know nothing of the ``msd_*`` tables (the schema is built from
them, not the other way round): what a statement needs of a table comes with the table.

Nothing here or in the backend modules imports a database driver at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.merge_rules import (
    SOURCE_COLUMN,
    STAGE_PREFIX,
    artist_wins,
    insert_missing,
    key_absent,
    merge_columns,
    merged_artist_value,
)
from msd_dagster.warehouse.rows import row_batches

LockErrorKind = Literal["deadlock", "lock timeout"]

# The portable column types of the table definitions that a backend may store its own way
# (:attr:`Backend.column_types`): the identity surrogate key, the 18-character MSD ids, text
# that takes part in a unique key, other text, floats and timestamps.
ColumnKind = Literal["surrogate_key", "msd_id", "key_text", "text", "double", "timestamp"]
# A backend's type for a kind, made from the portable type (which carries e.g. its length).
ColumnVariant = Callable[[Any], sa.types.TypeEngine]


class BulkJob(NamedTuple):
    """A frame to write into ``table`` in ``conn``'s transaction, ``chunk_rows`` at a time."""

    conn: sa.Connection
    table: sa.Table
    columns: Sequence[sa.Column]  # the table's non-identity columns, in the frame
    df: pd.DataFrame
    chunk_rows: int


# A backend's way of writing a job: returns the rows written.
BulkPath = Callable[[BulkJob], int]


class DatabaseEncodingError(RuntimeError):
    """The database or connection cannot store arbitrary Unicode text."""


class PartitionLockTimeout(TimeoutError):
    """A load waited the lock timeout for another load of the same partition (a lock
    timeout: the transaction is rolled back and retried)."""


def partition_lock_name(partition_key: str) -> str:
    """The name of a partition's lock between loads (MySQL's GET_LOCK: up to 64 characters)."""
    return f"msd_dagster_partition_{partition_key}"


class StagedCopy(Protocol):
    """Rows bulk-copied before the load transaction (see
    :meth:`Backend.copy_outside_transaction`), moved into their table inside it."""

    def insert_into(self, conn: sa.Connection, target: sa.Table) -> int:
        """Insert the staged rows into ``target`` in ``conn``'s transaction; return the count."""
        ...


@dataclasses.dataclass(frozen=True)
class Backend:
    """One database backend: its capabilities, and the SQL and paths that differ."""

    # Fixed capabilities, overridden by each backend module.
    # The backend's name: also the prefix of its engine options (``mysql_local_infile``).
    name: ClassVar[str] = "generic"
    dialect_names: ClassVar[tuple[str, ...]] = ()  # SQLAlchemy dialect names served
    display_name: ClassVar[str] = "SQL database"
    # The kind Dagster's catalog shows: "postgres", "sqlserver", "mysql", "sqlite".
    catalog_kind: ClassVar[str] = "sql"
    # Top-level packages of the DB-API drivers, to tell whose errors an exception is.
    driver_packages: ClassVar[tuple[str, ...]] = ()
    table_schema: ClassVar[str | None] = None  # where the msd_* tables live (None: default)
    default_chunk_rows: ClassVar[int] = 10_000  # rows converted and sent per bulk chunk
    # Bound parameters one statement may carry (SQL Server's limit is 2,100).
    max_bind_parameters: ClassVar[int] = 2_000
    default_lock_timeout_s: ClassVar[float | None] = None  # None: the server's own
    lock_timeout_setting: ClassVar[str] = "lock timeout"  # named in lock-timeout errors
    distinct_national_text: ClassVar[bool] = False  # VARCHAR vs NVARCHAR (SQL Server)
    temp_schema: ClassVar[str] = ""  # prefix naming a temporary table in DROP ("pg_temp.")
    # The dialect's INSERT with ON CONFLICT (PostgreSQL, SQLite): upserts use it when set.
    on_conflict_insert: ClassVar[Callable[[sa.Table], Any] | None] = None
    # The backend's own upsert SQL (MySQL's ON DUPLICATE KEY, SQL Server's MERGE), from the
    # dialect, the target and the stage: used when set, instead of the INSERT above.
    upsert_sql: ClassVar[Callable[[sa.Dialect, sa.Table, sa.Table], str] | None] = None

    # Table definitions: this backend's type for a portable column kind where it differs from
    # the portable one (a variant of the column type for :attr:`dialect_names`), and keyword
    # arguments every table gets (dialect-prefixed: ``mysql_charset``).
    column_types: ClassVar[Mapping[ColumnKind, ColumnVariant]] = {}
    table_options: ClassVar[Mapping[str, Any]] = {}
    # The offline dialect whose compiled column types are part of the schema fingerprint
    # (``ddl.schema_fingerprint``). None, the default: a new backend is not part of it, so
    # registering one leaves the fingerprint every existing database recorded as it is.
    # Opting in changes that fingerprint: do it together with a SCHEMA_VERSION bump.
    fingerprint_dialect: ClassVar[sa.Dialect | None] = None

    # Options of one engine.
    driver: str = ""
    lock_timeout_s: float | None = None  # None: default_lock_timeout_s

    def __post_init__(self) -> None:
        if self.lock_timeout_s is None:
            object.__setattr__(self, "lock_timeout_s", self.default_lock_timeout_s)

    # ----------------------------------------------------------------------------------------
    # Engines and connections

    def database_folder(self, url: sa.URL) -> Path | None:
        """The local folder holding the database's file (SQLite); None for a server."""
        return None

    def engine_options(
        self, url: sa.URL, options: dict[str, Any], connect_args: dict[str, Any]
    ) -> sa.URL:
        """Adjust ``url``, engine ``options`` and driver ``connect_args`` (in place) before the
        engine is created; return the URL to connect to."""
        return url

    def configure_engine(self, engine: sa.Engine) -> None:
        """Install event listeners on a new engine, before its first connection."""

    def writer(self, conn: sa.Connection) -> sa.Connection:
        """``conn`` set up to take the write lock when its transaction begins (SQLite)."""
        return conn

    def prepare_load_connection(self, conn: sa.Connection) -> sa.Connection:
        """``conn`` (just opened, no transaction yet) ready for a partition load."""
        return self.writer(conn)

    @contextlib.contextmanager
    def schema_lock(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        """A connection in a transaction holding a database-wide lock, so concurrent
        ``ensure_schema`` calls serialize."""
        with engine.connect() as conn:
            conn = self.writer(conn)
            with conn.begin():
                self.lock_schema(conn)
                yield conn

    def lock_schema(self, conn: sa.Connection) -> None:
        """Take the schema lock inside ``conn``'s transaction."""

    def lock_partition(self, conn: sa.Connection, partition_key: str) -> None:
        """Make concurrent loads of one partition take turns, from the start of ``conn``'s
        transaction to its end (nothing to do where a load's first DELETE already waits for
        the other load's new rows: SQLite's single writer)."""

    def release_partition(self, conn: sa.Connection, partition_key: str) -> None:
        """After the transaction: release a lock that is the session's, not the transaction's."""

    # ----------------------------------------------------------------------------------------
    # Physical layout

    def place_table(self, table: sa.Table, by_folder: bool) -> None:
        """Adapt ``table``, a copy of a definition placed for this backend, to how the backend
        creates it (e.g. partitioned); ``by_folder``: its rows are the folders' by track-id
        range (the analysis tables), so it may be partitioned by folder. Its columns, keys and
        indexes stay those of the definition, which the schema fingerprint covers."""

    def own_partition_tables(
        self, engine: sa.Engine, partition_key: str, by_folder: Sequence[str]
    ) -> dict[str, str]:
        """Before a partition's load transaction: of the tables ``by_folder`` (names), those
        that keep the partition's rows in a physical partition of their own, by name, with that
        partition's name (made if missing). A load empties those with ``TRUNCATE`` (which frees
        their space at once) instead of deleting the partition's rows. None here."""
        return {}

    def check_encoding(self, conn: sa.Connection) -> None:
        """Raise :class:`DatabaseEncodingError` when text cannot round-trip."""

    def float_bits(self, type_: sa.Float, type_name: str) -> int:
        """Bits of a reflected float column type (``type_name``: its class name, upper)."""
        precision = getattr(type_, "precision", None)
        if "REAL" in type_name or (precision is not None and precision <= 24):
            return 32
        return 64

    # ----------------------------------------------------------------------------------------
    # Bulk loading

    def chunk_rows(self, chunk_rows: int | None) -> int:
        if chunk_rows is None:
            return self.default_chunk_rows
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        return chunk_rows

    def bulk_path(self, conn: sa.Connection) -> BulkPath:
        """The fastest exact way this connection's driver writes a frame into a table."""
        return sqlalchemy_executemany

    @property
    def stages_outside_transaction(self) -> bool:
        """Whether :meth:`copy_outside_transaction` stages rows: then a partition's analysis
        rows must all be at hand before its transaction begins (no streaming in chunks)."""
        return False

    @contextlib.contextmanager
    def copy_outside_transaction(
        self,
        conn: sa.Connection,
        frames: Mapping[sa.Table, pd.DataFrame],
        chunk_rows: int | None,
    ) -> Iterator[dict[str, StagedCopy]]:
        """Bulk-copy frames before the load transaction begins, for drivers whose bulk copy
        cannot join it (:attr:`stages_outside_transaction`, through :meth:`stage_copies`);
        yields the staged copies by table name (none otherwise: every table is then written
        inside the transaction by :meth:`bulk_insert`)."""
        if not self.stages_outside_transaction:
            yield {}
            return
        with self.stage_copies(conn, frames, self.chunk_rows(chunk_rows)) as staged:
            yield dict(staged)

    def stage_copies(
        self, conn: sa.Connection, frames: Mapping[sa.Table, pd.DataFrame], chunk_rows: int
    ) -> contextlib.AbstractContextManager[Mapping[str, StagedCopy]]:
        """The bulk copy of a backend that :attr:`stages_outside_transaction`."""
        raise NotImplementedError(f"{self.display_name} stages nothing outside a transaction")

    # ----------------------------------------------------------------------------------------
    # Catalog

    # How :meth:`table_row_counts` counts, shown beside the counts.
    row_count_method: ClassVar[str] = "exact: COUNT(*)"
    # A catalog query of ``(table name, rows)`` for the tables named in ``:names`` (expanded
    # into an IN list), where the backend keeps such a figure; None: count the rows.
    row_count_query: ClassVar[str | None] = None

    def table_row_counts(self, conn: sa.Connection, tables: Sequence[sa.Table]) -> dict[str, int]:
        """Rows per table, cheaply (a statistic or the catalog where the backend keeps one;
        :attr:`row_count_method` says which)."""
        if self.row_count_query is None:
            return {
                t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in tables
            }
        statement = sa.text(self.row_count_query).bindparams(sa.bindparam("names", expanding=True))
        rows = conn.execute(statement, {"names": [t.name for t in tables]})
        return {name: int(count or 0) for name, count in rows}

    # ----------------------------------------------------------------------------------------
    # Staging tables and upserts

    def stage_name(self, target: sa.Table) -> str:
        return STAGE_PREFIX + target.name

    def stage_table_kwargs(self) -> dict[str, Any]:
        return {"prefixes": ["TEMPORARY"]}

    def drop_stage_sql(self, dialect: sa.Dialect, stage: sa.Table) -> str:
        quoted = dialect.identifier_preparer.quote(stage.name)
        return f"DROP TABLE IF EXISTS {self.temp_schema}{quoted}"

    def upsert_statement(
        self, dialect: sa.Dialect, target: sa.Table, stage: sa.Table
    ) -> sa.Executable | str:
        """The set-based statement moving ``stage`` into ``target`` (merge_rules): the
        backend's :attr:`upsert_sql`, else INSERT ... ON CONFLICT where the dialect has it,
        else (generic SQL) a plain insert of the missing keys, without concurrent-insert
        protection."""
        if self.upsert_sql is not None:
            return self.upsert_sql(dialect, target, stage)
        if self.on_conflict_insert is not None:
            return on_conflict_upsert(self.on_conflict_insert, target, stage)
        return insert_missing(target, stage)

    # ----------------------------------------------------------------------------------------
    # Errors

    @classmethod
    def lock_error(cls, orig: BaseException) -> LockErrorKind | None:
        """``"deadlock"`` / ``"lock timeout"`` when the driver error ``orig`` is one (the
        transaction can simply be rerun), else None."""
        return None

    def lock_timeout_text(self) -> str:
        """The configured lock wait, for messages: ``PostgreSQL lock_timeout = 60 s``."""
        if self.lock_timeout_s is None:
            return f"{self.display_name} {self.lock_timeout_setting}: the server's default"
        return f"{self.display_name} {self.lock_timeout_setting} = {self.lock_timeout_s:g} s"


# --------------------------------------------------------------------------------------------
# Helpers shared by several backends


def on_conflict_upsert(
    insert: Callable[[sa.Table], Any], target: sa.Table, stage: sa.Table
) -> sa.Executable:
    """``INSERT ... SELECT ... ON CONFLICT`` (PostgreSQL and SQLite) implementing merge_rules;
    ``insert`` is the dialect's ``insert`` construct."""
    keys, columns, attributes, is_artist = merge_columns(target, stage)
    order = [stage.c[k] for k in keys]
    # WHERE true: SQLite needs a WHERE before an upsert clause to parse INSERT ... SELECT.
    ordered = sa.select(*stage.c).where(sa.true()).order_by(*order)
    if is_artist:
        stmt = insert(target).from_select(columns, ordered)
        wins = artist_wins(stmt.excluded[SOURCE_COLUMN], target.c[SOURCE_COLUMN])
        set_ = {
            c: merged_artist_value(wins, stmt.excluded[c], target.c[c])
            for c in attributes
            if c != SOURCE_COLUMN
        }
        set_[SOURCE_COLUMN] = sa.case(
            (wins, stmt.excluded[SOURCE_COLUMN]), else_=target.c[SOURCE_COLUMN]
        )
        return stmt.on_conflict_do_update(index_elements=keys, set_=set_)
    if attributes:
        # Pairs with attributes (freq, weight, count, rank): fill the NULLs of existing rows.
        stmt = insert(target).from_select(columns, ordered)
        return stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c: sa.func.coalesce(target.c[c], stmt.excluded[c]) for c in attributes},
            where=sa.or_(
                *[sa.and_(target.c[c].is_(None), stmt.excluded[c].is_not(None)) for c in attributes]
            ),
        )
    missing = sa.select(*stage.c).where(key_absent(target, stage)).order_by(*order)
    # ON CONFLICT DO NOTHING covers a concurrent load inserting the same key meanwhile.
    return insert(target).from_select(columns, missing).on_conflict_do_nothing(index_elements=keys)


def query_value(query: Mapping[str, Any], key: str) -> str | None:
    """A URL query parameter, case-insensitively (the last one when repeated)."""
    for k, v in query.items():
        if k.lower() == key.lower():
            return v[-1] if isinstance(v, tuple) else v
    return None


def pop_query(url: sa.URL, keys: Sequence[str]) -> tuple[sa.URL, str | None]:
    """``url`` without the query parameters ``keys`` (lowercase), and the last value found."""
    found = None
    remaining: dict[str, Any] = {}
    for key, value in url.query.items():
        if key.lower() in keys:
            found = value[-1] if isinstance(value, tuple) else value
        else:
            remaining[key] = value
    return url.set(query=remaining), found


def sqlalchemy_executemany(job: BulkJob) -> int:
    conn, table, columns, df, chunk_rows = job
    """Unknown driver: SQLAlchemy's own executemany / insertmanyvalues batching."""
    names = [c.name for c in columns]
    written = 0
    for rows in row_batches(df, columns, chunk_rows):
        conn.execute(sa.insert(table), [dict(zip(names, row, strict=True)) for row in rows])
        written += len(rows)
    return written
