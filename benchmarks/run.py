"""End-to-end benchmark of ``msd-dagster load`` on a generated dataset.

    .venv/bin/python -m benchmarks.run --songs 1000 --backend postgresql
    .venv/bin/python -m benchmarks.run --songs 10000 --backend sqlite,postgresql,mariadb
    .venv/bin/python -m benchmarks.run --dataset sparse --backend postgresql
    .venv/bin/python -m benchmarks.run --fixed-cost 100 --backend sqlite,postgresql

For each backend: a fresh database (PostgreSQL/MariaDB: a new database, dropped afterwards;
SQLite: a new file) and a fresh DAGSTER_HOME/MSD_HOME in a temporary folder, whose
``dagster.yaml`` is what ``msd-dagster load`` writes into a new instance (``--instance plain``:
Dagster's defaults, as a user's own DAGSTER_HOME may have); then the real
``python -m msd_dagster.cli load`` in a subprocess, measured from outside (wall time, CPU time
of the process tree, peak summed RSS of the tree sampled every 0.2 s from /proc), with per-run
and per-folder stage times read back from the Dagster event log. ``--fixed-cost N`` loads N
folders of one song each and one such folder, and reports the cost of one more folder (the
difference of the wall times / (N - 1)). In the same invocation: the reference loader
(``benchmarks/reference_loader.py``, a minimal hand-written script) on the same files and a fresh
database, measured the same way (every end-to-end figure is also given as a ratio to it), a
row-by-row baseline on a small sample (our rows/s as a ratio to it) and a parse
micro-benchmark. Results go to ``benchmarks/results/*.json`` and the tables of
``docs/benchmarks.md``.

Server URLs (admin connections): MSD_BENCH_POSTGRES_URL, MSD_BENCH_MARIADB_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.dataset import (
    DATASETS,
    DEFAULT_SEED,
    cached_dataset,
    fixed_cost_dataset,
    folder_count,
    song_files,
)
from benchmarks.eventlog import run_stages
from benchmarks.proctree import load_average, run_tree
from benchmarks.report import FOLDER_RUNS, PLAIN_INSTANCE, REFERENCE_ONLY, RUNS_OF
from msd_dagster.instance import write_recommended_config

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
POSTGRES_ADMIN = os.environ.get(
    "MSD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN = os.environ.get("MSD_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
BACKENDS = ("sqlite", "postgresql", "mariadb")
INSTANCES = ("recommended", "plain")
# Per-folder details are kept in the result file up to this many folders (the sparse set's
# ~450 would make it large); the sums and medians are always kept.
MAX_FOLDERS_KEPT = 64


# --------------------------------------------------------------------------------------------
# Databases


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A URL of a new, empty database; dropped (or deleted) afterwards."""
    if backend == "sqlite":
        path = workdir / f"bench-{secrets.token_hex(4)}.sqlite"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    admin_url = sa.make_url(POSTGRES_ADMIN if backend == "postgresql" else MARIADB_ADMIN)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"msd_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
        else:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def server_version(backend: str) -> str:
    if backend == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    url = POSTGRES_ADMIN if backend == "postgresql" else MARIADB_ADMIN
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version()").scalar()
    finally:
        engine.dispose()
    return str(version).split(" on ")[0] if backend == "postgresql" else f"MariaDB {version}"


def postgres_wal_lsn() -> str | None:
    engine = sa.create_engine(POSTGRES_ADMIN)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar())
    finally:
        engine.dispose()


def postgres_wal_bytes(since: str) -> int:
    engine = sa.create_engine(POSTGRES_ADMIN)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(lsn)s::pg_lsn)", {"lsn": since}
                ).scalar()
            )
    finally:
        engine.dispose()


def table_bytes(url: str, backend: str) -> dict[str, int]:
    """Stored bytes (data + indexes) per msd_* table after the load."""
    from msd_dagster.warehouse.schema import MSD_TABLES

    engine = sa.create_engine(url)
    out: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            for table in MSD_TABLES:
                if backend == "postgresql":
                    sql = f"SELECT pg_total_relation_size('{table.name}')"
                elif backend == "mariadb":
                    sql = (
                        "SELECT data_length + index_length FROM information_schema.tables "
                        f"WHERE table_schema = DATABASE() AND table_name = '{table.name}'"
                    )
                else:
                    sql = f"SELECT SUM(pgsize) FROM dbstat WHERE name = '{table.name}'"
                try:
                    out[table.name] = int(conn.exec_driver_sql(sql).scalar() or 0)
                except sa.exc.DBAPIError:
                    return {}
    finally:
        engine.dispose()
    return out


# --------------------------------------------------------------------------------------------
# The load


# "loading 35 folder(s) in 8 run(s) from ...", "[3/35] A/B: ok, 9 tracks, 20,291 rows,
# 0 rejected, 0.8 s", "loaded 35 of 35 folder(s) in 8.8 s", then one line per table.
_PLAN_LINE = re.compile(r"^loading (\d+) folder\(s\) in (\d+) run\(s\)")
_FOLDER_LINE = re.compile(r"^\[\d+/\d+\] (\S+): (\w+), .* ([\d.]+) s$")
_LOADED = re.compile(r"^loaded (\d+) of (\d+) folder\(s\) in ([\d.]+) s$")
_TABLE_LINE = re.compile(r"^(msd_\w+)\s+([\d,]+)\s+([\d,]+)$")


def parse_cli_output(stdout: str) -> dict[str, Any]:
    """What ``msd-dagster load`` printed: seconds and status per folder, the runs planned,
    the folder phase's seconds ("loaded N of M folder(s) in S s") and rows per table."""
    seconds: dict[str, float] = {}
    statuses: dict[str, str] = {}
    rows: dict[str, int] = {}
    runs = loaded = 0
    phase = 0.0
    for line in stdout.splitlines():
        line = line.strip()
        if match := _FOLDER_LINE.match(line):
            seconds[match[1]] = float(match[3])
            statuses[match[1]] = match[2]
        elif match := _PLAN_LINE.match(line):
            runs = int(match[2])
        elif match := _LOADED.match(line):
            loaded, phase = int(match[1]), float(match[3])
        elif match := _TABLE_LINE.match(line):
            rows[match[1]] = int(match[3].replace(",", ""))
    return {
        "folder_seconds": seconds,
        "statuses": statuses,
        "runs": runs,
        "loaded": loaded,
        "rows": rows,
        "partition_phase": phase,
    }


def write_instance_config(dagster_home: Path, instance: str) -> None:
    """``recommended``: what ``msd-dagster load`` writes into a new DAGSTER_HOME; ``plain``:
    Dagster's defaults (a user's own instance without it). Both without telemetry."""
    config = dagster_home / "dagster.yaml"
    if instance == "recommended":
        write_recommended_config(dagster_home)
    else:
        config.write_text("")
    with config.open("a") as f:
        f.write("telemetry:\n  enabled: false\n")


@dataclass(frozen=True)
class LoadOptions:
    """How ``msd-dagster load`` is run: ``--workers``, the instance's ``dagster.yaml``
    (:data:`INSTANCES`), the CLI's plan or runs of ``folders_per_run`` folders
    (``benchmarks/fixed_runs.py``), and whether to profile the table writes afterwards."""

    workers: int = 2
    instance: str = "recommended"
    folders_per_run: int | None = None
    table_profile: bool = False


def run_load(root: Path, backend: str, workdir: Path, options: LoadOptions) -> dict[str, Any]:
    """One ``msd-dagster load`` of ``root`` into a fresh database and DAGSTER_HOME."""
    workers, instance = options.workers, options.instance
    with fresh_database(backend, workdir) as url:
        home = workdir / f"load-{backend}-{secrets.token_hex(3)}"
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True)
        write_instance_config(dagster_home, instance)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "MSD_HOME": str(home / "msd_home"),
            "PYTHONPATH": _pythonpath(),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("MSD_SOURCE", "MSD_DATABASE_URL", "MSD_PARQUET_DIR"):
            env.pop(name, None)
        cli = ["msd_dagster.cli"]
        if options.folders_per_run:
            cli = ["benchmarks.fixed_runs", str(options.folders_per_run)]
        cmd = [
            sys.executable,
            "-m",
            *cli,
            "load",
            "--source",
            str(root),
            "--database-url",
            url,
            "--workers",
            str(workers),
        ]
        lsn = postgres_wal_lsn() if backend == "postgresql" else None
        load_before = load_average()
        print(
            f"[{backend}] msd-dagster load --workers {workers} ({folder_count(root)} folder(s), "
            f"{instance} instance"
            + (f", runs of {options.folders_per_run}" if options.folders_per_run else "")
            + ") ...",
        )
        tree = run_tree(cmd, env, str(home / "load.log"))
        wal = postgres_wal_bytes(lsn) if lsn else None
        cli = parse_cli_output(tree.stdout)
        if tree.returncode != 0:
            print(tree.stdout[-3000:])
            raise SystemExit(f"[{backend}] msd-dagster load failed ({tree.returncode})")
        stages = run_stages(dagster_home)
        sizes = table_bytes(url, backend)
        profile = (
            table_write_profile(url, home / "msd_home" / "parquet") if options.table_profile else {}
        )
        shutil.rmtree(home, ignore_errors=True)
    rows = cli["rows"]
    total_rows = sum(rows.values())
    totals = stages["totals"]
    partitions = len(cli["folder_seconds"])
    # Runs execute side by side: Dagster's share of the runs' summed time (creation to end)
    # stands for its share of the folder phase.
    dagster_share_runs = totals.get("dagster", 0.0) / (totals.get("created_to_end") or 1e-9)
    # Command start-up and finish: imports, instance, partition registration, the whole-set
    # check, the summary.
    fixed = max(0.0, tree.wall_seconds - cli["partition_phase"])
    result = {
        "backend": backend,
        "workers": workers,
        "instance": instance,
        "folders_per_run": options.folders_per_run,
        "partitions": partitions,
        "run_count": len(stages["runs"]) or cli["runs"],
        "failed_partitions": [p for p, s in cli["statuses"].items() if s != "ok"],
        "wall_seconds": tree.wall_seconds,
        "partition_phase_seconds": cli["partition_phase"],
        "fixed_seconds": fixed,
        "cpu_user_seconds": tree.cpu_user_seconds,
        "cpu_system_seconds": tree.cpu_system_seconds,
        "peak_rss_bytes": tree.peak_rss_bytes,
        "peak_pss_bytes": tree.peak_pss_bytes,
        "peak_rss_first_half_bytes": tree.peak_rss_first_half,
        "peak_rss_second_half_bytes": tree.peak_rss_second_half,
        "peak_processes": tree.peak_processes,
        "load_average_before": load_before,
        "load_average_during": tree.load_average,
        "cpu_pressure_during": tree.cpu_pressure,
        "rows": rows,
        "total_rows": total_rows,
        "rows_per_second": total_rows / tree.wall_seconds,
        # Summed over the runs (see benchmarks/eventlog.py): list + parse + store + write +
        # dagster = created_to_end; dagster = dagster_in_run + before_run.
        "stage_seconds": {
            k: totals.get(k, 0.0)
            for k in (
                "list",
                "parse",
                "store",
                "write",
                "dagster_in_run",
                "folder_events",
                "before_run",
                "dagster",
                "run_seconds",
                "created_to_end",
                "span",
            )
        },
        "dagster_share_of_run_time": dagster_share_runs,
        # Dagster's share of the whole command: its share of the runs applied to the folder
        # phase, plus the command's own start-up and finish.
        "dagster_share_of_wall": (cli["partition_phase"] * dagster_share_runs + fixed)
        / tree.wall_seconds,
        # Summed seconds (not wall) of Dagster per folder, across both workers.
        "dagster_seconds_per_folder": totals.get("dagster", 0.0) / max(1, partitions),
        "median_run_seconds": stages["median_run_seconds"],
        "median_folder_seconds": stages["median_folder_seconds"],
        "events_per_run": totals.get("events", 0) / max(1, len(stages["runs"])),
        "events_per_folder": totals.get("events", 0) / max(1, partitions),
        "run_stages": stages["runs"],
        "folder_stages": stages["folders"] if partitions <= MAX_FOLDERS_KEPT else [],
        "table_bytes": sizes,
        "bytes_per_row": {t: sizes[t] / rows[t] for t in sizes if rows.get(t)},
        "wal_bytes": wal,
        "wal_bytes_per_row": (wal / total_rows) if wal and total_rows else None,
        "table_write_profile": profile,
        "rss_timeline": tree.rss_timeline,
    }
    print(
        f"[{backend}] {total_rows:,} rows in {tree.wall_seconds:.1f} s "
        f"({result['rows_per_second']:,.0f} rows/s), peak RSS "
        f"{tree.peak_rss_bytes / 2**20:,.0f} MiB, CPU "
        f"{tree.cpu_user_seconds + tree.cpu_system_seconds:.0f} s, {partitions} folder(s) in "
        f"{result['run_count']} run(s), Dagster "
        f"{100 * result['dagster_share_of_wall']:.1f}% of wall",
    )
    return result


def table_write_profile(url: str, parquet_dir: Path) -> dict[str, Any]:
    """Per-table write time of the largest partition, rerun in a rolled-back transaction."""
    from msd_dagster.defs.tables import NORMALIZED_FRAMES
    from msd_dagster.frame_store import FrameStore
    from msd_dagster.source.layout import partition_track_range
    from msd_dagster.warehouse.bulk import bulk_insert
    from msd_dagster.warehouse.ddl import warehouse_table
    from msd_dagster.warehouse.partition_load import prepare_frames
    from msd_dagster.warehouse.schema import SHARED_TABLES, TRACK_TABLES
    from msd_dagster.warehouse.staging import upsert_shared
    from msd_dagster.warehouse.transactions import open_load_connection
    from msd_dagster.warehouse.urls import create_engine_for_url

    store = FrameStore(parquet_dir)
    songs = ["normalized", "songs"]
    # <root>/normalized/songs/<X>/<Y>/CURRENT: the largest partition by its segments' file.
    partitions = [
        "/".join(p.parent.parts[-2:]) for p in store.root.joinpath(*songs).glob("*/*/CURRENT")
    ]
    if not partitions:
        return {}
    partition = max(
        partitions, key=lambda p: (store.current(songs, p) / "msd_segment.parquet").stat().st_size
    )
    frames = {}
    for name, tables in NORMALIZED_FRAMES.items():
        frames.update(store.read(["normalized", name], partition, tables))
    prepared = prepare_frames(frames, partition)
    lo, hi = partition_track_range(partition)
    engine = create_engine_for_url(url)
    out: dict[str, Any] = {"partition": partition, "tables": {}}
    try:
        with open_load_connection(engine) as conn:
            transaction = conn.begin()
            try:
                for table in SHARED_TABLES:
                    started = time.perf_counter()
                    written, _missing = upsert_shared(
                        conn, warehouse_table(conn, table), prepared[table.name], None
                    )
                    out["tables"][table.name] = _rate(len(prepared[table.name]), started)
                    out["tables"][table.name]["written"] = written
                started = time.perf_counter()
                for table in reversed(TRACK_TABLES):
                    target = warehouse_table(conn, table)
                    conn.execute(
                        sa.delete(target).where(target.c.track_id >= lo, target.c.track_id < hi)
                    )
                out["delete_seconds"] = time.perf_counter() - started
                for table in TRACK_TABLES:
                    started = time.perf_counter()
                    bulk_insert(conn, warehouse_table(conn, table), prepared[table.name])
                    out["tables"][table.name] = _rate(len(prepared[table.name]), started)
            finally:
                transaction.rollback()
    finally:
        engine.dispose()
    return out


def _rate(rows: int, started: float) -> dict[str, float]:
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / max(seconds, 1e-9)}


# --------------------------------------------------------------------------------------------
# Reference loader


def _pythonpath() -> str:
    """The subprocesses import this package from the repository root, whatever the cwd."""
    paths = (str(HERE.parent), os.environ.get("PYTHONPATH", ""))
    return os.pathsep.join(p for p in paths if p)


def run_reference(
    root: Path, backend: str, workers: int, workdir: Path, file_rows: dict[str, int]
) -> dict[str, Any]:
    """The reference loader in a subprocess on a fresh database, measured like our load (wall,
    CPU and peak RSS of the process tree); its loaded rows are counted in the database and
    compared with ``file_rows`` (what the files hold)."""
    from benchmarks.reference_loader import TABLES, database_rows

    with fresh_database(backend, workdir) as url:
        out = workdir / f"reference-{backend}-{secrets.token_hex(3)}.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.reference_loader",
            str(root),
            url,
            "--workers",
            str(workers),
            "--json",
            str(out),
        ]
        env = {**os.environ, "PYTHONPATH": _pythonpath(), "PYTHONUNBUFFERED": "1"}
        print(f"[{backend}] reference loader --workers {workers} ...")
        tree = run_tree(cmd, env, str(workdir / f"reference-{backend}.log"))
        if tree.returncode != 0:
            print(tree.stdout[-3000:])
            raise SystemExit(f"[{backend}] reference loader failed ({tree.returncode})")
        inside = json.loads(out.read_text())
        counted = database_rows(url)
    total_rows = inside["total_rows"]
    result = {
        "files": inside["files"],
        "workers": inside["workers"],
        "batch_files": inside["batch_files"],
        "wall_seconds": tree.wall_seconds,
        "cpu_user_seconds": tree.cpu_user_seconds,
        "cpu_system_seconds": tree.cpu_system_seconds,
        "peak_rss_bytes": tree.peak_rss_bytes,
        "peak_pss_bytes": tree.peak_pss_bytes,
        # Measured inside the script: from before the schema to the last commit (no imports).
        "inside_wall_seconds": inside["wall_seconds"],
        "schema_seconds": inside["schema_seconds"],
        "load_average_during": tree.load_average,
        "cpu_pressure_during": tree.cpu_pressure,
        "rows": inside["rows"],
        "total_rows": total_rows,
        "rows_per_second": total_rows / tree.wall_seconds,
        "artists": counted["msd_artist"],
        "rows_match_files": all(inside["rows"][t] == counted[t] == file_rows[t] for t in TABLES),
    }
    print(
        f"[{backend}] reference: {total_rows:,} rows in {tree.wall_seconds:.1f} s "
        f"({result['rows_per_second']:,.0f} rows/s), CPU "
        f"{tree.cpu_user_seconds + tree.cpu_system_seconds:.0f} s, peak RSS "
        f"{tree.peak_rss_bytes / 2**20:,.0f} MiB"
        + ("" if result["rows_match_files"] else "; ROWS DIFFER FROM THE FILES"),
    )
    return result


def compare_to_reference(backend: str, entry: dict[str, Any]) -> None:
    """Each load's wall and CPU time as a ratio to the reference of the same invocation."""
    reference = entry["reference"]
    ref_cpu = reference["cpu_user_seconds"] + reference["cpu_system_seconds"]
    for load in entry["loads"]:
        load["ratio_to_reference"] = load["wall_seconds"] / reference["wall_seconds"]
        cpu = load["cpu_user_seconds"] + load["cpu_system_seconds"]
        load["cpu_ratio_to_reference"] = cpu / ref_cpu
        # Both loaders must have written the same track-table rows for the ratio to mean much.
        load["rows_equal_reference"] = all(
            load["rows"].get(t) == n for t, n in reference["rows"].items()
        )
    ratios = sorted(load["ratio_to_reference"] for load in entry["loads"])
    entry["ratio_to_reference"] = ratios[len(ratios) // 2]
    print(
        f"[{backend}] ours / reference = "
        + ", ".join(
            f"{load['ratio_to_reference']:.1f}x wall ({load['cpu_ratio_to_reference']:.1f}x CPU)"
            + ("" if load["rows_equal_reference"] else ", different rows")
            for load in entry["loads"]
        ),
    )


# --------------------------------------------------------------------------------------------
# Baseline and parse micro-benchmark


def run_baseline(root: Path, backend: str, songs: int, workdir: Path) -> dict[str, Any]:
    from benchmarks.baseline import row_by_row
    from msd_dagster.warehouse.urls import create_engine_for_url

    files = song_files(root)
    partition = "/".join(files[0].parts[-4:-2])
    sample = [f for f in files if "/".join(f.parts[-4:-2]) == partition][:songs]
    with fresh_database(backend, workdir) as url:
        engine = create_engine_for_url(url)
        try:
            result = row_by_row(engine, sample, partition)
        finally:
            engine.dispose()
    result["partition"] = partition
    print(
        f"[{backend}] row-by-row baseline: {result['rows']:,} rows of {result['songs']} songs in "
        f"{result['seconds']:.1f} s ({result['rows_per_second']:,.0f} rows/s)",
    )
    return result


def run_parse_benchmark(root: Path, files: int) -> dict[str, Any]:
    from benchmarks.parsebench import parse_benchmark

    chosen = song_files(root)
    step = max(1, len(chosen) // files)
    result = parse_benchmark(chosen[::step][:files])
    print(
        f"parse: read_song {result['read_song_files_per_cpu_second']:.0f} files/s per core, "
        f"h5py {result['h5py_files_per_cpu_second']:.0f} files/s per core",
    )
    return result


# --------------------------------------------------------------------------------------------
# Machine


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    packages = {}
    for name in ("dagster", "pandas", "numpy", "pyarrow", "h5py", "sqlalchemy", "psycopg"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "-"
    packages["pymysql"] = metadata.version("PyMySQL")
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": packages,
    }


# --------------------------------------------------------------------------------------------
# Main


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits (the JSON stays small; nothing here is that precise)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _median(values: list[float]) -> float:
    """The median; of an even count, the larger middle one (as the report's tables)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def marginal_folder_cost(
    many: list[dict[str, Any]], one: list[dict[str, Any]], folders: int
) -> dict[str, Any]:
    """What one more folder of one song adds to the wall time: (median wall of the loads of
    ``folders`` folders - median wall of the loads of one folder) / (``folders`` - 1)."""
    wall_many = _median([load["wall_seconds"] for load in many])
    wall_one = _median([load["wall_seconds"] for load in one])
    return {
        "folders": folders,
        "wall_seconds": wall_many,
        "single_folder_wall_seconds": wall_one,
        "per_partition_seconds": (wall_many - wall_one) / (folders - 1),
    }


def run_fixed_cost(
    folders: int,
    seed: int,
    backend: str,
    workdir: Path,
    args: argparse.Namespace,
    options: LoadOptions,
) -> dict[str, Any]:
    """``--fixed-cost``: our load and the reference on ``folders`` folders of one song and on
    one such folder; the cost of one more folder, ours, the reference's and their ratio."""
    many_root, _ = fixed_cost_dataset(folders, seed)
    one_root, _ = fixed_cost_dataset(1, seed)
    entry: dict[str, Any] = {"server": server_version(backend), "loads": [], "single_loads": []}
    for _ in range(args.repeat):
        for root, key in ((one_root, "single_loads"), (many_root, "loads")):
            entry[key].append(run_load(root, backend, workdir, options))
    fixed: dict[str, Any] = {
        "ours": marginal_folder_cost(entry["loads"], entry["single_loads"], folders),
        # The same from the event log: Dagster's seconds per folder (summed over the runs,
        # not wall time), for the load of many folders.
        "dagster_seconds_per_folder": _median(
            [load["dagster_seconds_per_folder"] for load in entry["loads"]]
        ),
    }
    if not args.no_reference:
        from benchmarks.reference_loader import file_rows

        entry["reference"] = run_reference(
            many_root, backend, args.workers, workdir, file_rows(many_root)
        )
        entry["reference_single"] = run_reference(
            one_root, backend, args.workers, workdir, file_rows(one_root)
        )
        compare_to_reference(backend, entry)
        reference = marginal_folder_cost([entry["reference"]], [entry["reference_single"]], folders)
        fixed["reference"] = reference
        if reference["per_partition_seconds"] > 0:
            fixed["ratio_to_reference"] = (
                fixed["ours"]["per_partition_seconds"] / reference["per_partition_seconds"]
            )
    entry["fixed_cost"] = fixed
    print(
        f"[{backend}] one more folder of one song: ours "
        f"{fixed['ours']['per_partition_seconds']:.3f} s"
        + (
            f", reference {fixed['reference']['per_partition_seconds']:.3f} s"
            if "reference" in fixed
            else ""
        ),
    )
    return entry


def run_backend(
    root: Path,
    backend: str,
    workdir: Path,
    args: argparse.Namespace,
    options: LoadOptions,
    expected_rows: dict[str, int] | None,
) -> dict[str, Any]:
    """Our loads (``--repeat``), then the reference, the row-by-row baseline, on ``root``."""
    entry: dict[str, Any] = {"server": server_version(backend), "loads": []}
    if args.reference_only:
        runs = [
            run_reference(root, backend, args.workers, workdir, expected_rows or {})
            for _ in range(args.repeat)
        ]
        entry["reference_runs"] = sorted(runs, key=lambda run: run["wall_seconds"])
        entry["reference"] = entry["reference_runs"][len(runs) // 2]
        return entry
    for _ in range(args.repeat):
        entry["loads"].append(run_load(root, backend, workdir, options))
    if expected_rows is not None:
        # After our loads: if the files were not in the page cache, we paid for it.
        entry["reference"] = run_reference(root, backend, args.workers, workdir, expected_rows)
        compare_to_reference(backend, entry)
    if args.baseline_songs:
        entry["baseline"] = run_baseline(root, backend, args.baseline_songs, workdir)
        ours = _median([load["rows_per_second"] for load in entry["loads"]])
        entry["speedup_vs_row_by_row"] = ours / entry["baseline"]["rows_per_second"]
        print(f"[{backend}] ours / row-by-row = {entry['speedup_vs_row_by_row']:.0f}x")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=1000, help="generated songs (cached)")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="dense",
        help="dense: the subset's 35 folders; sparse: songs over ~450 folders",
    )
    parser.add_argument(
        "--fixed-cost",
        type=int,
        default=0,
        metavar="N",
        help="instead of --songs/--dataset: N folders of one song each and one such folder; "
        "reports (wall of N - wall of 1) / (N - 1), ours and the reference's",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--backend", default="sqlite", help=f"comma-separated, of {', '.join(BACKENDS)}"
    )
    parser.add_argument("--workers", type=int, default=2, help="msd-dagster load --workers")
    parser.add_argument("--repeat", type=int, default=1, help="loads per backend")
    parser.add_argument(
        "--instance",
        choices=INSTANCES,
        default="recommended",
        help="dagster.yaml of the load's DAGSTER_HOME: what msd-dagster writes into a new one, "
        f"or Dagster's defaults (label '{PLAIN_INSTANCE}')",
    )
    parser.add_argument(
        "--folders-per-run",
        type=int,
        metavar="K",
        help="runs of K folders instead of the CLI's plan (label 'runs-of-K')",
    )
    parser.add_argument("--baseline-songs", type=int, default=10, help="0 to skip")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference loader (no ratios)"
    )
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help=f"only the reference loader, --repeat times (label '{REFERENCE_ONLY}')",
    )
    parser.add_argument("--parse-files", type=int, default=300, help="0 to skip")
    parser.add_argument(
        "--table-profile", action="store_true", help="per-table write rates (one partition)"
    )
    parser.add_argument("--label", default="", help="tag for the result file, e.g. 'before'")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    # Progress lines show at once, also when the output goes to a pipe or a log.
    sys.stdout.reconfigure(line_buffering=True)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(unknown)}")
    if args.reference_only:
        if args.no_reference or args.fixed_cost:
            parser.error("--reference-only goes with neither --no-reference nor --fixed-cost")
        # Results of the reference alone are kept apart from our loads' (report.py).
        args.label = args.label or REFERENCE_ONLY
        args.parse_files = args.baseline_songs = 0
    if args.instance == "plain":
        args.label = args.label or PLAIN_INSTANCE
    if args.folders_per_run is not None:
        if args.folders_per_run < 1:
            parser.error("--folders-per-run must be at least 1")
        args.label = args.label or f"{RUNS_OF}{args.folders_per_run}"
    if args.fixed_cost:
        if args.fixed_cost < 2:
            parser.error("--fixed-cost needs at least 2 folders")
        # One song per folder: no parse benchmark, baseline or table profile worth the time.
        args.parse_files = args.baseline_songs = 0
        args.table_profile = False
        args.dataset, args.songs = "fixed", args.fixed_cost
        root, generated = fixed_cost_dataset(args.fixed_cost, args.seed)
        fixed_cost_dataset(1, args.seed)
    else:
        root, generated = cached_dataset(args.songs, args.seed, shape=args.dataset)
    if generated:
        print(f"generated the {args.dataset} dataset in {generated:.1f} s (cached for next time)")
    started_at = datetime.now(UTC)
    result: dict[str, Any] = {
        "started": started_at.isoformat(timespec="seconds"),
        "label": args.label,
        "command": "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]),
        # Runs over ranges of folders, one step each (older results: one run per folder).
        "run_shape": FOLDER_RUNS,
        "songs": args.songs,
        "seed": args.seed,
        "dataset": args.dataset,
        "folders": folder_count(root),
        "dataset_bytes": sum(p.stat().st_size for p in song_files(root)),
        "machine": machine(),
        "backends": {},
    }
    options = LoadOptions(args.workers, args.instance, args.folders_per_run, args.table_profile)
    with tempfile.TemporaryDirectory(prefix="msd-bench-") as tmp:
        workdir = Path(tmp)
        if args.parse_files:
            result["parse"] = run_parse_benchmark(root, args.parse_files)
        expected_rows = None
        if not args.no_reference and not args.fixed_cost:
            from benchmarks.reference_loader import file_rows

            expected_rows = file_rows(root)
        for backend in backends:
            if args.fixed_cost:
                entry = run_fixed_cost(args.fixed_cost, args.seed, backend, workdir, args, options)
            else:
                entry = run_backend(root, backend, workdir, args, options, expected_rows)
            result["backends"][backend] = entry
    RESULTS.mkdir(exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    label = f"-{args.label}" if args.label else ""
    if args.fixed_cost:
        what = f"fixed{args.fixed_cost}"
    else:
        what = f"{args.songs}songs" + ("-sparse" if args.dataset == "sparse" else "")
    out = RESULTS / f"{stamp}-{what}-{'-'.join(backends)}{label}.json"
    out.write_text(json.dumps(_rounded(result), indent=1, default=str) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")
    if not args.no_docs:
        from benchmarks.report import update_docs

        update_docs()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
