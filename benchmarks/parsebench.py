"""Parse micro-benchmark: song files per second on one core, ``read_song`` vs plain h5py.

Files are read from the page cache (the timing includes reading the bytes, as the loader
does for a local source). Each variant runs ``repeats`` times over the same files; the median
is reported. The h5py baseline opens the file with ``h5py.File`` and reads all 24 datasets.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import h5py

from msd_dagster.msd.fields import ARRAYS, COMPOUND_TABLES
from msd_dagster.msd.reader import read_song

DATASETS = [*COMPOUND_TABLES, *ARRAYS]


def naive_h5py(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in DATASETS}


def _files_per_second(function, files: list[Path], repeats: int) -> tuple[list[float], list[float]]:
    rates, wall_rates = [], []
    for _ in range(repeats):
        started = time.process_time()
        wall = time.perf_counter()
        for path in files:
            function(path)
        cpu = time.process_time() - started
        wall = time.perf_counter() - wall
        # CPU time of this process: the per-core rate, robust to other processes' load.
        rates.append(len(files) / max(cpu, 1e-9))
        wall_rates.append(len(files) / max(wall, 1e-9))
    return rates, wall_rates


def parse_benchmark(files: list[Path], repeats: int = 5) -> dict[str, Any]:
    for path in files:  # warm the page cache and imports
        path.read_bytes()
    read_song(files[0])
    naive_h5py(files[0])
    ours, ours_wall = _files_per_second(read_song, files, repeats)
    naive, naive_wall = _files_per_second(naive_h5py, files, repeats)
    size = sum(p.stat().st_size for p in files) / len(files)
    return {
        "files": len(files),
        "mean_file_bytes": round(size),
        "datasets_per_file": len(DATASETS),
        "repeats": repeats,
        "read_song_files_per_cpu_second": statistics.median(ours),
        "read_song_runs": ours,
        "read_song_files_per_wall_second": statistics.median(ours_wall),
        "h5py_files_per_cpu_second": statistics.median(naive),
        "h5py_runs": naive,
        "h5py_files_per_wall_second": statistics.median(naive_wall),
    }
