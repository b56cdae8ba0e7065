"""Peak memory of ``msd-dagster load --workers 1`` into PostgreSQL, per folder size.

For each dataset given (one folder each, e.g. ``msd-dagster sample --songs 2500 --seed 5
--folders C/C``), loads it into a new PostgreSQL database with one worker and samples, every
0.2 s from ``/proc``, the RSS of every process of the command's tree: the peak of the largest
process (the worker) and the peak of their sum (the tree). ``--code DIR`` runs the package found
in DIR (e.g. an export of another commit) instead of this checkout's, for before/after tables.

    python -m benchmarks.memory --dataset 300=/data/s300 --dataset 2500=/data/s2500 \
        [--code /path/of/other/checkout] [--label after] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.proctree import run_tree
from benchmarks.run import fresh_database

MIB = 2**20


def measure(songs: str, source: str, code: str | None) -> dict[str, object]:
    """One load of ``source`` with one worker into a new database; peaks in MiB."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code
    with (
        tempfile.TemporaryDirectory() as home,
        fresh_database("postgresql", Path(home)) as url,
    ):
        env["MSD_HOME"] = home
        env["DAGSTER_HOME"] = str(Path(home) / "dagster_home")
        cmd = [sys.executable, "-m", "msd_dagster.cli", "load", "--source", source]
        cmd += ["--database-url", url, "--workers", "1"]
        log = str(Path(home) / "load.log")
        # ``python -m`` puts the working folder first on sys.path: run in the code's own.
        result = run_tree(cmd, env, log, cwd=code)
    if result.returncode != 0:
        raise SystemExit(f"load of {source} failed ({result.returncode}): {result.stdout[-2000:]}")
    return {
        "songs": songs,
        "source": source,
        "wall_seconds": round(result.wall_seconds, 1),
        "largest_process_mib": round(result.peak_process_rss_bytes / MIB),
        "tree_mib": round(result.peak_rss_bytes / MIB),
        "tree_pss_mib": round(result.peak_pss_bytes / MIB),
        "processes": result.peak_processes,
        "load_average": result.load_average,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", required=True, help="SONGS=DIR")
    parser.add_argument("--code", help="a checkout whose msd_dagster package to run")
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", default="benchmarks/results/scale")
    args = parser.parse_args()
    rows = []
    for item in args.dataset:
        songs, source = item.split("=", 1)
        row = measure(songs, source, args.code)
        print(json.dumps(row), flush=True)
        rows.append(row)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) / f"{stamp}-memory-{args.label}.json"
    out.write_text(json.dumps({"label": args.label, "runs": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
