"""Staging tables and upserts of the shared tables, for partition loads and AdditionalFiles.

A frame is bulk-loaded into a temporary staging table (:func:`create_stage`: the target's
loaded columns, its natural key as primary key, DDL and name from the backend), then merged
into the target with one set-based statement (:func:`upsert_statement`, the backend's form of
:mod:`msd_dagster.warehouse.merge_rules`), all inside the caller's transaction.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.dialects import backend_for
from msd_dagster.warehouse.merge_rules import (
    SOURCE_COLUMN,
    STAGE_PREFIX,
    artist_wins,
    key_absent,
    key_match,
    merged_artist_value,
    stage_columns,
)
from msd_dagster.warehouse.schema import NATURAL_KEYS

__all__ = [
    "SOURCE_COLUMN",
    "STAGE_PREFIX",
    "artist_wins",
    "create_stage",
    "drop_stage",
    "drop_stage_sql",
    "execute",
    "key_match",
    "merged_artist_value",
    "stage_table",
    "upsert_shared",
    "upsert_statement",
]


def stage_table(dialect: sa.Dialect, target: sa.Table) -> sa.Table:
    """A temporary table with ``target``'s loaded columns and its natural key as primary key."""
    backend = backend_for(dialect)
    keys = NATURAL_KEYS[target.name]
    return sa.Table(
        backend.stage_name(target),
        sa.MetaData(),
        *stage_columns(target, keys),
        sa.PrimaryKeyConstraint(*keys),
        **backend.stage_table_kwargs(),
    )


def drop_stage_sql(dialect: sa.Dialect, stage: sa.Table) -> str:
    """``DROP`` of a staging table if it exists, without committing (MySQL) the transaction."""
    return backend_for(dialect).drop_stage_sql(dialect, stage)


def upsert_statement(dialect: sa.Dialect, target: sa.Table, stage: sa.Table) -> sa.Executable | str:
    """The set-based statement moving ``stage`` into ``target`` (SQL text for MySQL/SQL Server)."""
    return backend_for(dialect).upsert_statement(dialect, target, stage)


def execute(conn: sa.Connection, statement: sa.Executable | str) -> None:
    if isinstance(statement, str):
        conn.exec_driver_sql(statement)
    else:
        conn.execute(statement)


def drop_stage(conn: sa.Connection, stage: sa.Table) -> None:
    conn.exec_driver_sql(drop_stage_sql(conn.dialect, stage))


def create_stage(
    conn: sa.Connection, target: sa.Table, df: pd.DataFrame, chunk_rows: int | None
) -> sa.Table:
    """``target``'s staging table, created in ``conn``'s transaction and holding ``df``."""
    stage = stage_table(conn.dialect, target)
    drop_stage(conn, stage)  # leftover of a failed load on this session (MySQL)
    stage.create(conn)
    bulk_insert(conn, stage, df, chunk_rows=chunk_rows)
    return stage


class Upserted(NamedTuple):
    """``written``: rows inserted + rows updated; ``missing``: staged keys that ``target``
    still lacks after the merge (0 unless something is wrong: the checks report it)."""

    written: int
    missing: int


def upsert_shared(
    conn: sa.Connection, target: sa.Table, df: pd.DataFrame, chunk_rows: int | None
) -> Upserted:
    """Stage ``df`` and merge it into ``target``."""
    if df.empty:
        return Upserted(0, 0)
    stage = create_stage(conn, target, df, chunk_rows)
    # Counted before the merge, for reporting only (a concurrent load may shift them a little).
    inserted = conn.execute(
        sa.select(sa.func.count()).select_from(stage).where(key_absent(target, stage))
    ).scalar_one()
    updated = 0
    if SOURCE_COLUMN in stage.c:
        match = key_match(target, stage, NATURAL_KEYS[target.name])
        updated = conn.execute(
            sa.select(sa.func.count())
            .select_from(stage.join(target, match))
            .where(artist_wins(stage.c[SOURCE_COLUMN], target.c[SOURCE_COLUMN]))
        ).scalar_one()
    execute(conn, upsert_statement(conn.dialect, target, stage))
    # Verified in the database, while the staged keys are at hand (the partition checks).
    missing = conn.execute(
        sa.select(sa.func.count()).select_from(stage).where(key_absent(target, stage))
    ).scalar_one()
    drop_stage(conn, stage)
    return Upserted(int(inserted) + int(updated), int(missing))
