"""Cost and database size of reloading a folder, against its first load (PostgreSQL).

Loads one folder (every folder of ``--source``) into a new database, then loads it again over
itself (every row of the folder is replaced: the work of a changed folder), then runs
``VACUUM`` on the track tables and loads it once more. Prints each step's seconds and
``pg_database_size`` after it. ``--plain``: the tables as databases made before the
partitioning by folder have them, where a reload deletes the old rows instead of truncating
the folder's partitions.

    python -m benchmarks.reload --source /data/msd-sample-2500 [--plain]
"""

from __future__ import annotations

import argparse
import json
import time

import sqlalchemy as sa

from benchmarks.bulk_insert_bench import fresh_engine
from benchmarks.growth import database_size, load_folder
from benchmarks.memory import MIB
from benchmarks.reference_loader import create_plain_tables
from msd_dagster.source.local import LocalDataset
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.schema import TRACK_TABLE_NAMES


def _load_all(engine: sa.Engine, dataset: LocalDataset) -> float:
    started = time.perf_counter()
    for folder in dataset.list_partitions():
        load_folder(engine, dataset, folder)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--plain", action="store_true", help="tables without partitions")
    args = parser.parse_args()
    dataset = LocalDataset(args.source)
    with fresh_engine("postgresql") as engine:
        if args.plain:
            create_plain_tables(engine)
        ensure_schema(engine)
        steps = {}
        steps["first load"] = (_load_all(engine, dataset), database_size(engine))
        steps["reload"] = (_load_all(engine, dataset), database_size(engine))
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in TRACK_TABLE_NAMES:
                conn.exec_driver_sql(f"VACUUM {table}")
        steps["VACUUM of the track tables"] = (time.perf_counter() - started, database_size(engine))
        steps["reload after VACUUM"] = (_load_all(engine, dataset), database_size(engine))
        for step, (seconds, size) in steps.items():
            print(json.dumps({"step": step, "seconds": round(seconds, 1), "mib": size // MIB}))


if __name__ == "__main__":
    main()
