"""How a folder's load cost grows with the rows already in the database (PostgreSQL).

Loads every folder of ``--source`` (generated at the full set's shape, e.g. ``msd-dagster
sample --songs 21000 --folders C/A ... C/O``: ~1,500 songs per folder) one after the other
into one new database, as ``load_folders`` does (``FolderStream`` + ``load_and_verify``: parse,
write and verify in one transaction), without Dagster. Per folder it records the seconds, the
part spent reading and parsing, the rows written, the rows in the database before it and the
database's size; writes them as JSON and plots seconds per million rows written against the
rows already loaded (PNG). ``--plain`` creates the tables as databases made before the
partitioning by folder have them (one heap and one index per analysis table), to compare.

    python -m benchmarks.growth --source /data/growth --plot docs/images/growth.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bulk_insert_bench import fresh_engine
from msd_dagster.msd.partition import FolderStream
from msd_dagster.source.local import LocalDataset
from msd_dagster.warehouse.checked_load import CheckedLoad, load_and_verify
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.schema import MSD_TABLES, msd_schema_version


def database_size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())


def load_folder(
    engine: sa.Engine, dataset: LocalDataset, folder: str
) -> tuple[CheckedLoad, FolderStream, int, float]:
    """One folder as ``load_folders`` loads it: ``(load, stream, songs, seconds of the load)``."""
    files = dataset.list_files(folder)
    stream = FolderStream(dataset, [f.key for f in files])
    started = time.perf_counter()
    loaded = load_and_verify(engine, folder, stream, lambda: stream.source_rows)
    seconds = time.perf_counter() - started
    assert all(v.passed for v in loaded.verdicts), folder
    return loaded, stream, len(files), seconds


def create_plain_tables(engine: sa.Engine) -> None:
    """The tables as ``ensure_schema`` made them before the partitioning by folder."""
    with engine.begin() as conn:
        for table in (msd_schema_version, *MSD_TABLES):
            table.create(conn)


def run(source: str, log, *, plain: bool = False) -> list[dict[str, object]]:
    dataset = LocalDataset(source)
    rows_before = 0
    folders: list[dict[str, object]] = []
    with fresh_engine("postgresql") as engine:
        if plain:
            create_plain_tables(engine)
        ensure_schema(engine)
        for folder in dataset.list_partitions():
            cpu = time.process_time()
            loaded, stream, songs, seconds = load_folder(engine, dataset, folder)
            written = sum(loaded.written.values())
            row = {
                "folder": folder,
                "songs": songs,
                "rows_before": rows_before,
                "rows_written": written,
                "seconds": round(seconds, 2),
                "parse_seconds": round(stream.seconds, 2),
                "client_cpu_seconds": round(time.process_time() - cpu, 2),
                "load_average": round(os.getloadavg()[0], 1),
                "seconds_per_million_rows": round(seconds / written * 1e6, 2),
                "database_bytes": database_size(engine),
            }
            rows_before += written
            folders.append(row)
            print(json.dumps(row), file=log, flush=True)
    return folders


def plot(folders: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [int(f["rows_before"]) / 1e6 for f in folders]
    total = [float(f["seconds_per_million_rows"]) for f in folders]
    write = [
        (float(f["seconds"]) - float(f["parse_seconds"])) / int(f["rows_written"]) * 1e6
        for f in folders
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, total, "o-", label="folder (parse + write + verify)")
    ax.plot(x, write, "s--", label="write + verify only")
    ax.set_xlabel("rows already in the database (millions)")
    ax.set_ylabel("seconds per million rows of the folder")
    ax.set_ylim(bottom=0)
    ax.set_title("PostgreSQL: cost of a ~1,500-song folder against the database's size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--plot", required=True, help="PNG to write")
    parser.add_argument("--out", default="benchmarks/results/scale")
    parser.add_argument("--plain", action="store_true", help="tables without partitions")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    layout = "plain" if args.plain else "partitioned"
    out = Path(args.out) / f"{stamp}-growth-postgresql-{layout}.json"
    with open(out.with_suffix(".log"), "w") as log:
        folders = run(args.source, log, plain=args.plain)
    summary = {"last_5_over_first_5": tail_ratio(folders)}
    out.write_text(
        json.dumps(
            {"source": args.source, "layout": layout, **summary, "folders": folders}, indent=1
        )
        + "\n"
    )
    plot(folders, args.plot)
    print(f"wrote {out} and {args.plot}; {summary}")


def tail_ratio(folders: list[dict[str, object]], n: int = 5) -> float:
    """Median cost per million rows of the last ``n`` folders over that of the first ``n``."""
    cost = [float(f["seconds_per_million_rows"]) for f in folders]
    return round(statistics.median(cost[-n:]) / statistics.median(cost[:n]), 3)


if __name__ == "__main__":
    main()
