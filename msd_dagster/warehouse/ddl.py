"""Create the ``msd_*`` tables idempotently, and refuse to write into tables that differ.

``ensure_schema(engine)`` is safe to call before every load (it is cheap and concurrent callers
serialize on a database lock). It

* creates missing tables (``checkfirst``) and records ``SCHEMA_VERSION`` and a fingerprint of
  the table definitions in ``msd_schema_version``;
* compares tables that already exist with the definitions (missing, extra or retyped columns,
  missing natural-key uniqueness, recorded version/fingerprint) and raises
  :class:`SchemaMismatchError` naming every difference instead of silently mixing layouts.

Dialect helpers shared by the loader and the checks also live here: on SQL Server the tables
are placed in schema ``dbo`` (:func:`warehouse_table`), SQLite engines get foreign keys, WAL and
a busy timeout (:func:`install_sqlite_pragmas`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite

from msd_dagster.warehouse.schema import (
    MSD_TABLES,
    NATURAL_KEYS,
    SCHEMA_VERSION,
    metadata,
    msd_schema_version,
)

# SQL Server: every warehouse table lives in this schema (``SELECT COUNT(1) FROM dbo.msd_bar``).
MSSQL_SCHEMA = "dbo"

# Connection execution option read by the SQLite "begin" listener: "IMMEDIATE" takes the write
# lock when the transaction starts, so two loaders queue on the busy timeout instead of failing
# with SQLITE_BUSY when a deferred reader tries to upgrade to a writer.
SQLITE_BEGIN_OPTION = "msd_sqlite_begin"
DEFAULT_SQLITE_BUSY_TIMEOUT_S = 300.0

ALL_TABLES: tuple[sa.Table, ...] = (msd_schema_version, *MSD_TABLES)

_SCHEMA_LOCK_NAME = "msd_dagster_schema"
_PG_SCHEMA_LOCK_KEY = 0x6D73645F736368  # arbitrary constant bigint ("msd_sch")


class SchemaMismatchError(RuntimeError):
    """The database holds ``msd_*`` tables that do not match this code's definitions."""

    def __init__(self, problems: list[str], *, where: str = "the database") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{where} does not match the msd_* table definitions of this code "
            f"(schema version {SCHEMA_VERSION}, fingerprint {schema_fingerprint()[:12]}):\n"
            f"{lines}\n"
            "Nothing was written. The loader does not migrate tables: point the warehouse at a "
            "new, empty database; or drop the msd_* tables and msd_schema_version (they are "
            "recreated on the next run, and every partition must then be reloaded); or migrate "
            "them by hand and bump SCHEMA_VERSION in msd_dagster/warehouse/schema.py."
        )


class DatabaseEncodingError(RuntimeError):
    """The database or connection cannot store arbitrary Unicode text."""


# --------------------------------------------------------------------------------------------
# Dialect helpers


def _dialect_of(bind: sa.Engine | sa.Connection | sa.Dialect) -> sa.Dialect:
    return bind if isinstance(bind, sa.Dialect) else bind.dialect


_dbo_metadata: sa.MetaData | None = None


def warehouse_metadata(bind: sa.Engine | sa.Connection | sa.Dialect) -> sa.MetaData:
    """The table definitions as they are placed on this dialect (schema ``dbo`` on SQL Server).

    Explicit copies instead of a ``schema_translate_map``: staging ``#temp`` tables must not be
    translated, and textual statements (MERGE, COPY) can quote the real schema-qualified name.
    """
    global _dbo_metadata
    if _dialect_of(bind).name != "mssql":
        return metadata
    if _dbo_metadata is None:
        copy = sa.MetaData()
        for table in ALL_TABLES:  # parents first, so foreign keys resolve inside the copy
            table.to_metadata(copy, schema=MSSQL_SCHEMA)
        _dbo_metadata = copy
    return _dbo_metadata


def warehouse_table(
    bind: sa.Engine | sa.Connection | sa.Dialect, table: sa.Table | str
) -> sa.Table:
    """The warehouse table ``table`` (object or name) as placed on this dialect."""
    name = table if isinstance(table, str) else table.name
    md = warehouse_metadata(bind)
    key = f"{MSSQL_SCHEMA}.{name}" if md is not metadata else name
    try:
        return md.tables[key]
    except KeyError:
        raise ValueError(f"unknown warehouse table {name!r}") from None


def qualified_name(dialect: sa.Dialect, table: sa.Table) -> str:
    """The quoted, schema-qualified name of ``table`` for hand-written SQL (COPY, MERGE ...)."""
    prep = dialect.identifier_preparer
    name = prep.quote(table.name)
    return f"{prep.quote_schema(table.schema)}.{name}" if table.schema else name


# --------------------------------------------------------------------------------------------
# SQLite engines

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
    if engine.dialect.name != "sqlite" or engine in _sqlite_configured:
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


# --------------------------------------------------------------------------------------------
# Fingerprint

# Offline dialects: the fingerprint is the same whatever database it is computed for.
_FINGERPRINT_DIALECTS: tuple[sa.Dialect, ...] = (
    mssql.dialect(),
    mysql.dialect(),
    postgresql.dialect(),
    sqlite.dialect(),
)


@functools.cache  # the definitions are fixed at import; every ensure_schema call needs it
def schema_fingerprint() -> str:
    """SHA-256 of the table definitions (columns, compiled types per dialect, keys, indexes)."""
    description = []
    for table in sorted(ALL_TABLES, key=lambda t: t.name):
        columns = [
            [
                c.name,
                [c.type.compile(dialect=d) for d in _FINGERPRINT_DIALECTS],
                bool(c.nullable),
                bool(c.primary_key),
                c.identity is not None,
                sorted(fk.target_fullname for fk in c.foreign_keys),
            ]
            for c in table.columns
        ]
        uniques = sorted(
            sorted(col.name for col in con.columns)
            for con in table.constraints
            if isinstance(con, sa.UniqueConstraint)
        )
        indexes = sorted(
            [str(i.name), [c.name for c in i.columns], bool(i.unique)] for i in table.indexes
        )
        description.append([table.name, columns, uniques, indexes])
    blob = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Comparing existing tables with the definitions


def _type_signature(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> tuple[Any, ...]:
    """A comparable summary of a column type: family plus what decides whether data survives."""
    name = type(type_).__name__.upper()
    if isinstance(type_, sa.Float):
        precision = getattr(type_, "precision", None)
        if dialect.name == "sqlite":
            bits = 64  # SQLite REAL is always an 8-byte IEEE double
        elif "REAL" in name:
            bits = 32
        elif dialect.name in ("mysql", "mariadb") and "DOUBLE" not in name:
            bits = 64 if precision is not None and precision > 24 else 32
        elif precision is not None and precision <= 24:
            bits = 32
        else:
            bits = 64
        return ("float", bits)
    if isinstance(type_, sa.Numeric):
        return ("decimal", getattr(type_, "precision", None), getattr(type_, "scale", None))
    if isinstance(type_, sa.Integer):
        if isinstance(type_, sa.BigInteger):
            bits = 64
        elif isinstance(type_, sa.SmallInteger) or "TINYINT" in name or "MEDIUMINT" in name:
            bits = 16
        else:
            bits = 32
        return ("int", bits)
    if isinstance(type_, sa.String):
        national = isinstance(type_, sa.Unicode | sa.NCHAR | sa.NVARCHAR) or name.startswith("N")
        if dialect.name != "mssql":
            national = True  # only SQL Server has separate non-Unicode text types
        return ("text", getattr(type_, "length", None), national)
    if isinstance(type_, sa.DateTime):
        return ("datetime",)
    return ("other", name)


def _describe(sig: tuple[Any, ...]) -> str:
    kind = sig[0]
    if kind == "float":
        return f"{sig[1]}-bit float"
    if kind == "int":
        return f"{sig[1]}-bit integer"
    if kind == "text":
        width = "unbounded" if sig[1] is None else f"{sig[1]} characters"
        return f"{'Unicode ' if sig[2] else 'non-Unicode '}text of {width}"
    return " ".join(str(s) for s in sig if s is not None)


def _column_problem(
    table: str, column: sa.Column, reflected: dict[str, Any], dialect: sa.Dialect
) -> str | None:
    expected = _type_signature(column.type.dialect_impl(dialect), dialect)
    actual = _type_signature(reflected["type"], dialect)
    where = f"{table}.{column.name}: database type {reflected['type']}"
    if expected[0] != actual[0]:
        return f"{where} is {_describe(actual)}, the definition needs {_describe(expected)}"
    if expected[0] in ("float", "int") and actual[1] < expected[1]:
        return f"{where} is a {_describe(actual)}, the definition needs a {_describe(expected)}"
    if expected[0] == "text":
        exp_len, act_len = expected[1], actual[1]
        if act_len is not None and exp_len is not None and act_len < exp_len:
            return f"{where} holds {act_len} characters, the definition needs {exp_len}"
        if expected[2] and not actual[2]:
            return f"{where} is not Unicode (NVARCHAR needed): non-Latin text would be lost"
    if expected[0] == "decimal" and expected != actual:
        return f"{where} differs from {column.type}"
    if not column.nullable and reflected.get("nullable", True) and not column.primary_key:
        return f"{table}.{column.name}: nullable in the database, NOT NULL in the definition"
    return None


def _table_problems(
    inspector: sa.Inspector, table: sa.Table, schema: str | None, dialect: sa.Dialect
) -> list[str]:
    problems: list[str] = []
    reflected = {c["name"].lower(): c for c in inspector.get_columns(table.name, schema=schema)}
    expected = {c.name.lower(): c for c in table.columns}
    missing = [c.name for k, c in expected.items() if k not in reflected]
    extra = [c["name"] for k, c in reflected.items() if k not in expected]
    if missing:
        problems.append(f"{table.name}: missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"{table.name}: extra column(s) {', '.join(extra)} not in the definition")
    for key, column in expected.items():
        if key in reflected:
            problem = _column_problem(table.name, column, reflected[key], dialect)
            if problem:
                problems.append(problem)
    natural = NATURAL_KEYS.get(table.name) or tuple(c.name for c in table.primary_key.columns)
    if not missing:
        unique_sets = [
            {
                c.lower()
                for c in inspector.get_pk_constraint(table.name, schema=schema).get(
                    "constrained_columns"
                )
                or []
            }
        ]
        unique_sets += [
            {c.lower() for c in u["column_names"]}
            for u in inspector.get_unique_constraints(table.name, schema=schema)
        ]
        unique_sets += [
            {c.lower() for c in i["column_names"] if c}
            for i in inspector.get_indexes(table.name, schema=schema)
            if i.get("unique")
        ]
        if {k.lower() for k in natural} not in unique_sets:
            problems.append(
                f"{table.name}: no primary key or unique constraint on ({', '.join(natural)}); "
                "reruns would duplicate rows"
            )
    return problems


# --------------------------------------------------------------------------------------------
# ensure_schema


@contextlib.contextmanager
def _schema_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection holding a database-wide lock, so concurrent ensure_schema calls serialize."""
    name = engine.dialect.name
    with engine.connect() as conn:
        if name == "sqlite":
            conn = conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        if name in ("mysql", "mariadb"):
            # DDL commits implicitly on MySQL, so the lock is a session lock, not a transaction.
            got = conn.exec_driver_sql(f"SELECT GET_LOCK('{_SCHEMA_LOCK_NAME}', 600)").scalar()
            if got != 1:
                raise TimeoutError("could not acquire the schema lock (GET_LOCK) in 600 s")
            try:
                yield conn
                conn.commit()
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.rollback()
                    conn.exec_driver_sql(f"SELECT RELEASE_LOCK('{_SCHEMA_LOCK_NAME}')")
                    conn.commit()
            return
        with conn.begin():
            if name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK_KEY)))
            elif name == "mssql":
                conn.exec_driver_sql(
                    f"EXEC sp_getapplock @Resource = '{_SCHEMA_LOCK_NAME}', "
                    "@LockMode = 'Exclusive', @LockOwner = 'Transaction', @LockTimeout = 600000"
                )
            yield conn


def _check_encoding(conn: sa.Connection) -> None:
    name = conn.dialect.name
    if name == "postgresql":
        encoding = conn.exec_driver_sql("SHOW server_encoding").scalar()
        if str(encoding).upper() not in ("UTF8", "UTF-8"):
            raise DatabaseEncodingError(
                f"PostgreSQL database encoding is {encoding}: non-Latin text (e.g. Gurmukhi or CJK "
                "tags) cannot be stored. Create the database with ENCODING 'UTF8' "
                "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)."
            )
    elif name in ("mysql", "mariadb"):
        charset = conn.exec_driver_sql("SELECT @@character_set_connection").scalar()
        if str(charset).lower() != "utf8mb4":
            raise DatabaseEncodingError(
                f"MySQL connection character set is {charset}: 4-byte characters (emoji, rare CJK) "
                "would be rejected or replaced. Connect with ?charset=utf8mb4 "
                "(create_engine_for_url does this)."
            )


def _schema_state(conn: sa.Connection) -> tuple[set[str], list[str], list[tuple[Any, Any]]]:
    """(existing msd tables, differences from the definitions, recorded version rows)."""
    dialect = conn.dialect
    schema = MSSQL_SCHEMA if dialect.name == "mssql" else None
    fingerprint = schema_fingerprint()
    inspector = sa.inspect(conn)
    existing = {n.lower() for n in inspector.get_table_names(schema=schema)}
    problems: list[str] = []
    for table in ALL_TABLES:
        if table.name.lower() in existing:
            problems.extend(_table_problems(inspector, table, schema, dialect))
    recorded: list[tuple[Any, Any]] = []
    if msd_schema_version.name in existing and not problems:
        version_table = warehouse_table(dialect, msd_schema_version)
        recorded = [
            tuple(r)
            for r in conn.execute(
                sa.select(version_table.c.schema_version, version_table.c.fingerprint)
            )
        ]
    for version, recorded_fp in recorded:
        if version != SCHEMA_VERSION:
            problems.append(
                f"msd_schema_version: the database was created for schema version {version}, "
                f"this code writes version {SCHEMA_VERSION}"
            )
        elif recorded_fp != fingerprint:
            problems.append(
                f"msd_schema_version: recorded fingerprint {str(recorded_fp)[:12]} differs "
                f"from this code's {fingerprint[:12]} (table definitions changed without a "
                "SCHEMA_VERSION bump, or another version of the code created them)"
            )
    return existing, problems, recorded


def _schema_is_current(engine: sa.Engine) -> bool:
    """Every table exists, matches and is recorded: checked without the schema lock, so a load
    does not wait for another partition's load transaction (SQLite's single write lock)."""
    with engine.connect() as conn:
        _check_encoding(conn)
        existing, problems, recorded = _schema_state(conn)
    return (
        not problems and len(recorded) == 1 and all(t.name.lower() in existing for t in ALL_TABLES)
    )


def ensure_schema(engine: sa.Engine) -> None:
    """Create missing ``msd_*`` tables and verify that existing ones match the definitions.

    Raises :class:`SchemaMismatchError` (listing every table/column difference and what to do)
    when existing tables or the recorded schema version/fingerprint differ; nothing is created
    or changed in that case. Raises :class:`DatabaseEncodingError` when the database cannot hold
    arbitrary Unicode.
    """
    if _schema_is_current(engine):
        return
    dialect = engine.dialect
    with _schema_lock(engine) as conn:
        _check_encoding(conn)
        _existing, problems, recorded = _schema_state(conn)
        if problems:
            raise SchemaMismatchError(problems)
        warehouse_metadata(dialect).create_all(conn, checkfirst=True)
        if not recorded:
            conn.execute(
                sa.insert(warehouse_table(dialect, msd_schema_version)).values(
                    schema_version=SCHEMA_VERSION, fingerprint=schema_fingerprint()
                )
            )


def drop_schema(engine: sa.Engine) -> None:
    """Drop every ``msd_*`` table and ``msd_schema_version`` (tests, or a deliberate reset)."""
    md = warehouse_metadata(engine.dialect)
    with engine.begin() as conn:
        md.drop_all(conn, checkfirst=True)
