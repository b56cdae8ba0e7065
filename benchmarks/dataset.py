"""Generated benchmark datasets, cached under ``benchmarks/cache/`` (git-ignored).

Two shapes:

* **dense** (default): the subset's 35 second-level folders, weighted like the real subset, so
  a partition holds hundreds of songs (``msd-<songs>-seed<seed>``).
* **sparse**: songs spread evenly over ``SPARSE_FOLDER_KEYS`` of the 676 ``X/Y`` keys, drawn by
  the seed; the generator puts each song in a random key of that list, so with the default 1,000
  songs about 450 keys get songs (1-2 songs per partition: the per-partition cost dominates)
  (``msd-sparse<keys>-<songs>-seed<seed>``).

And for ``benchmarks.run --fixed-cost N``: **N folders of exactly one song each**
(``msd-fixed-<N>-seed<seed>``), spread evenly over the 676 keys; the one-folder set holds the
first folder's song of every larger set, so two loads differ only by N - 1 folders of one song.
"""

from __future__ import annotations

import random
import string
import time
from pathlib import Path

from msd_dagster.generate import generate_dataset

CACHE = Path(__file__).resolve().parent / "cache"
DEFAULT_SEED = 7
DATASETS = ("dense", "sparse")
# 1,000 songs thrown at random into 530 keys leave ~80 empty: ~450 folders hold songs.
SPARSE_FOLDER_KEYS = 530
ALL_FOLDERS: tuple[str, ...] = tuple(
    f"{a}/{b}" for a in string.ascii_uppercase for b in string.ascii_uppercase
)


def sparse_folders(seed: int, count: int = SPARSE_FOLDER_KEYS) -> list[str]:
    """``count`` of the 676 second-level keys, the same for the same seed, in sorted order."""
    return sorted(random.Random(seed).sample(ALL_FOLDERS, count))


def cached_dataset(
    songs: int, seed: int = DEFAULT_SEED, workers: int = 2, shape: str = "dense"
) -> tuple[Path, float]:
    """The dataset root of ``songs`` generated songs of ``shape`` (``dense`` or ``sparse``,
    generated on first use) and the seconds its generation took now (0.0 when it came from the
    cache)."""
    if shape == "dense":
        root, folders = CACHE / f"msd-{songs}-seed{seed}", None
    elif shape == "sparse":
        root = CACHE / f"msd-sparse{SPARSE_FOLDER_KEYS}-{songs}-seed{seed}"
        folders = sparse_folders(seed)
    else:
        raise ValueError(f"shape must be one of {', '.join(DATASETS)}: {shape!r}")
    marker = root / ".complete"
    if marker.exists():
        return root, 0.0
    started = time.perf_counter()
    generate_dataset(root, songs, seed=seed, workers=workers, folders=folders)
    seconds = time.perf_counter() - started
    marker.write_text(f"{songs} songs, {shape}, seed {seed}, generated in {seconds:.1f} s\n")
    return root, seconds


def fixed_cost_folders(count: int) -> list[str]:
    """``count`` second-level keys spread evenly over the 676 (the first is always ``A/A``)."""
    if not 1 <= count <= len(ALL_FOLDERS):
        raise ValueError(f"folders must be 1 to {len(ALL_FOLDERS)}: {count}")
    return [ALL_FOLDERS[i * len(ALL_FOLDERS) // count] for i in range(count)]


def fixed_cost_dataset(folders: int, seed: int = DEFAULT_SEED) -> tuple[Path, float]:
    """The root of ``folders`` folders holding one song each (generated on first use) and the
    seconds its generation took now (0.0 when it came from the cache)."""
    root = CACHE / f"msd-fixed-{folders}-seed{seed}"
    marker = root / ".complete"
    if marker.exists():
        return root, 0.0
    started = time.perf_counter()
    # The generator draws each song's folder at random: one call per folder puts exactly one
    # song in each; the seed follows the folder's rank, so every set starts with the same song.
    for rank, key in enumerate(fixed_cost_folders(folders)):
        generate_dataset(root, 1, seed=seed + rank, folders=[key])
    seconds = time.perf_counter() - started
    marker.write_text(f"{folders} folders of one song, seed {seed}, generated in {seconds:.1f} s\n")
    return root, seconds


def song_files(root: Path) -> list[Path]:
    return sorted((root / "data").glob("*/*/*/*.h5"))


def folder_count(root: Path) -> int:
    """Second-level folders that hold at least one song (the partitions of a load)."""
    return len({f.parts[-4:-2] for f in song_files(root)})
