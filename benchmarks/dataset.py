"""Generated benchmark datasets, cached under ``benchmarks/cache/`` (git-ignored)."""

from __future__ import annotations

import time
from pathlib import Path

from msd_dagster.generate import generate_dataset

CACHE = Path(__file__).resolve().parent / "cache"
DEFAULT_SEED = 7


def cached_dataset(songs: int, seed: int = DEFAULT_SEED, workers: int = 2) -> tuple[Path, float]:
    """The dataset root of ``songs`` generated songs (generated on first use) and the seconds
    its generation took now (0.0 when it came from the cache)."""
    root = CACHE / f"msd-{songs}-seed{seed}"
    marker = root / ".complete"
    if marker.exists():
        return root, 0.0
    started = time.perf_counter()
    generate_dataset(root, songs, seed=seed, workers=workers)
    seconds = time.perf_counter() - started
    marker.write_text(f"{songs} songs, seed {seed}, generated in {seconds:.1f} s\n")
    return root, seconds


def song_files(root: Path) -> list[Path]:
    return sorted((root / "data").glob("*/*/*/*.h5"))
