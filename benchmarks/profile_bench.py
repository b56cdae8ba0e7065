"""How long the dataset profile takes on a loaded database.

    .venv/bin/python -m benchmarks.profile_bench --songs 10000 --backend postgresql

Loads a generated dataset (``benchmarks/cache/``, the subset's shape) into a fresh database with
the real ``msd-dagster load`` (which ends with one profile run through Dagster), then measures,
``--repeat`` times each, in this process:

* ``row counts``: ``COUNT(*)`` of the twelve tables, the least any profile must do (the
  reference: the profile is also given as a ratio to it, measured in the same invocation);
* ``profile queries``: :func:`msd_dagster.warehouse.profile.profile_warehouse`, every query;
* ``plots and page``: :func:`msd_dagster.profile_report.build_report` and ``write_report``;

and once, from outside, ``msd-dagster profile`` as a user runs it (start-up included). The
target (issue 23): the profile of the subset in PostgreSQL in <= 10 s. The result goes to
``benchmarks/results/profile/<time>-<songs>songs-<backend>.json`` (a folder of its own: the
load results' report reads every file of ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.dataset import DEFAULT_SEED, cached_dataset
from benchmarks.run import BACKENDS, RESULTS, _median, _pythonpath, _rounded, fresh_database
from msd_dagster.profile_report import build_report, write_report
from msd_dagster.warehouse.profile import profile_warehouse
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster.warehouse.verify import table_totals

TARGET_SECONDS = 10.0
PROFILE_RESULTS = RESULTS / "profile"


def _timed(repeat: int, work: Callable[[], Any]) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def _load(root: Path, url: str, home: Path) -> float:
    """``msd-dagster load`` of ``root`` into ``url``; its wall seconds (fails loudly)."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home / "dagster_home"),
        "MSD_HOME": str(home),
        "PYTHONPATH": _pythonpath(),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "msd_dagster.cli", "load", "--source", str(root)]
        + ["--database-url", url, "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or "dataset profile: " not in done.stdout:
        raise SystemExit(f"the load failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return time.perf_counter() - started


def measure(backend: str, songs: int, repeat: int, workdir: Path) -> dict[str, Any]:
    root, _ = cached_dataset(songs, DEFAULT_SEED)
    with fresh_database(backend, workdir) as url:
        home = workdir / f"home-{backend}"
        load_seconds = _load(root, url, home)
        engine = create_engine_for_url(url)
        try:
            with engine.connect() as conn:
                counts_s, counts = _timed(repeat, lambda: table_totals(conn))
                queries_s, profile = _timed(repeat, lambda: profile_warehouse(conn))
        finally:
            engine.dispose()
        report_s, _ = _timed(
            repeat,
            lambda: write_report(build_report(profile, backend), home / "bench-profile"),
        )
        started = time.perf_counter()
        command = subprocess.run(
            [sys.executable, "-m", "msd_dagster.cli", "profile", "--database-url", url]
            + ["--out", str(home / "cli-profile")],
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            capture_output=True,
            text=True,
        )
        command_s = time.perf_counter() - started
        if command.returncode != 0:
            raise SystemExit(f"msd-dagster profile failed: {command.stdout}{command.stderr}")
    queries, report = _median(queries_s), _median(report_s)
    return {
        "backend": backend,
        "songs": songs,
        "rows": counts,
        "load_seconds": load_seconds,
        "row_counts_seconds": counts_s,
        "profile_queries_seconds": queries_s,
        "plots_and_page_seconds": report_s,
        "profile_seconds_median": queries + report,
        "ratio_to_row_counts": queries / _median(counts_s),
        "cli_profile_seconds": command_s,
        "target_seconds": TARGET_SECONDS,
        "met": queries + report <= TARGET_SECONDS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=10000)
    parser.add_argument("--backend", default="postgresql", help=f"of {', '.join(BACKENDS)}")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="msd-profile-bench-") as tmp:
        for backend in args.backend.split(","):
            result = measure(backend, args.songs, args.repeat, Path(tmp))
            results.append(result)
            print(
                f"{backend}: {result['songs']:,} songs ({sum(result['rows'].values()):,} rows): "
                f"profile {result['profile_seconds_median']:.2f} s (queries "
                f"{_median(result['profile_queries_seconds']):.2f} s = "
                f"{result['ratio_to_row_counts']:.2f}x the row counts' "
                f"{_median(result['row_counts_seconds']):.2f} s; plots and page "
                f"{_median(result['plots_and_page_seconds']):.2f} s); msd-dagster profile "
                f"{result['cli_profile_seconds']:.1f} s; target <= {TARGET_SECONDS:g} s "
                f"{'met' if result['met'] else 'NOT met'}",
                flush=True,
            )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = PROFILE_RESULTS / f"{stamp}-{args.songs}songs-{args.backend.replace(',', '-')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(_rounded(results), indent=2) + "\n")
    print(f"results: {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
