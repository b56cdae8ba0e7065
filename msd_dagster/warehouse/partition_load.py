"""Load one partition (an ``X/Y`` folder of song files) into the ``msd_*`` tables atomically.

One transaction per partition:

1. Shared, artist-level tables are upserted from temporary staging tables (bulk-loaded, then one
   set-based statement per table): rows whose natural key is missing are inserted, nothing is
   ever deleted. ``msd_artist``: the incoming row wins when it comes from a song file with a
   smaller or equal ``source_track_id``; the winner's non-NULL values replace, every other
   source (another file, a stub, AdditionalFiles) only fills NULL columns. Term, tag and
   similarity pairs: existing rows only gain values where they are NULL (e.g. frequencies for a
   pair first known from AdditionalFiles). So the result does not depend on load order.
2. The partition's track rows are replaced: deleted from the five analysis tables and
   ``msd_track`` by track-id range, then bulk-inserted.

Any failure rolls everything back, so the previous contents stay intact; rerunning a partition
with the same frames gives the same contents. Deadlocks between concurrent partition loads are
retried (the whole transaction, which is safe because it is all-or-nothing).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.ddl import (
    SQLITE_BEGIN_OPTION,
    qualified_name,
    sqlite_pragmas_installed,
    warehouse_table,
)
from msd_dagster.warehouse.schema import (
    CHECKED_REFERENCES,
    NATURAL_KEYS,
    SHARED_TABLES,
    TABLES_BY_NAME,
    TRACK_TABLES,
    load_columns,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_PARTITION_KEY = re.compile(r"[A-Z]/[A-Z]")
SOURCE_COLUMN = "source_track_id"
STAGE_PREFIX = "msd_stage_"


def partition_track_range(partition_key: str) -> tuple[str, str]:
    """Half-open ``track_id`` range ``[lo, hi)`` of a partition: ``"A/B"`` -> ``("TRAB", "TRAC")``.

    ``hi`` is always made of uppercase letters (``"A/Z"`` -> ``("TRAZ", "TRB")``, ``"Z/Z"`` ->
    ``("TRZZ", "TS")``), so the range is the same under any collation.
    """
    if not isinstance(partition_key, str) or not _PARTITION_KEY.fullmatch(partition_key):
        raise ValueError(
            f"invalid partition key {partition_key!r}: expected two uppercase letters separated "
            "by '/', the second-level folder of the dataset (e.g. 'A/B')"
        )
    x, y = partition_key[0], partition_key[2]
    lo = f"TR{x}{y}"
    if y != "Z":
        hi = f"TR{x}{chr(ord(y) + 1)}"
    elif x != "Z":
        hi = f"TR{chr(ord(x) + 1)}"
    else:
        hi = "TS"
    return lo, hi


# --------------------------------------------------------------------------------------------
# Frames


def prepare_frames(
    frames: Mapping[str, pd.DataFrame], partition_key: str
) -> dict[str, pd.DataFrame]:
    """Validate the twelve frames and put their columns in table order.

    Track tables must only hold track ids of the partition (a stray row would survive a rerun
    of this partition and be deleted by another's). Shared tables are sorted by natural key
    (consistent lock order between concurrent loads) and deduplicated: ``msd_artist`` keeps the
    row with the smallest ``source_track_id`` (NULL last), other tables the first occurrence.
    """
    lo, hi = partition_track_range(partition_key)
    missing = sorted(set(TABLES_BY_NAME) - set(frames))
    unknown = sorted(set(frames) - set(TABLES_BY_NAME))
    if missing or unknown:
        raise ValueError(
            f"frames must be keyed by the twelve msd_* tables: missing {missing or 'none'}, "
            f"unknown {unknown or 'none'}"
        )
    prepared: dict[str, pd.DataFrame] = {}
    for name, table in TABLES_BY_NAME.items():
        df = frames[name]
        columns = load_columns(table)
        absent = [c for c in columns if c not in df.columns]
        extra = [str(c) for c in df.columns if c not in set(columns)]
        if absent or extra:
            raise ValueError(
                f"frame {name}: missing column(s) {absent or 'none'}, "
                f"unexpected column(s) {extra or 'none'}"
            )
        if list(df.columns) != columns:  # the normalized frames are already in table order
            df = df[columns]
        keys = list(NATURAL_KEYS[name])
        null_keys = df[keys].isna().any(axis=1)
        if null_keys.any():
            raise ValueError(f"frame {name}: {int(null_keys.sum())} row(s) with a NULL natural key")
        if table in TRACK_TABLES:
            track_ids = df["track_id"]
            outside = ~((track_ids >= lo) & (track_ids < hi))
            if outside.any():
                examples = list(track_ids[outside].astype(str).unique()[:3])
                raise ValueError(
                    f"frame {name}: {int(outside.sum())} row(s) outside partition {partition_key} "
                    f"(track ids must start with {lo!r}), e.g. {examples}"
                )
        else:
            if name == "msd_artist":
                df = df.sort_values(["artist_id", SOURCE_COLUMN], na_position="last", kind="stable")
            else:
                df = df.sort_values(keys, kind="stable")
            df = df.drop_duplicates(subset=keys, keep="first")
        prepared[name] = df
    for ref in CHECKED_REFERENCES:  # no database constraint catches these (schema docstring)
        child = prepared[ref.table][ref.column]
        unknown = ~child.isin(prepared[ref.parent_table][ref.parent_column])
        if unknown.any():
            examples = list(child[unknown].astype(str).unique()[:3])
            raise ValueError(
                f"frame {ref.table}: {int(unknown.sum())} row(s) whose {ref.column} is not in "
                f"the {ref.parent_table} frame of this partition, e.g. {examples}"
            )
    return prepared


# --------------------------------------------------------------------------------------------
# Staging and upserts


def stage_table(dialect: sa.Dialect, target: sa.Table) -> sa.Table:
    """A temporary table with ``target``'s loaded columns and its natural key as primary key."""
    keys = NATURAL_KEYS[target.name]
    columns = [
        sa.Column(c.name, c.type, nullable=c.name not in keys)
        for c in target.columns
        if c.identity is None
    ]
    kwargs: dict[str, Any] = {}
    name = STAGE_PREFIX + target.name
    if dialect.name == "mssql":
        name = "#" + name  # local temp table: private to the session, lives in tempdb
    else:
        kwargs["prefixes"] = ["TEMPORARY"]
    if dialect.name == "postgresql":
        kwargs["postgresql_on_commit"] = "DROP"
    if dialect.name in ("mysql", "mariadb"):
        kwargs.update(mysql_charset="utf8mb4", mysql_collate="utf8mb4_bin")
    return sa.Table(name, sa.MetaData(), *columns, sa.PrimaryKeyConstraint(*keys), **kwargs)


def _drop_stage_sql(dialect: sa.Dialect, stage: sa.Table) -> str:
    quoted = dialect.identifier_preparer.quote(stage.name)
    if dialect.name in ("mysql", "mariadb"):
        return f"DROP TEMPORARY TABLE IF EXISTS {quoted}"  # plain DROP TABLE would commit
    if dialect.name == "sqlite":
        return f"DROP TABLE IF EXISTS temp.{quoted}"
    if dialect.name == "postgresql":
        return f"DROP TABLE IF EXISTS pg_temp.{quoted}"
    if dialect.name == "mssql":
        return f"IF OBJECT_ID('tempdb..{stage.name}') IS NOT NULL DROP TABLE {quoted}"
    return f"DROP TABLE IF EXISTS {quoted}"


def _key_match(a: sa.Table, b: sa.Table, keys: Sequence[str]) -> sa.ColumnElement[bool]:
    return sa.and_(*[a.c[k] == b.c[k] for k in keys])


def artist_wins(
    incoming: sa.ColumnElement[Any], existing: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    """The incoming artist row wins: it comes from a song file whose track id is not larger.

    ``<=`` so that a rerun of the winning file's partition brings its corrected values.
    """
    return sa.and_(incoming.is_not(None), sa.or_(existing.is_(None), incoming <= existing))


def merged_artist_value(
    wins: sa.ColumnElement[bool], incoming: sa.ColumnElement[Any], existing: sa.ColumnElement[Any]
) -> sa.ColumnElement[Any]:
    """The winner's non-NULL values replace; every other source only fills NULL columns.

    So a location known only from AdditionalFiles (or from another file of the artist)
    survives a winning song file that lacks it, whatever the load order.
    """
    return sa.case(
        (wins, sa.func.coalesce(incoming, existing)), else_=sa.func.coalesce(existing, incoming)
    )


def upsert_statement(dialect: sa.Dialect, target: sa.Table, stage: sa.Table) -> sa.Executable | str:
    """The set-based statement moving ``stage`` into ``target`` (SQL text for MySQL/SQL Server)."""
    keys = list(NATURAL_KEYS[target.name])
    columns = [c.name for c in stage.columns]
    is_artist = SOURCE_COLUMN in columns
    attributes = [c for c in columns if c not in keys]
    if dialect.name == "mssql":
        return mssql_merge_sql(dialect, target, stage, keys, columns, is_artist)
    if dialect.name in ("mysql", "mariadb"):
        return mysql_upsert_sql(dialect, target, stage, keys, columns, is_artist)
    order = [stage.c[k] for k in keys]
    if dialect.name in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite_dialect.insert
        if is_artist:
            # WHERE true: SQLite needs a WHERE before an upsert clause to parse INSERT ... SELECT.
            select = sa.select(*stage.c).where(sa.true()).order_by(*order)
            stmt = insert(target).from_select(columns, select)
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
            select = sa.select(*stage.c).where(sa.true()).order_by(*order)
            stmt = insert(target).from_select(columns, select)
            return stmt.on_conflict_do_update(
                index_elements=keys,
                set_={c: sa.func.coalesce(target.c[c], stmt.excluded[c]) for c in attributes},
                where=sa.or_(
                    *[
                        sa.and_(target.c[c].is_(None), stmt.excluded[c].is_not(None))
                        for c in attributes
                    ]
                ),
            )
        select = (
            sa.select(*stage.c)
            .where(~sa.exists().where(_key_match(target, stage, keys)))
            .order_by(*order)
        )
        # ON CONFLICT DO NOTHING covers a concurrent load inserting the same key meanwhile.
        return (
            insert(target).from_select(columns, select).on_conflict_do_nothing(index_elements=keys)
        )
    # Other dialects: plain insert of missing keys (no concurrent-insert protection).
    select = sa.select(*stage.c).where(~sa.exists().where(_key_match(target, stage, keys)))
    return sa.insert(target).from_select(columns, select)


def mysql_upsert_sql(
    dialect: sa.Dialect,
    target: sa.Table,
    stage: sa.Table,
    keys: Sequence[str],
    columns: Sequence[str],
    is_artist: bool,
) -> str:
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


def mssql_merge_sql(
    dialect: sa.Dialect,
    target: sa.Table,
    stage: sa.Table,
    keys: Sequence[str],
    columns: Sequence[str],
    is_artist: bool,
) -> str:
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


def _execute(conn: sa.Connection, statement: sa.Executable | str) -> None:
    if isinstance(statement, str):
        conn.exec_driver_sql(statement)
    else:
        conn.execute(statement)


def _upsert_shared(
    conn: sa.Connection, target: sa.Table, df: pd.DataFrame, chunk_rows: int | None
) -> int:
    """Stage ``df`` and merge it into ``target``; return rows inserted + rows updated."""
    if df.empty:
        return 0
    dialect = conn.dialect
    keys = list(NATURAL_KEYS[target.name])
    stage = stage_table(dialect, target)
    conn.exec_driver_sql(_drop_stage_sql(dialect, stage))  # leftover of a failed load (MySQL)
    stage.create(conn)
    bulk_insert(conn, stage, df, chunk_rows=chunk_rows)
    # Counted before the merge, for reporting only (a concurrent load may shift them a little).
    inserted = conn.execute(
        sa.select(sa.func.count())
        .select_from(stage)
        .where(~sa.exists().where(_key_match(target, stage, keys)))
    ).scalar_one()
    updated = 0
    if SOURCE_COLUMN in stage.c:
        updated = conn.execute(
            sa.select(sa.func.count())
            .select_from(stage.join(target, _key_match(target, stage, keys)))
            .where(artist_wins(stage.c[SOURCE_COLUMN], target.c[SOURCE_COLUMN]))
        ).scalar_one()
    _execute(conn, upsert_statement(dialect, target, stage))
    conn.exec_driver_sql(_drop_stage_sql(dialect, stage))
    return int(inserted) + int(updated)


# --------------------------------------------------------------------------------------------
# Errors, retries


def _driver_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc


def is_retryable(exc: BaseException) -> bool:
    """A deadlock / lock timeout: the transaction was rolled back and can simply be rerun."""
    orig = _driver_error(exc)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in ("40P01", "40001"):  # PostgreSQL deadlock / serialization failure
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1205, 1213):  # MySQL lock wait timeout / deadlock
        return True
    message = str(orig)
    return "(1205)" in message and "deadlock" in message.lower()  # SQL Server victim


def retry_deadlocks(attempt: Callable[[], T], what: str, retries: int) -> T:
    """Run ``attempt`` (one whole transaction); rerun it with backoff after a deadlock or lock
    timeout, at most ``retries`` times. ``what`` names it in the warning."""
    tries = 0
    while True:
        try:
            return attempt()
        except Exception as exc:
            if tries >= retries or not is_retryable(exc):
                raise
            tries += 1
            delay = 0.2 * 2**tries * (0.5 + random.random())
            log.warning(
                "%s: %s; retrying the whole transaction in %.1f s (%d/%d)",
                what,
                type(_driver_error(exc)).__name__,
                delay,
                tries,
                retries,
            )
            time.sleep(delay)


def is_transient_database_error(exc: BaseException) -> bool:
    """Worth retrying later: a deadlock, a lost or refused connection, a lock timeout."""
    if is_retryable(exc):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def _invalidate_if_disconnected(conn: sa.Connection, exc: BaseException) -> None:
    # Raw driver errors (COPY, fast_executemany) bypass SQLAlchemy's disconnect detection:
    # make sure a killed connection is not returned to the pool.
    try:
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return
        orig = _driver_error(exc)
        dbapi = conn.dialect.loaded_dbapi
        if isinstance(orig, dbapi.Error) and conn.dialect.is_disconnect(
            orig, conn.connection.dbapi_connection, None
        ):
            conn.invalidate()
    except Exception:  # pragma: no cover - best effort only
        log.debug("could not check the connection after an error", exc_info=True)


def _open_load_connection(engine: sa.Engine) -> sa.Connection:
    conn = engine.connect()
    name = engine.dialect.name
    if name == "sqlite":
        if not sqlite_pragmas_installed(engine):
            # A plain engine: pysqlite runs PRAGMA outside a transaction, so this takes effect.
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()
        if conn.exec_driver_sql("PRAGMA foreign_keys").scalar() != 1:
            conn.close()
            raise RuntimeError("SQLite foreign keys could not be enabled on this engine")
        conn.rollback()
        # Take the write lock at BEGIN: concurrent loaders queue on the busy timeout.
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    elif name in ("mysql", "mariadb"):
        # No gap locks: concurrent loads of neighbouring partitions do not deadlock on the
        # range boundaries of their DELETEs.
        conn.execution_options(isolation_level="READ COMMITTED")
    return conn


def _load_once(
    engine: sa.Engine,
    lo: str,
    hi: str,
    prepared: Mapping[str, pd.DataFrame],
    chunk_rows: int | None,
    before_commit: Callable[[sa.Connection, Mapping[str, pd.DataFrame]], None] | None = None,
) -> dict[str, int]:
    dialect = engine.dialect
    counts: dict[str, int] = {}
    with _open_load_connection(engine) as conn:
        try:
            with conn.begin():
                for table in SHARED_TABLES:
                    target = warehouse_table(dialect, table)
                    counts[table.name] = _upsert_shared(
                        conn, target, prepared[table.name], chunk_rows
                    )
                for table in reversed(TRACK_TABLES):  # children before msd_track
                    target = warehouse_table(dialect, table)
                    conn.execute(
                        sa.delete(target).where(target.c.track_id >= lo, target.c.track_id < hi)
                    )
                for table in TRACK_TABLES:
                    target = warehouse_table(dialect, table)
                    counts[table.name] = bulk_insert(
                        conn, target, prepared[table.name], chunk_rows=chunk_rows
                    )
                if before_commit is not None:
                    before_commit(conn, prepared)  # raising rolls the whole partition back
        except BaseException as exc:
            _invalidate_if_disconnected(conn, exc)
            raise
    return counts


def load_partition(
    engine: sa.Engine,
    partition_key: str,
    frames: Mapping[str, pd.DataFrame],
    *,
    chunk_rows: int | None = None,
    deadlock_retries: int = 3,
    before_commit: Callable[[sa.Connection, Mapping[str, pd.DataFrame]], None] | None = None,
) -> dict[str, int]:
    """Write one partition in a single transaction; return rows written per table.

    ``before_commit(conn, prepared_frames)`` runs last in that transaction (e.g. verifying what was written);
    if it raises, nothing of the partition is committed.

    Shared tables report rows inserted + rows updated (artists whose winning source changed);
    track tables report rows inserted. ``frames`` maps each of the twelve ``msd_*`` table names
    to a DataFrame with exactly ``load_columns(table)``. Raises ``ValueError`` for invalid
    frames before touching the database; any database error rolls the partition back.
    """
    lo, hi = partition_track_range(partition_key)
    prepared = prepare_frames(frames, partition_key)
    return retry_deadlocks(
        lambda: _load_once(engine, lo, hi, prepared, chunk_rows, before_commit),
        f"partition {partition_key}",
        deadlock_retries,
    )
