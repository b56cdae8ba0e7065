"""Create the ``msd_*`` tables idempotently, and refuse to write into tables that differ.

``ensure_schema(engine)`` is safe to call before every load (it is cheap and concurrent callers
serialize on a database lock). It

* creates missing tables (``checkfirst``) and records ``SCHEMA_VERSION`` and a fingerprint of
  the table definitions (their types compiled for each backend that opted in, so registering
  a new backend leaves it as it is) in ``msd_schema_version``;
* compares tables that already exist with the definitions (missing, extra or retyped columns,
  missing natural-key uniqueness, recorded version/fingerprint) and raises
  :class:`SchemaMismatchError` naming every difference instead of silently mixing layouts.

Where the tables are placed also lives here: in the backend's schema (``dbo`` on SQL Server,
:func:`warehouse_table`). What differs per backend (the schema lock, the encoding check, how a
reflected float reads) comes from :mod:`msd_dagster.warehouse.dialects`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from msd_dagster.warehouse.dialects import BACKENDS, Backend, backend_for
from msd_dagster.warehouse.schema import (
    ANALYSIS_TABLES,
    MSD_TABLES,
    NATURAL_KEYS,
    SCHEMA_VERSION,
    msd_schema_version,
)
from msd_dagster.warehouse.transactions import retry_transient

__all__ = [
    "ALL_TABLES",
    "SchemaMismatchError",
    "drop_schema",
    "ensure_schema",
    "schema_fingerprint",
    "warehouse_metadata",
    "warehouse_table",
]

ALL_TABLES: tuple[sa.Table, ...] = (msd_schema_version, *MSD_TABLES)
# Lost connections during the schema check are retried (it only reads, or creates what is
# missing under the schema lock), like a load's deadlocks.
SCHEMA_CHECK_RETRIES = 3


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


# --------------------------------------------------------------------------------------------
# Where the tables are

_placed: dict[tuple[str | None, str], sa.MetaData] = {}
# The tables whose rows are the folders' (by track-id range): a backend may partition them.
_BY_FOLDER = frozenset(t.name for t in ANALYSIS_TABLES)


def warehouse_metadata(bind: sa.Engine | sa.Connection | sa.Dialect) -> sa.MetaData:
    """The table definitions as they are placed on this backend (schema ``dbo`` on SQL Server,
    the analysis tables partitioned by folder on PostgreSQL: :meth:`Backend.place_table`).

    Explicit copies instead of a ``schema_translate_map``: staging ``#temp`` tables must not be
    translated, and textual statements (MERGE, COPY) can quote the real schema-qualified name.
    """
    backend = backend_for(bind)
    key = (backend.table_schema, backend.name)
    if key not in _placed:
        copy = sa.MetaData()
        for table in ALL_TABLES:  # parents first, so foreign keys resolve inside the copy
            placed = table.to_metadata(copy, schema=backend.table_schema)
            backend.place_table(placed, by_folder=table.name in _BY_FOLDER)
        _placed[key] = copy
    return _placed[key]


def warehouse_table(
    bind: sa.Engine | sa.Connection | sa.Dialect, table: sa.Table | str
) -> sa.Table:
    """The warehouse table ``table`` (object or name) as placed on this backend."""
    name = table if isinstance(table, str) else table.name
    schema = backend_for(bind).table_schema
    try:
        return warehouse_metadata(bind).tables[f"{schema}.{name}" if schema else name]
    except KeyError:
        raise ValueError(f"unknown warehouse table {name!r}") from None


# --------------------------------------------------------------------------------------------
# Fingerprint


def fingerprint_dialects(backends: Iterable[type[Backend]]) -> list[sa.Dialect]:
    """The offline dialects whose compiled column types the fingerprint holds: those of the
    backends that opted in (``Backend.fingerprint_dialect``), by name. Offline: the fingerprint
    is the same whatever database it is computed for."""
    dialects = (b.fingerprint_dialect for b in backends if b.fingerprint_dialect is not None)
    return sorted(dialects, key=lambda d: d.name)


def tables_fingerprint(tables: Iterable[sa.Table], dialects: Sequence[sa.Dialect]) -> str:
    """SHA-256 of table definitions (columns, compiled types per dialect, keys, indexes)."""
    description = []
    for table in sorted(tables, key=lambda t: t.name):
        columns = [
            [
                c.name,
                [c.type.compile(dialect=d) for d in dialects],
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


@functools.cache  # the definitions are fixed at import; every ensure_schema call needs it
def schema_fingerprint() -> str:
    """The fingerprint of the ``msd_*`` tables that ``msd_schema_version`` records."""
    return tables_fingerprint(ALL_TABLES, fingerprint_dialects(BACKENDS))


# --------------------------------------------------------------------------------------------
# Comparing existing tables with the definitions


def _type_signature(type_: sa.types.TypeEngine, backend: Backend) -> tuple[Any, ...]:
    """A comparable summary of a column type: family plus what decides whether data survives."""
    name = type(type_).__name__.upper()
    if isinstance(type_, sa.Float):
        return ("float", backend.float_bits(type_, name))
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
        if not backend.distinct_national_text:
            national = True  # every text is Unicode there
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
    backend = backend_for(dialect)
    expected = _type_signature(column.type.dialect_impl(dialect), backend)
    actual = _type_signature(reflected["type"], backend)
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


def _schema_state(conn: sa.Connection) -> tuple[set[str], list[str], list[tuple[Any, Any]]]:
    """(existing msd tables, differences from the definitions, recorded version rows)."""
    dialect = conn.dialect
    schema = backend_for(conn).table_schema
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
        backend_for(engine).check_encoding(conn)
        existing, problems, recorded = _schema_state(conn)
    return (
        not problems and len(recorded) == 1 and all(t.name.lower() in existing for t in ALL_TABLES)
    )


def ensure_schema(engine: sa.Engine) -> None:
    """Create missing ``msd_*`` tables and verify that existing ones match the definitions.

    Raises :class:`SchemaMismatchError` (listing every table/column difference and what to do)
    when existing tables or the recorded schema version/fingerprint differ; nothing is created
    or changed in that case. Raises :class:`DatabaseEncodingError` when the database cannot hold
    arbitrary Unicode. A lost connection or a lock timeout is retried a few times (then raised:
    ``is_transient_database_error`` says it is worth retrying later).
    """
    backend = backend_for(engine)
    retry_transient(
        lambda: _ensure_schema_once(engine, backend),
        "schema check",
        SCHEMA_CHECK_RETRIES,
        backend=backend,
    )


def _ensure_schema_once(engine: sa.Engine, backend: Backend) -> None:
    if _schema_is_current(engine):
        return
    dialect = engine.dialect
    with backend.schema_lock(engine) as conn:
        backend.check_encoding(conn)
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
