"""Load only the shared, artist-level tables (no track rows), e.g. from the AdditionalFiles.

``load_shared_tables`` writes the six shared tables (``msd_r_term``, ``msd_r_mbtag``,
``msd_artist``, ``msd_artist_term``, ``msd_artist_mbtag``, ``msd_artist_similarity``) in one
transaction with the staging and upsert machinery of :mod:`.staging`:

* rows whose natural key is missing are inserted (the partition loads' upsert statement);
* rows that exist are never overwritten: an incoming row may only **fill** columns that are
  NULL in the existing row (``COALESCE(existing, incoming)``), so a song-file row keeps every
  value it has, and gains e.g. a location it lacks. ``source_track_id`` is never filled;
* nothing is deleted.

The incoming ``msd_artist`` rows are meant to have ``source_track_id`` NULL (AdditionalFiles
rows): the upsert never lets a NULL-source row replace an existing one (merge_rules), and this
module adds the fill. Rerunning with the same frames changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.dialects import backend_for
from msd_dagster.warehouse.merge_rules import SOURCE_COLUMN, key_match
from msd_dagster.warehouse.partition_load import prepare_shared
from msd_dagster.warehouse.schema import (
    NATURAL_KEYS,
    SHARED_TABLES,
    load_columns,
)
from msd_dagster.warehouse.staging import create_stage, drop_stage, upsert_shared
from msd_dagster.warehouse.transactions import (
    invalidate_if_disconnected,
    open_load_connection,
    retry_deadlocks,
)

__all__ = ["ArtistComparison", "SharedLoadResult", "load_shared_tables", "song_artists"]

# (incoming msd_artist rows, the song files' artists in the database) -> counts by name.
ArtistComparison = Callable[[pd.DataFrame, pd.DataFrame], dict[str, int]]


@dataclass
class SharedLoadResult:
    """Per table: ``written`` = rows inserted + rows filled, ``inserted``, ``filled``
    (existing rows that gained at least one value). ``comparison``: where the loaded
    ``msd_artist`` rows and the song files' rows disagree, by the caller's ``compare``, as they
    were in the same transaction before anything was written (empty without ``compare``)."""

    inserted: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    comparison: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> dict[str, int]:
        return {t: self.inserted.get(t, 0) + self.filled.get(t, 0) for t in self.inserted}


def _fill_columns(target: sa.Table, df: pd.DataFrame) -> list[str]:
    """Attribute columns the incoming frame has at least one value for."""
    keys = set(NATURAL_KEYS[target.name])
    return [
        c
        for c in load_columns(target)
        if c not in keys and c != SOURCE_COLUMN and df[c].notna().any()
    ]


def _fill_nulls(
    conn: sa.Connection, target: sa.Table, df: pd.DataFrame, chunk_rows: int | None
) -> int:
    """Existing rows get the incoming values of columns where they hold NULL; return how many
    rows gained a value. One set-based UPDATE ... FROM (a join: MySQL forbids naming a
    temporary table twice in one statement)."""
    columns = _fill_columns(target, df)
    if df.empty or not columns:
        return 0
    stage = create_stage(conn, target, df, chunk_rows)
    fillable = sa.or_(*[sa.and_(target.c[c].is_(None), stage.c[c].is_not(None)) for c in columns])
    match = key_match(target, stage, NATURAL_KEYS[target.name])
    filled = conn.execute(
        sa.select(sa.func.count()).select_from(target.join(stage, match)).where(fillable)
    ).scalar_one()
    if filled:
        conn.execute(
            sa.update(target)
            .where(match, fillable)
            .values({c: sa.func.coalesce(target.c[c], stage.c[c]) for c in columns})
        )
    drop_stage(conn, stage)
    return int(filled)


def song_artists(conn: sa.Connection | sa.Engine) -> pd.DataFrame:
    """``msd_artist`` rows that come from a song file (``source_track_id`` not NULL)."""
    table = warehouse_table(conn, "msd_artist")
    statement = sa.select(*table.c).where(table.c[SOURCE_COLUMN].is_not(None))
    columns = [c.name for c in table.c]
    if isinstance(conn, sa.Engine):
        with conn.connect() as c:
            rows = c.execute(statement).all()
    else:
        rows = conn.execute(statement).all()
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("artist_id", SOURCE_COLUMN):  # CHAR may come back blank-padded
        frame[column] = frame[column].astype("string").str.rstrip(" ")
    return frame


def _load_once(
    engine: sa.Engine,
    prepared: Mapping[str, pd.DataFrame],
    chunk_rows: int | None,
    compare: ArtistComparison | None,
) -> SharedLoadResult:
    dialect = engine.dialect
    result = SharedLoadResult()
    with open_load_connection(engine) as conn:
        try:
            with conn.begin():
                if compare is not None:
                    result.comparison = compare(prepared["msd_artist"], song_artists(conn))
                for table in SHARED_TABLES:  # parents before children
                    target = warehouse_table(dialect, table)
                    df = prepared[table.name]
                    result.filled[table.name] = _fill_nulls(conn, target, df, chunk_rows)
                    # Inserts the missing keys; existing rows are left alone (a NULL-source
                    # artist row never wins the artist rule).
                    result.inserted[table.name] = upsert_shared(
                        conn, target, df, chunk_rows
                    ).written
        except BaseException as exc:
            invalidate_if_disconnected(conn, exc)
            raise
    return result


def load_shared_tables(
    engine: sa.Engine,
    frames: Mapping[str, pd.DataFrame],
    *,
    compare: ArtistComparison | None = None,
    chunk_rows: int | None = None,
    deadlock_retries: int = 3,
) -> SharedLoadResult:
    """Upsert the six shared msd_* tables from ``frames`` in one transaction (module doc).

    ``frames`` maps each shared table name to a frame with exactly ``load_columns(table)``;
    ``msd_artist`` rows should have ``source_track_id`` NULL. Raises ``ValueError`` for invalid
    frames before touching the database; any database error rolls everything back.
    Deadlocks with concurrent partition loads are retried (the whole transaction).
    ``compare`` (e.g. :func:`msd_dagster.msd.additional_files.compare_with_songs`) is given the
    incoming artists and the song files' artists before anything is written.
    """
    prepared = prepare_shared(frames, "A/A")  # the key only bounds track ids: none here
    return retry_deadlocks(
        lambda: _load_once(engine, prepared, chunk_rows, compare),
        "shared tables",
        deadlock_retries,
        backend=backend_for(engine),
    )
