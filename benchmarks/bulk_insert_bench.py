"""Rows/s of ``bulk_insert`` for a narrow table like msd_tatum on each reachable backend.

    PYTHONPATH=. .venv/bin/python benchmarks/bulk_insert_bench.py \
        [--rows 1000000] [--backends sqlite,postgresql,mariadb]

Each backend gets a fresh database (PostgreSQL/MariaDB: a random database created and dropped;
SQLite: a temporary file), the real schema (``ensure_schema``), 1,000 parent tracks, then
``rows`` msd_tatum rows (track_id, position, two doubles) inserted with ``bulk_insert`` in one
transaction, with its unique key (and, for comparison, into a copy that also has schema version
1's foreign key to msd_track). The time includes DataFrame conversion and
the commit. Server URLs: MSD_BENCH_POSTGRES_URL / MSD_BENCH_MARIADB_URL (admin connections).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from benchmarks.run import fresh_database
from msd_dagster.secrets import mask_url
from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.ddl import ensure_schema, warehouse_table
from msd_dagster.warehouse.schema import (
    TABLE_OPTIONS,
    load_columns,
    msd_artist,
    msd_tatum,
    msd_track,
)
from msd_dagster.warehouse.urls import create_engine_for_url


@contextmanager
def fresh_engine(backend: str) -> Iterator[sa.Engine]:
    """An engine on a new, empty database of ``backend`` (see ``benchmarks.run``)."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database(backend, Path(tmp)) as url:
        engine = create_engine_for_url(url)
        try:
            yield engine
        finally:
            engine.dispose()


def tatum_frame(rows: int, tracks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_track = rows // tracks
    track_ids = np.array([f"TRAA{i:014d}" for i in range(tracks)], dtype=object)
    rng = np.random.default_rng(0)
    tatums = pd.DataFrame(
        {
            "track_id": pd.array(np.repeat(track_ids, per_track), dtype="str"),
            "track_tatum_id": np.tile(np.arange(1, per_track + 1, dtype=np.int32), tracks),
            "tatum_confidence": rng.random(per_track * tracks),
            "tatum_start": np.cumsum(rng.random(per_track * tracks)),
        }
    )[load_columns(msd_tatum)]
    track_frame = pd.DataFrame({c: [None] * tracks for c in load_columns(msd_track)})
    track_frame["track_id"] = track_ids
    track_frame["artist_id"] = "AR0000000000000001"
    return tatums, track_frame


def _fk_copy(engine: sa.Engine) -> sa.Table:
    """msd_tatum as schema version 1 had it: the same columns and unique key, plus a foreign
    key to msd_track (the per-row check whose cost made version 2 drop it)."""
    table = warehouse_table(engine, msd_tatum)
    track = warehouse_table(engine, msd_track)
    copy = sa.Table(
        "bench_tatum_fk",
        sa.MetaData(),
        *[
            sa.Column(
                c.name,
                c.type,
                *([sa.Identity(start=1)] if c.identity is not None else []),
                primary_key=c.primary_key,
                nullable=c.nullable,
            )
            for c in table.columns
        ],
        sa.UniqueConstraint("track_id", "track_tatum_id"),
        sa.ForeignKeyConstraint(["track_id"], [track.c.track_id]),
        schema=table.schema,
        **TABLE_OPTIONS,
    )
    copy.create(engine)
    return copy


def _timed_insert(engine: sa.Engine, table: sa.Table, frame: pd.DataFrame) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        written = bulk_insert(conn, table, frame)
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        counted = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    assert written == counted == len(frame), (written, counted)
    return seconds


def bench(backend: str, rows: int) -> None:
    tatums, tracks = tatum_frame(rows, 1000)
    with fresh_engine(backend) as engine:
        ensure_schema(engine)
        artist = pd.DataFrame({c: [None] for c in load_columns(msd_artist)})
        artist["artist_id"] = "AR0000000000000001"
        with engine.begin() as conn:
            bulk_insert(conn, warehouse_table(conn, msd_artist), artist)
            bulk_insert(conn, warehouse_table(conn, msd_track), tracks)
        variants = [("msd_tatum (unique key)", engine, warehouse_table(engine, msd_tatum))]
        variants.append(("same, plus a FK to msd_track", engine, _fk_copy(engine)))
        if backend == "mariadb":
            # The multi-row INSERT path, for comparison with LOAD DATA LOCAL INFILE.
            inserts = create_engine_for_url(engine.url, mysql_local_infile=False)
            variants.append(
                ("msd_tatum, INSERT batches", inserts, warehouse_table(engine, msd_tatum))
            )
        print(f"{backend}: {mask_url(engine.url)}")
        for label, target_engine, table in variants:
            with engine.begin() as conn:
                conn.execute(sa.delete(table))
            seconds = _timed_insert(target_engine, table, tatums)
            print(
                f"  {label:<30} {len(tatums):>9,} rows {seconds:6.2f} s "
                f"{len(tatums) / seconds:>10,.0f} rows/s"
            )
            if target_engine is not engine:
                target_engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        try:
            bench(backend.strip(), args.rows)
        except sa.exc.OperationalError as exc:
            print(f"{backend:<11} skipped: {exc.orig}")


if __name__ == "__main__":
    main()
