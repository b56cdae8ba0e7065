"""Cost and database size of reloading a folder, against its first load (PostgreSQL).

Loads one folder (every folder of ``--source``) into a new database, then loads it again over
itself (every row of the folder is replaced: the work of a changed folder), then runs
``VACUUM`` on the track tables. Prints each step's seconds and ``pg_database_size`` after it.

    python -m benchmarks.reload --source /data/msd-sample-2500
"""

from __future__ import annotations

import argparse
import json
import time

import sqlalchemy as sa

from benchmarks.memory import ADMIN_URL, _database, _drop
from msd_dagster.msd.partition import FolderStream
from msd_dagster.source.local import LocalDataset
from msd_dagster.warehouse.checked_load import load_and_verify
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.schema import TRACK_TABLE_NAMES
from msd_dagster.warehouse.urls import create_engine_for_url

MIB = 2**20


def _size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())


def _load_all(engine: sa.Engine, dataset: LocalDataset) -> float:
    started = time.perf_counter()
    for folder in dataset.list_partitions():
        files = dataset.list_files(folder)
        stream = FolderStream(dataset, [f.key for f in files])
        loaded = load_and_verify(engine, folder, stream, lambda s=stream: s.source_rows)
        assert all(v.passed for v in loaded.verdicts)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    args = parser.parse_args()
    dataset = LocalDataset(args.source)
    name = _database()
    engine = create_engine_for_url(sa.make_url(ADMIN_URL).set(database=name))
    try:
        ensure_schema(engine)
        steps = {}
        steps["first load"] = (_load_all(engine, dataset), _size(engine))
        steps["reload"] = (_load_all(engine, dataset), _size(engine))
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in TRACK_TABLE_NAMES:
                conn.exec_driver_sql(f"VACUUM {table}")
        steps["VACUUM of the track tables"] = (time.perf_counter() - started, _size(engine))
        steps["reload after VACUUM"] = (_load_all(engine, dataset), _size(engine))
        for step, (seconds, size) in steps.items():
            print(json.dumps({"step": step, "seconds": round(seconds, 1), "mib": size // MIB}))
    finally:
        engine.dispose()
        _drop(name)


if __name__ == "__main__":
    main()
