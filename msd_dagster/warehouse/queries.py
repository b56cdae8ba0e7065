"""Counting queries for the asset checks, in SQLAlchemy Core (every dialect, quoting included).

Each function takes ``(conn_or_engine, table_name, partition_key | None)``. What "the rows of a
partition" means per table:

* track tables (``msd_track`` and the five analysis tables): ``track_id`` in the partition's
  range (:func:`~msd_dagster.warehouse.partition_load.partition_track_range`);
* ``msd_artist``, ``msd_artist_term``, ``msd_artist_mbtag``: rows of artists that have a track
  in the partition; ``msd_artist_similarity``: rows whose ``artist_id_1`` has a track in it.
  Stub artists (known only as someone's similar artist) therefore belong to no partition; with
  ``partition_key=None`` every row counts. The subquery uses ``ix_msd_track_artist_id`` and the
  track primary key, so it stays cheap;
* ``msd_r_term`` / ``msd_r_mbtag`` (dictionaries): all rows, whatever the partition.
"""

from __future__ import annotations

import sqlalchemy as sa

from msd_dagster.source.layout import partition_track_range
from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.schema import (
    NATURAL_KEYS,
    TABLES_BY_NAME,
    TRACK_TABLE_NAMES,
    references,
)

_ARTIST_COLUMN = {
    "msd_artist": "artist_id",
    "msd_artist_term": "artist_id",
    "msd_artist_mbtag": "artist_id",
    "msd_artist_similarity": "artist_id_1",
}


def _table(bind: sa.Engine | sa.Connection, table_name: str) -> sa.Table:
    if table_name not in TABLES_BY_NAME:
        raise ValueError(f"unknown table {table_name!r}; expected one of {sorted(TABLES_BY_NAME)}")
    return warehouse_table(bind, table_name)


def partition_filter(
    bind: sa.Engine | sa.Connection, table: sa.Table, partition_key: str | None
) -> sa.ColumnElement[bool] | None:
    """The WHERE clause selecting ``table``'s rows of a partition (None: no restriction)."""
    if partition_key is None:
        return None
    lo, hi = partition_track_range(partition_key)
    if table.name in TRACK_TABLE_NAMES:
        return sa.and_(table.c.track_id >= lo, table.c.track_id < hi)
    column = _ARTIST_COLUMN.get(table.name)
    if column is None:  # dictionaries are global
        return None
    track = warehouse_table(bind, "msd_track")
    artists = sa.select(track.c.artist_id).where(track.c.track_id >= lo, track.c.track_id < hi)
    return table.c[column].in_(artists)


def _scalar(bind: sa.Engine | sa.Connection, statement: sa.Select) -> int:
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return int(conn.execute(statement).scalar_one())
    return int(bind.execute(statement).scalar_one())


def _where(statement: sa.Select, condition: sa.ColumnElement[bool] | None) -> sa.Select:
    return statement if condition is None else statement.where(condition)


def count_rows(
    conn_or_engine: sa.Engine | sa.Connection, table_name: str, partition_key: str | None = None
) -> int:
    """Rows of ``table_name`` in the partition (module docstring), or in total."""
    table = _table(conn_or_engine, table_name)
    statement = sa.select(sa.func.count()).select_from(table)
    return _scalar(
        conn_or_engine, _where(statement, partition_filter(conn_or_engine, table, partition_key))
    )


def count_duplicate_natural_keys(
    conn_or_engine: sa.Engine | sa.Connection, table_name: str, partition_key: str | None = None
) -> int:
    """Number of natural-key values (``NATURAL_KEYS``) that occur more than once."""
    table = _table(conn_or_engine, table_name)
    keys = [table.c[k] for k in NATURAL_KEYS[table_name]]
    groups = _where(sa.select(*keys), partition_filter(conn_or_engine, table, partition_key))
    duplicated = groups.group_by(*keys).having(sa.func.count() > 1).subquery("duplicated")
    return _scalar(conn_or_engine, sa.select(sa.func.count()).select_from(duplicated))


def count_orphan_foreign_keys(
    conn_or_engine: sa.Engine | sa.Connection, table_name: str, partition_key: str | None = None
) -> int:
    """Rows whose reference (tracks -> artists, analysis rows -> tracks, artist_* -> artists),
    enforced or checked only (``schema.references``), has no parent row; a row failing two
    references counts twice. 0 for tables without one.
    """
    table = _table(conn_or_engine, table_name)
    condition = partition_filter(conn_or_engine, table, partition_key)
    total = 0
    for ref in references(table_name):
        parent_column = warehouse_table(conn_or_engine, ref.parent_table).c[ref.parent_column]
        child_column = table.c[ref.column]
        statement = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(
                child_column.is_not(None),
                ~sa.exists().where(parent_column == child_column),
            )
        )
        total += _scalar(conn_or_engine, _where(statement, condition))
    return total


def partition_track_ids(conn: sa.Connection, partition_key: str) -> list[str]:
    """Track ids of ``msd_track`` in the partition."""
    track = _table(conn, "msd_track")
    statement = sa.select(track.c.track_id).where(partition_filter(conn, track, partition_key))
    return list(conn.execute(statement).scalars())


def total_tracks(engine: sa.Engine | sa.Connection) -> int:
    """All rows of ``msd_track``."""
    return count_rows(engine, "msd_track", None)
