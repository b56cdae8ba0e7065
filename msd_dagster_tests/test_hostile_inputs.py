"""Hostile inputs: song files that declare more than they store or than a song can hold.

Every bad file is made from a real song file (copied, then changed with h5py).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from msd_dagster.msd.partition import normalize_partition
from msd_dagster.msd.reader import InvalidSongFile, read_song
from msd_dagster.source.local import LocalDataset
from msd_dagster_tests.shared_data import real_song_paths

LEAF = "data/A/A/A"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A dataset root whose partition A/A holds the 13 real song files of data/A/A/A."""
    dataset = tmp_path / "dataset"
    leaf = dataset / LEAF
    leaf.mkdir(parents=True)
    for path in real_song_paths():
        shutil.copyfile(path, leaf / path.name)
        (leaf / path.name).chmod(0o644)
    yield dataset
    # Undo the tests' chmod so that pytest can clean up (also when not run as root).
    for folder in (dataset / "data/A/A", dataset / LEAF):
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o755)
            for path in folder.iterdir():
                if not path.is_symlink():
                    path.chmod(0o755)


def real_counts() -> tuple[int, int]:
    """(tracks, bars) of the 13 real files, read independently with h5py."""
    paths = real_song_paths()
    bars = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            bars += f["analysis/bars_start"].shape[0]
    return len(paths), bars


def keys_of(dataset: LocalDataset) -> list[str]:
    return [f.key for f in dataset.list_files("A/A")]


def song_key(tag: str) -> str:
    """A layout-valid key in the leaf for a made-up track id ``TRAAA<tag>``."""
    return f"{LEAF}/TRAAA{tag:0>13}.h5"


def copy_real(target: Path) -> Path:
    shutil.copyfile(real_song_paths()[0], target)
    target.chmod(0o644)
    return target


def redeclare(
    path: Path, name: str, rows: int, *, written: int = 0, **layout_options: object
) -> None:
    """Recreate dataset ``name`` with ``rows`` declared rows, chunked and compressed like the
    original unless ``layout_options`` say otherwise, and only its first ``written`` rows
    written (unwritten chunks are not stored: HDF5 reads them back as fill values)."""
    with h5py.File(path, "a") as f:
        old = f[name]
        options = {
            "dtype": old.dtype,
            "chunks": old.chunks,
            "compression": old.compression,
            "compression_opts": old.compression_opts,
            "shuffle": old.shuffle,
            "maxshape": (None, *old.shape[1:]),
        }
        options.update(layout_options)
        trailing = old.shape[1:]
        del f[name]
        dataset = f.create_dataset(name, shape=(rows, *trailing), **options)
        if written:
            values = np.linspace(0.5, 1.0, written * math.prod(trailing))
            dataset[:written] = values.reshape(written, *trailing)


def rejection(path: Path) -> str:
    with pytest.raises(InvalidSongFile) as caught:
        read_song(path)
    return caught.value.reason


def peak_traced_bytes(call: object) -> int:
    """Peak bytes allocated through Python's and numpy's allocators while ``call`` runs."""
    tracemalloc.start()
    with contextlib.suppress(InvalidSongFile):
        call()  # type: ignore[operator]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------------------------
# 3. Implausible files: declared but not stored, or more than a song can hold


def test_arrays_declared_but_never_written_are_rejected_not_loaded_as_zeros(root: Path) -> None:
    # The report's file: a real song whose bars are declared with 1,000,000 rows, never written
    # (it loaded 1,000,000 msd_bar rows of zeros, "0 rejected").
    victim = real_song_paths()[0]
    for name in ("analysis/bars_start", "analysis/bars_confidence"):
        redeclare(root / LEAF / victim.name, name, 1_000_000)
    dataset = LocalDataset(root)
    batch, counts = normalize_partition(dataset, keys_of(dataset))
    tracks, bars = real_counts()
    with h5py.File(victim, "r") as f:
        victim_bars = f["analysis/bars_start"].shape[0]
    assert batch.track_count == tracks - 1
    assert counts["msd_bar"] == len(batch.frames["msd_bar"]) == bars - victim_bars
    assert [(r.name, r.reason) for r in batch.rejected] == [
        (
            f"{LEAF}/{victim.name}",
            "analysis/bars_confidence declares 1,000,000 rows, more than a song can hold "
            "(at most 125,000 bars)",
        )
    ]


@pytest.mark.parametrize(
    ("rows", "written", "options", "reason"),
    [
        (
            100_000,
            0,
            {},
            "analysis/bars_start declares 100,000 rows but stores only 0 of the 98 chunks "
            "they need (the rest was never written)",
        ),
        (
            50_000,
            1_024,
            {},
            "analysis/bars_start declares 50,000 rows but stores only 1 of the 49 chunks "
            "they need (the rest was never written)",
        ),
        (
            5_000,
            0,
            {
                "chunks": None,
                "compression": None,
                "compression_opts": None,
                "shuffle": False,
                "maxshape": None,
            },
            "analysis/bars_start declares 5,000 rows (40,000 bytes) but stores only 0 bytes "
            "(the rest was never written)",
        ),
    ],
    ids=["unwritten", "partly-written", "contiguous-unwritten"],
)
def test_stored_data_is_checked_against_the_declared_shape(
    tmp_path: Path, rows: int, written: int, options: dict, reason: str
) -> None:
    path = copy_real(tmp_path / real_song_paths()[0].name)
    redeclare(path, "analysis/bars_start", rows, written=written, **options)
    assert rejection(path) == reason


def test_declared_sizes_are_bounded_before_anything_is_allocated(tmp_path: Path) -> None:
    def variant(name: str, edit: object) -> Path:
        (tmp_path / name).mkdir()
        path = copy_real(tmp_path / name / real_song_paths()[0].name)
        edit(path)  # type: ignore[operator]
        return path

    cases = {
        variant("rows", lambda p: redeclare(p, "analysis/segments_pitches", 10**12)): (
            "analysis/segments_pitches declares 1,000,000,000,000 rows, more than a song can "
            "hold (at most 330,000 segments)"
        ),
        variant(
            "item",
            lambda p: redeclare(p, "metadata/similar_artists", 100, dtype="S2000000", chunks=(1,)),
        ): ("its datasets declare 200,"),
        variant(
            "chunk",
            lambda p: redeclare(p, "analysis/sections_start", 10, written=10, chunks=(10_000_000,)),
        ): (
            "analysis/sections_start declares chunks of 80,000,000 bytes, more than a song file "
            "uses (at most 4,194,304)"
        ),
        variant(
            "density", lambda p: redeclare(p, "analysis/tatums_start", 200_000, written=200_000)
        ): "analysis/tatums_start declares 200,000 tatums for 218.9 s of audio, more than a song",
    }
    for path, reason in cases.items():
        image = path.read_bytes()
        peak = peak_traced_bytes(lambda image=image, path=path: read_song(image, name=str(path)))
        assert rejection(path).startswith(reason), path
        # Nothing near the declared size was ever allocated (real files parse in ~1 MB).
        assert peak < 4_000_000, (path, peak)


def test_a_chunk_that_inflates_beyond_its_size_is_rejected_without_inflating_it(
    tmp_path: Path,
) -> None:
    path = copy_real(tmp_path / real_song_paths()[0].name)
    bomb = zlib.compress(bytes(64 * 1024 * 1024), 9)  # 64 MiB of zeros in ~64 KB
    with h5py.File(path, "a") as f:
        f["analysis/bars_start"].id.write_direct_chunk((0,), bomb, filter_mask=0)
    image = path.read_bytes()
    assert (
        rejection(path) == "analysis/bars_start has a chunk that inflates beyond its declared size"
    )
    assert peak_traced_bytes(lambda: read_song(image, name=path.name)) < 4_000_000


def test_data_kept_in_external_files_is_rejected(tmp_path: Path) -> None:
    path = copy_real(tmp_path / real_song_paths()[0].name)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(range(256)) * 4)
    with h5py.File(path, "a") as f:
        del f["analysis/bars_start"]
        f.create_dataset(
            "analysis/bars_start", shape=(83,), dtype="<f8", external=[(outside, 0, 1024)]
        )
    assert rejection(path) == "analysis/bars_start keeps its data in external files"


def test_a_rejected_file_kept_alive_does_not_change_how_the_next_files_read(
    tmp_path: Path,
) -> None:
    # HDF5 knows open file images by name: a dataset of a rejected file kept alive (here by
    # its traceback) used to make the next files read through the old file's metadata.
    path = copy_real(tmp_path / real_song_paths()[0].name)
    with h5py.File(path, "a") as f:
        data = f["analysis/bars_start"][()]
        del f["analysis/bars_start"]
        f.create_dataset(
            "analysis/bars_start", data=data.astype("<i4"), chunks=(1024,), maxshape=(None,)
        )
    kept: list[InvalidSongFile] = []
    try:
        read_song(path)
    except InvalidSongFile as exc:
        kept.append(exc)
    assert kept and "analysis/bars_start has dtype int32" in kept[0].reason
    assert [read_song(p).track_id for p in real_song_paths()] == [p.stem for p in real_song_paths()]
