"""How staged rows merge into the shared tables, as SQLAlchemy expressions every backend reuses.

Shared, artist-level tables are upserted from staging tables (one per target, with the target's
loaded columns and its natural key as primary key). Rows whose natural key is missing are
inserted, nothing is ever deleted. ``msd_artist``: the incoming row wins when it comes from a
song file with a smaller or equal ``source_track_id``; the winner's non-NULL values replace,
every other source (another file, a stub, AdditionalFiles) only fills NULL columns. Term, tag
and similarity pairs: existing rows only gain values where they are NULL. So the result does
not depend on load order. The backends (:mod:`msd_dagster.warehouse.dialects`) turn these rules
into their own upsert statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

SOURCE_COLUMN = "source_track_id"
STAGE_PREFIX = "msd_stage_"


def stage_columns(target: sa.Table, keys: Sequence[str]) -> list[sa.Column]:
    """Columns of ``target``'s staging table: the loaded ones, NOT NULL on the natural key."""
    return [
        sa.Column(c.name, c.type, nullable=c.name not in keys)
        for c in target.columns
        if c.identity is None
    ]


def staged_key(stage: sa.Table) -> list[str]:
    """The natural key of a staging table's target: the staging table's primary key."""
    return [c.name for c in stage.primary_key.columns]


class MergeColumns(NamedTuple):
    """The columns an upsert from ``stage`` into ``target`` deals with."""

    keys: list[str]  # the natural key: matched, never updated
    columns: list[str]  # every staged column, in order
    attributes: list[str]  # the others
    is_artist: bool  # msd_artist's rule (source_track_id), else fill NULLs only


def merge_columns(target: sa.Table, stage: sa.Table) -> MergeColumns:
    keys = staged_key(stage)
    columns = [c.name for c in stage.columns]
    attributes = [c for c in columns if c not in keys]
    return MergeColumns(keys, columns, attributes, SOURCE_COLUMN in columns)


def key_match(a: sa.Table, b: sa.Table, keys: Sequence[str]) -> sa.ColumnElement[bool]:
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


def key_absent(target: sa.Table, stage: sa.Table) -> sa.ColumnElement[bool]:
    """The staged row's natural key is not in ``target``."""
    return ~sa.exists().where(key_match(target, stage, staged_key(stage)))


def insert_missing(target: sa.Table, stage: sa.Table) -> sa.Insert:
    """``INSERT INTO target SELECT ... FROM stage WHERE`` the natural key is not in target."""
    select = sa.select(*stage.c).where(key_absent(target, stage))
    return sa.insert(target).from_select([c.name for c in stage.columns], select)
