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
from benchmarks.reference_loader import create_plain_tables
from msd_dagster.msd.partition import FolderStream
from msd_dagster.source.local import LocalDataset
from msd_dagster.warehouse.checked_load import CheckedLoad, load_and_verify
from msd_dagster.warehouse.ddl import ensure_schema


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


def _database_over_parse(folder: dict[str, object]) -> float:
    """The folder's database time (write and verify) over its parsing time: both slow down
    alike when the machine is busy, so their ratio shows the database's growth alone."""
    parse = float(folder["parse_seconds"])
    return (float(folder["seconds"]) - parse) / parse


MEASURES = {
    "seconds_per_million_rows": lambda f: float(f["seconds_per_million_rows"]),
    "database_over_parse": _database_over_parse,
    "client_cpu_per_million_rows": (
        lambda f: float(f["client_cpu_seconds"]) / int(f["rows_written"]) * 1e6
    ),
}


def tail_ratios(folders: list[dict[str, object]], n: int = 5) -> dict[str, float]:
    """Per measure, the median of the last ``n`` folders over that of the first ``n``."""
    ratios = {}
    for name, measure in MEASURES.items():
        values = [measure(f) for f in folders]
        ratios[name] = round(statistics.median(values[-n:]) / statistics.median(values[:n]), 3)
    return ratios


def plot(runs: dict[str, list[dict[str, object]]], path: str) -> None:
    """Seconds per million rows (top) and database over parse time (bottom) of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for label, folders in runs.items():
        x = [int(f["rows_before"]) / 1e6 for f in folders]
        top.plot(x, [MEASURES["seconds_per_million_rows"](f) for f in folders], "o-", label=label)
        bottom.plot(x, [_database_over_parse(f) for f in folders], "s-", label=label)
    top.set_ylabel("seconds per million rows\nof the folder (wall)")
    bottom.set_ylabel("database time / parse time\nof the folder")
    bottom.set_xlabel("rows already in the database (millions)")
    top.set_title("PostgreSQL: a ~1,500-song folder's cost against the database's size")
    for ax in (top, bottom):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="the dataset to load")
    parser.add_argument("--plot", required=True, help="PNG to write")
    parser.add_argument("--out", default="benchmarks/results/scale")
    parser.add_argument("--plain", action="store_true", help="tables without partitions")
    parser.add_argument(
        "--replot", nargs="+", metavar="JSON", help="plot these result files instead of loading"
    )
    args = parser.parse_args()
    if args.replot:
        records = [json.loads(Path(r).read_text()) for r in args.replot]
        plot({r["layout"]: r["folders"] for r in records}, args.plot)
        print(f"wrote {args.plot}")
        return
    if not args.source:
        parser.error("--source is required unless --replot is given")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    layout = "plain" if args.plain else "partitioned"
    out = Path(args.out) / f"{stamp}-growth-postgresql-{layout}.json"
    with open(out.with_suffix(".log"), "w") as log:
        folders = run(args.source, log, plain=args.plain)
    summary = {"last_5_over_first_5": tail_ratios(folders)}
    record = {"source": Path(args.source).name, "layout": layout, **summary, "folders": folders}
    out.write_text(json.dumps(record, indent=1) + "\n")
    plot({layout: folders}, args.plot)
    print(f"wrote {out} and {args.plot}; {summary}")


if __name__ == "__main__":
    main()
