"""Load one partition into a real Azure SQL database and report speed and log-rate usage.

    MSD_AZURE_SQL_SERVER=... MSD_AZURE_SQL_DATABASE=... MSD_AZURE_SQL_USER=... \\
    MSD_AZURE_SQL_PASSWORD=... msd-dagster verify-azure-sql

The database comes from the environment only, exactly as for the code location:
``MSD_DATABASE_URL`` (an ``mssql+...`` URL) or the ``MSD_AZURE_SQL_*`` parts (with mssql-python
installed, ``pip install '.[mssql]'``, the URL is ``mssql+mssqlpython`` and the analysis rows go
through bulk copy). It never takes a URL or secret as an argument.

It creates the ``msd_*`` tables if missing, loads one partition (``--source`` dataset root and
``--partition``, or a generated sample of ``--songs`` songs in folder A/A), twice: the second
load replaces the first, as any rerun does. Then it prints rows/s per load and the
``sys.dm_db_resource_stats`` samples (15-second averages: CPU, data IO and log write as % of the
service objective's limit) from the loads' start, after waiting for the sample that covers the
end. Verify after the run: no ``##msd_load_*`` table is left
(``SELECT name FROM tempdb.sys.tables WHERE name LIKE '##msd_load%'``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import pandas as pd
import sqlalchemy as sa

from msd_dagster.secrets import mask_text, mask_url, url_secrets
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.dialects import SQLServerBackend, backend_for, make_url
from msd_dagster.warehouse.partition_load import load_partition
from msd_dagster.warehouse.urls import create_engine_for_url

RESOURCE_STATS = (
    "SELECT end_time, avg_cpu_percent, avg_data_io_percent, avg_log_write_percent "
    "FROM sys.dm_db_resource_stats WHERE end_time >= ? ORDER BY end_time"
)


def partition_frames(source: Path | None, partition: str | None, songs: int) -> tuple[str, dict]:
    """(partition key, the twelve frames) read and normalized like the pipeline does."""
    from msd_dagster.generate import generate_dataset
    from msd_dagster.msd.partition import normalize_partition
    from msd_dagster.source.local import LocalDataset

    if source is None:
        source = Path(tempfile.mkdtemp(prefix="msd_verify_"))
        generate_dataset(source, songs, seed=7, folders=["A/A"])
    dataset = LocalDataset(source)
    key = partition or dataset.list_partitions()[0]
    batch, _ = normalize_partition(dataset, [f.key for f in dataset.list_files(key)])
    return key, batch.frames


def bulk_path(engine: sa.Engine) -> str:
    backend = backend_for(engine)
    if backend.stages_outside_transaction:
        return "cursor.bulkcopy() into ## staging"
    if backend.driver == "mssqlpython":
        return "multi-row VALUES"
    return "pyodbc fast_executemany" if backend.driver == "pyodbc" else "SQLAlchemy executemany"


def resource_stats(engine: sa.Engine, since: object) -> pd.DataFrame | str:
    """The sys.dm_db_resource_stats samples since ``since`` (server UTC), or why there are none."""
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(RESOURCE_STATS, (since,)).all()
    except sa.exc.DBAPIError as exc:
        return f"no sys.dm_db_resource_stats (Azure SQL Database only): {type(exc.orig).__name__}"
    columns = ["end_time", "cpu_%", "data_io_%", "log_write_%"]
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def verify(
    url: str | sa.URL,
    source: Path | None,
    partition: str | None,
    songs: int,
    loads: int,
    wait_s: float,
) -> int:
    """What ``msd-dagster verify-azure-sql`` does with the configured ``url``; the exit code."""
    if make_url(url).get_backend_name() not in SQLServerBackend.dialect_names:
        print(
            f"error: {mask_url(url)} is not a SQL Server URL; set MSD_AZURE_SQL_* or an "
            "mssql+... MSD_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    try:
        engine = create_engine_for_url(url)  # a missing driver: one line, as for `load`
    except ImportError as exc:
        print(f"error: {mask_text(str(exc), url_secrets(url))}", file=sys.stderr)
        return 2
    key, frames = partition_frames(source, partition, songs)
    try:
        run(engine, key, frames, loads=loads, wait_s=wait_s)
    except Exception as exc:
        print(
            f"error: {mask_text(f'{type(exc).__name__}: {exc}', url_secrets(url))}", file=sys.stderr
        )
        return 1
    finally:
        engine.dispose()
    return 0


def run(
    engine: sa.Engine,
    key: str,
    frames: dict[str, pd.DataFrame],
    *,
    loads: int = 2,
    wait_s: float = 20.0,
    out: TextIO = sys.stdout,
) -> dict[str, object]:
    print(f"database: {mask_url(engine.url)}", file=out)
    print(f"bulk path for analysis rows: {bulk_path(engine)}", file=out)
    ensure_schema(engine)
    with engine.connect() as conn:
        started_at = conn.exec_driver_sql("SELECT SYSUTCDATETIME()").scalar()
    rates = []
    for n in range(1, loads + 1):
        started = time.perf_counter()
        written = load_partition(engine, key, frames)
        seconds = time.perf_counter() - started
        rows = sum(written.values())
        rates.append(rows / max(seconds, 1e-9))
        print(
            f"load {n} of partition {key}: {rows:,} rows in {seconds:.2f} s "
            f"({rates[-1]:,.0f} rows/s)",
            file=out,
        )
    time.sleep(wait_s)  # the DMV appends a sample every 15 s
    stats = resource_stats(engine, started_at)
    if isinstance(stats, str):
        print(stats, file=out)
    else:
        print("sys.dm_db_resource_stats since the first load:", file=out)
        print(stats.to_string(index=False), file=out)
        if len(stats):
            print(f"peak log write: {stats['log_write_%'].max():.1f}% of the limit", file=out)
    return {"rows_per_second": rates, "resource_stats": stats}
