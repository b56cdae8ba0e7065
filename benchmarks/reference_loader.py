"""The reference loader: the minimal script an engineer would write in an afternoon.

    .venv/bin/python -m benchmarks.reference_loader DATASET_ROOT DATABASE_URL [--workers 2]

End-to-end figures of ``msd-dagster load`` are reported as a ratio to this script, measured in
the same invocation on the same files, so they hold on a noisy shared machine. It deliberately
uses none of the project's reader, normalizer or bulk-insert code, only the table definitions
(so the database maintains the same keys, indexes and foreign keys), created as plain tables
(:func:`create_plain_tables`: on PostgreSQL, without the loader's partitions by folder, as
before them, so the reference stays what it was):

* ``h5py.File`` and ``[()]`` reads of the fields the six track tables need; plain DataFrames
  built per batch of files; no null rules (NaN becomes NULL, nothing else), no checks, no
  retries, no Dagster.
* Two worker processes (``ProcessPoolExecutor``); the sorted file list is cut into one
  contiguous slice per worker, and each worker writes its slice in batches of
  ``BATCH_FILES`` files, one transaction per batch.
* ``msd_track.artist_id`` references ``msd_artist``: each batch first inserts its distinct
  ``(artist_id, artist_name)`` pairs, sorted, duplicates ignored (the other columns stay NULL),
  committed on their own so the other worker never waits for a whole batch. The other five
  shared tables are not loaded.
* PostgreSQL (psycopg 3): ``COPY ... FROM STDIN WITH (FORMAT csv)`` fed by ``DataFrame.to_csv``.
* MariaDB/MySQL (PyMySQL): ``LOAD DATA LOCAL INFILE`` of a ``DataFrame.to_csv`` file (what our
  loader uses too when the server allows it; 2x the speed of multi-row INSERTs).
* SQLite: ``executemany``; one writer at a time: a worker reads its batch in parallel with the
  other, then holds a process-shared lock for its write transaction. Same pragmas as our
  loader: WAL, ``synchronous=NORMAL``, ``foreign_keys=ON``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.schema import load_columns, msd_track

BATCH_FILES = 250

# msd_track's columns as the schema declares them; each comes from the HDF5 compound table
# that has a field of that name (analysis/songs, else metadata/songs), except these.
TRACK_COLUMNS: tuple[str, ...] = tuple(load_columns(msd_track))
RENAMED = {"song_hotness": "song_hotttnesss"}
# table -> (singular, HDF5 array prefix)
ANALYSIS_TABLES: dict[str, tuple[str, str]] = {
    "msd_bar": ("bar", "bars"),
    "msd_beat": ("beat", "beats"),
    "msd_section": ("section", "sections"),
    "msd_tatum": ("tatum", "tatums"),
    "msd_segment": ("segment", "segments"),
}
SEGMENT_EXTRA = ("loudness_max", "loudness_max_time", "loudness_start")
TABLES: tuple[str, ...] = ("msd_track", *ANALYSIS_TABLES)


def song_files(root: Path) -> list[Path]:
    return sorted((root / "data").glob("*/*/*/*.h5"))


# --------------------------------------------------------------------------------------------
# Reading


def _text(value: bytes) -> str:
    return value.decode("utf-8")


def read_batch(files: Sequence[Path]) -> tuple[list[tuple[str, str]], dict[str, pd.DataFrame]]:
    """The distinct (artist_id, artist_name) pairs and one DataFrame per track table."""
    tracks: list[dict[str, Any]] = []
    artists: dict[str, str] = {}
    parts: dict[str, list[dict[str, np.ndarray]]] = {t: [] for t in ANALYSIS_TABLES}
    for path in files:
        with h5py.File(path, "r") as f:
            meta = f["metadata/songs"][()][0]
            analysis = f["analysis/songs"][()][0]
            year = int(f["musicbrainz/songs"][()][0]["year"])
            track_id = _text(analysis["track_id"])
            row: dict[str, Any] = {}
            for column in TRACK_COLUMNS:
                if column == "year":
                    row[column] = year
                elif column == "upload_timestamp":
                    mtime = path.stat().st_mtime
                    row[column] = datetime.fromtimestamp(mtime, UTC).replace(tzinfo=None)
                else:
                    source = analysis if column in analysis.dtype.names else meta
                    value = source[RENAMED.get(column, column)]
                    row[column] = _text(value) if isinstance(value, bytes) else value.item()
            tracks.append(row)
            artists.setdefault(row["artist_id"], _text(meta["artist_name"]))
            for table, (_, kind) in ANALYSIS_TABLES.items():
                names = ["start", "confidence"]
                if table == "msd_segment":
                    names += [*SEGMENT_EXTRA, "pitches", "timbre"]
                arrays = {name: f[f"analysis/{kind}_{name}"][()] for name in names}
                arrays["track_id"] = np.full(len(arrays["start"]), track_id, dtype=object)
                parts[table].append(arrays)
    frames = {"msd_track": pd.DataFrame(tracks, columns=list(TRACK_COLUMNS))}
    for table, (one, _) in ANALYSIS_TABLES.items():
        chunks = parts[table]
        columns: dict[str, Any] = {
            "track_id": np.concatenate([c["track_id"] for c in chunks]),
            # 1-based position of the event in its track
            f"track_{one}_id": np.concatenate([np.arange(1, len(c["start"]) + 1) for c in chunks]),
            f"{one}_confidence": np.concatenate([c["confidence"] for c in chunks]),
            f"{one}_start": np.concatenate([c["start"] for c in chunks]),
        }
        if table == "msd_segment":
            for name in SEGMENT_EXTRA:
                columns[f"segment_{name}"] = np.concatenate([c[name] for c in chunks])
            for name, prefix in (("pitches", "p"), ("timbre", "t")):
                matrix = np.concatenate([c[name] for c in chunks]).reshape(-1, 12)
                for i in range(12):
                    columns[f"{prefix}{i + 1}"] = matrix[:, i]
        frames[table] = pd.DataFrame(columns)
    return sorted(artists.items()), frames


# --------------------------------------------------------------------------------------------
# Writing, one module-level function per backend (they run in the worker processes)

_sqlite_lock: Any = None


def _init_worker(lock: Any) -> None:
    global _sqlite_lock
    _sqlite_lock = lock


def _batches(files: Sequence[Path]) -> Iterator[Sequence[Path]]:
    for start in range(0, len(files), BATCH_FILES):
        yield files[start : start + BATCH_FILES]


def _columns(frame: pd.DataFrame) -> str:
    return ", ".join(f'"{c}"' if c == "key" else c for c in frame.columns)


def load_postgresql(files: Sequence[Path], url: str) -> dict[str, int]:
    import psycopg

    rows = dict.fromkeys(TABLES, 0)
    with psycopg.connect(url) as conn:
        for batch in _batches(files):
            artists, frames = read_batch(batch)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO msd_artist (artist_id, artist_name) VALUES (%s, %s) "
                    "ON CONFLICT (artist_id) DO NOTHING",
                    artists,
                )
            conn.commit()
            with conn.cursor() as cur:
                for table, frame in frames.items():
                    sql = f"COPY {table} ({_columns(frame)}) FROM STDIN WITH (FORMAT csv)"
                    with cur.copy(sql) as copy:
                        copy.write(frame.to_csv(index=False, header=False))
                    rows[table] += len(frame)
            conn.commit()
    return rows


def load_mariadb(files: Sequence[Path], url: str) -> dict[str, int]:
    import pymysql

    u = sa.make_url(url)
    conn = pymysql.connect(
        host=u.host or "localhost",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
        local_infile=True,
    )
    rows = dict.fromkeys(TABLES, 0)
    fd, csv_path = tempfile.mkstemp(prefix="msd_reference_", suffix=".csv")
    os.close(fd)
    try:
        for batch in _batches(files):
            artists, frames = read_batch(batch)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT IGNORE INTO msd_artist (artist_id, artist_name) VALUES (%s, %s)",
                    artists,
                )
            conn.commit()
            with conn.cursor() as cur:
                for table, frame in frames.items():
                    # ESCAPED BY '': backslashes are text; NULL is the unquoted word NULL.
                    frame.to_csv(csv_path, index=False, header=False, na_rep="NULL")
                    columns = ", ".join(f"`{c}`" for c in frame.columns)
                    cur.execute(
                        f"LOAD DATA LOCAL INFILE '{csv_path}' INTO TABLE {table} "
                        "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' "
                        f"OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' ({columns})"
                    )
                    rows[table] += len(frame)
            conn.commit()
    finally:
        conn.close()
        os.unlink(csv_path)
    return rows


def load_sqlite(files: Sequence[Path], url: str) -> dict[str, int]:
    path = sa.make_url(url).database
    conn = sqlite3.connect(path, timeout=300, isolation_level=None)
    # WAL was set once by reference_load: two workers switching it at once fail with "locked".
    for pragma in ("foreign_keys=ON", "synchronous=NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    rows = dict.fromkeys(TABLES, 0)
    try:
        for batch in _batches(files):
            artists, frames = read_batch(batch)  # outside the lock: reads run in parallel
            # SQLAlchemy's SQLite DateTime text; sqlite3 cannot bind pandas Timestamps.
            stamps = frames["msd_track"]["upload_timestamp"]
            frames["msd_track"]["upload_timestamp"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S.%f")
            records = {
                table: list(zip(*(frame[c].tolist() for c in frame.columns), strict=True))
                for table, frame in frames.items()
            }
            with _sqlite_lock:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR IGNORE INTO msd_artist (artist_id, artist_name) VALUES (?, ?)",
                    artists,
                )
                for table, frame in frames.items():
                    marks = ", ".join("?" * len(frame.columns))
                    conn.executemany(
                        f"INSERT INTO {table} ({_columns(frame)}) VALUES ({marks})",
                        records[table],
                    )
                    rows[table] += len(frame)
                conn.execute("COMMIT")
    finally:
        conn.close()
    return rows


LOADERS = {"postgresql": load_postgresql, "mariadb": load_mariadb, "mysql": load_mariadb}


def _driver_url(url: str) -> tuple[str, str]:
    """(backend, URL for the plain driver) of a SQLAlchemy URL."""
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        return backend, u.set(drivername="postgresql").render_as_string(hide_password=False)
    return backend, url


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


# --------------------------------------------------------------------------------------------
# Entry point


def create_plain_tables(engine: sa.Engine) -> None:
    """The ``msd_*`` tables as their definitions state them, without a backend's physical
    layout (PostgreSQL's partitions by folder), recorded so that ``ensure_schema`` accepts them:
    the tables of databases made before the partitioning."""
    from msd_dagster.warehouse.ddl import ensure_schema
    from msd_dagster.warehouse.schema import metadata

    metadata.create_all(engine)
    ensure_schema(engine)


def reference_load(root: Path, url: str, workers: int = 2) -> dict[str, Any]:
    """Load the six track tables of the song files under ``root`` into ``url`` (a SQLAlchemy
    URL of an empty database): the schema first, then ``workers`` processes.

    Returns wall and CPU seconds (this process and its reaped workers), rows per table as sent,
    files, workers, and the schema creation's share of the wall time.
    """
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    engine = sa.create_engine(url)
    try:
        create_plain_tables(engine)
    finally:
        engine.dispose()
    schema_seconds = time.perf_counter() - started
    files = song_files(root)
    backend, driver_url = _driver_url(url)
    if backend == "sqlite":
        with closing(sqlite3.connect(sa.make_url(url).database)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: the workers' connections too
    loader = load_sqlite if backend == "sqlite" else LOADERS[backend]
    n = len(files)
    slices = [files[i * n // workers : (i + 1) * n // workers] for i in range(workers)]
    rows = dict.fromkeys(TABLES, 0)
    lock = multiprocessing.Lock()
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(lock,)) as pool:
        for result in pool.map(loader, slices, [driver_url] * workers):
            for table, count in result.items():
                rows[table] += count
    wall = time.perf_counter() - started
    return {
        "backend": backend,
        "files": len(files),
        "workers": workers,
        "batch_files": BATCH_FILES,
        "wall_seconds": wall,
        "cpu_seconds": _cpu_seconds() - cpu_started,
        "schema_seconds": schema_seconds,
        "rows": rows,
        "total_rows": sum(rows.values()),
    }


# --------------------------------------------------------------------------------------------
# Verification: what the files hold, read independently of the load


def file_rows(root: Path) -> dict[str, int]:
    """Rows the six track tables should get: one per file, and the length of each analysis
    ``*_start`` array (dataset shapes only, no data read)."""
    rows = dict.fromkeys(TABLES, 0)
    for path in song_files(root):
        with h5py.File(path, "r") as f:
            rows["msd_track"] += f["analysis/songs"].shape[0]
            for table, (_, kind) in ANALYSIS_TABLES.items():
                rows[table] += f[f"analysis/{kind}_start"].shape[0]
    return rows


def database_rows(url: str) -> dict[str, int]:
    """COUNT(*) of the six track tables and of msd_artist."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar())
                for table in (*TABLES, "msd_artist")
            }
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="dataset root (holds data/)")
    parser.add_argument("url", help="SQLAlchemy URL of an empty database")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument(
        "--verify", action="store_true", help="compare the loaded rows with the files' arrays"
    )
    args = parser.parse_args(argv)
    result = reference_load(args.root, args.url, args.workers)
    if args.verify:
        result["file_rows"] = file_rows(args.root)
        result["database_rows"] = database_rows(args.url)
        result["rows_match_files"] = all(
            result["file_rows"][t] == result["database_rows"][t] == result["rows"][t]
            for t in TABLES
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result.get("rows_match_files", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
