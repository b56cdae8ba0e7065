"""Hostile inputs on a local dataset: unreadable folders and files, broken symbolic links, and
song files that declare more than they store or than a song can hold.

Every bad file is made from a real song file (copied, then changed with h5py); permission
cases run the listing, parse and load in a child process that file modes apply to (see
:mod:`msd_dagster_tests.unprivileged`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import sqlite3
import subprocess
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from msd_dagster.msd import reader as reader_module
from msd_dagster.msd.partition import normalize_partition
from msd_dagster.msd.reader import InvalidSongFile, read_song
from msd_dagster.source import layout
from msd_dagster.source import local as local_module
from msd_dagster.source.layout import SourceError, SourceListingError, UnreadableSourceFile
from msd_dagster.source.local import LocalDataset
from msd_dagster_tests.shared_data import real_song_paths
from msd_dagster_tests.unprivileged import REPOSITORY, probe, unprivileged_command

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
# 1. A listing that could not read everything fails the partition


def test_an_unreadable_leaf_folder_fails_the_partition_and_keeps_its_rows(
    root: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'msd.sqlite'}"
    tracks, bars = real_counts()
    first = probe(root, "A/A", url)
    assert first["tracks"] == tracks and first["rejected"] == []
    assert first["written"]["msd_track"] == tracks and first["written"]["msd_bar"] == bars

    (root / LEAF).chmod(0o000)
    second = probe(root, "A/A", url)
    assert second["error"] == {
        "type": "SourceListingError",
        "location": LEAF,
        "reason": (
            "Permission denied, EACCES: the user running the load cannot read this folder; "
            "give it read and execute permission (e.g. chmod a+rx) and load again"
        ),
        "permanent": True,
        "message": f"cannot list {LEAF}: {second['error']['reason']}",
    }
    assert "files" not in second  # nothing listed, nothing loaded
    with sqlite3.connect(tmp_path / "msd.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM msd_track").fetchone()[0] == tracks
        assert db.execute("SELECT COUNT(*) FROM msd_bar").fetchone()[0] == bars


def test_an_unreadable_or_unsearchable_folder_is_named_in_the_listing_error(root: Path) -> None:
    (root / "data/A/A").chmod(0o000)
    error = probe(root, "A/A")["error"]
    assert (error["type"], error["location"], error["permanent"]) == (
        "SourceListingError",
        "data/A/A",
        True,
    )
    (root / "data/A/A").chmod(0o755)
    # Readable but not searchable: the names are listed, the files cannot be examined.
    (root / LEAF).chmod(0o444)
    error = probe(root, "A/A")["error"]
    assert (error["type"], error["location"], error["permanent"]) == (
        "SourceListingError",
        LEAF,
        True,
    )
    assert error["reason"].startswith("Permission denied, EACCES")


def test_a_missing_dataset_root_is_an_error_not_an_empty_partition(tmp_path: Path) -> None:
    with pytest.raises(SourceListingError) as caught:
        LocalDataset(tmp_path / "unmounted").list_files("A/A")
    assert caught.value.location == "data/A/A" and caught.value.permanent
    assert "has no data/ folder" in caught.value.reason
    # With data/ present, a partition folder that is not there is an empty partition.
    (tmp_path / "dataset/data").mkdir(parents=True)
    assert LocalDataset(tmp_path / "dataset").list_files("A/A") == []


def test_a_broken_link_that_may_be_a_folder_fails_the_listing(root: Path) -> None:
    (root / "data/A/A/B").symlink_to(root / "unmounted-disk/B")
    with pytest.raises(SourceListingError) as caught:
        LocalDataset(root).list_files("A/A")
    assert caught.value.location == "data/A/A/B" and caught.value.permanent
    assert caught.value.reason.startswith("No such file or directory, ENOENT: a broken symbolic")


def test_folder_links_are_followed_once_and_never_into_a_loop(root: Path) -> None:
    elsewhere = root.parent / "other-disk"
    shutil.move(root / LEAF, elsewhere)
    (root / LEAF).symlink_to(elsewhere)  # a leaf folder kept on another disk
    (elsewhere / "up").symlink_to(root / "data")  # loops: data -> ... -> A -> up -> data
    (elsewhere / "self").symlink_to(elsewhere)
    keys = keys_of(LocalDataset(root))
    assert keys == sorted(f"{LEAF}/{p.name}" for p in real_song_paths())


# --------------------------------------------------------------------------------------------
# 2. One bad entry is rejected on its own; the good files load


def test_broken_entries_are_rejected_by_name_and_the_good_files_load(root: Path) -> None:
    loop, dangling, fifo, huge = (song_key(str(i)) for i in range(1, 5))
    (root / loop).symlink_to(Path(loop).name)  # points at itself: ELOOP
    (root / dangling).symlink_to("TRAAA0000000000000.h5")
    os.mkfifo(root / fifo)  # reading it would wait forever for a writer
    redeclare(copy_real(root / huge), "analysis/bars_start", 10**12)  # 7.28 TiB of float64

    dataset = LocalDataset(root)
    keys = keys_of(dataset)
    assert len(keys) == 13 + 4 and {loop, dangling, fifo, huge} <= set(keys)
    batch, counts = normalize_partition(dataset, keys)
    tracks, bars = real_counts()
    assert batch.track_count == tracks and counts["msd_bar"] == bars
    assert sorted((r.name, r.reason) for r in batch.rejected) == [
        (loop, "a symbolic link loop (too many levels of symbolic links): fix or remove it"),
        (dangling, "a broken symbolic link (its target does not exist): fix or remove it"),
        (fifo, "not a regular file (a named pipe): move it away"),
        (
            huge,
            "analysis/bars_start declares 1,000,000,000,000 rows, more than a song can hold "
            "(at most 125,000 bars)",
        ),
    ]


def test_files_that_are_no_song_files_are_rejected_by_name_unread(root: Path) -> None:
    """Every file of a partition folder is accounted for: one that is no song file is listed
    and rejected by its name, never read (a pipe would block, a large file fill memory)."""
    fifo, large, hidden, misplaced = (
        "data/A/A/notes",
        f"{LEAF}/backup.tar",
        f"{LEAF}/.DS_Store",
        "data/A/A/TRAAA0000000000001.h5",  # a song file one level too high
    )
    os.mkfifo(root / fifo)
    with (root / large).open("wb") as handle:
        handle.truncate(100 * 2**30)  # sparse: 100 GiB that reading would allocate
    (root / hidden).write_bytes(b"\0\0\0\1Bud1")
    copy_real(root / misplaced)

    dataset = LocalDataset(root)
    keys = keys_of(dataset)
    assert {fifo, large, hidden, misplaced} <= set(keys)
    batch, _ = normalize_partition(dataset, keys)
    assert batch.track_count == real_counts()[0]
    not_read = "not a song file (only <TRACK_ID>.h5 files are loaded); not read"
    assert sorted((r.name, r.reason) for r in batch.rejected) == sorted(
        [
            (misplaced, "not at data/<c3>/<c4>/<c5>/<TRACK_ID>.h5 for its track id"),
            (fifo, not_read),
            (hidden, not_read),
            (large, not_read),
        ]
    )


def test_an_unreadable_file_is_rejected_by_name(root: Path) -> None:
    tracks, _ = real_counts()
    victim = f"{LEAF}/{real_song_paths()[3].name}"
    (root / victim).chmod(0o000)
    out = probe(root, "A/A")
    assert len(out["files"]) == tracks
    assert out["rejected"] == [
        [
            victim,
            "permission denied: the user running the load cannot read this file; fix its mode "
            "or owner (e.g. chmod a+r) and load again",
        ]
    ]
    assert out["tracks"] == tracks - 1


def test_a_partition_none_of_whose_files_can_be_read_fails(root: Path) -> None:
    for path in (root / LEAF).iterdir():
        path.chmod(0o000)
    error = probe(root, "A/A")["error"]
    first = f"{LEAF}/{real_song_paths()[0].name}"
    assert (error["type"], error["location"], error["permanent"]) == (
        "SourceError",
        "data/A/A",
        True,
    )
    assert error["reason"].startswith(
        f"none of its 13 song files could be read, e.g. {first}: permission denied"
    )


def test_a_partition_without_one_valid_song_file_fails(root: Path) -> None:
    """A folder truncated by a failed copy must not replace its loaded rows with none."""
    paths = sorted((root / LEAF).iterdir())
    for path in paths:
        path.write_bytes(path.read_bytes()[:4096])
    dataset = LocalDataset(root)
    with pytest.raises(SourceError) as raised:
        normalize_partition(dataset, keys_of(dataset))
    error = raised.value
    assert (error.location, error.permanent) == ("data/A/A", True)
    assert error.reason.startswith(
        f"none of its 13 files is a valid song file, e.g. {LEAF}/{paths[0].name}: "
    )
    assert error.reason.endswith("Nothing was loaded; the rows loaded before are kept")


def test_per_file_and_passing_read_errors_are_told_apart(root: Path) -> None:
    dataset = LocalDataset(root)
    key = f"{LEAF}/{real_song_paths()[0].name}"
    gone = dataset._read_error(key, FileNotFoundError(errno.ENOENT, "No such file or directory"))
    assert isinstance(gone, UnreadableSourceFile) and gone.permanent
    assert gone.reason == "gone since the listing (deleted or renamed): load the partition again"
    flaky = dataset._read_error(key, OSError(errno.EIO, "Input/output error"))
    assert type(flaky) is SourceError and not flaky.permanent
    assert str(flaky) == (
        f"{key}: read failed (Input/output error, EIO): check the disk or the mount; the step "
        "can be retried"
    )


def test_a_file_larger_than_any_song_is_rejected_unread(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 250_000  # below some real files (0.18-0.37 MB)
    for module in (layout, local_module, reader_module):
        monkeypatch.setattr(module, "MAX_SONG_FILE_BYTES", limit)
    dataset = LocalDataset(root)
    batch, _ = normalize_partition(dataset, keys_of(dataset))
    large = {p for p in real_song_paths() if p.stat().st_size > limit}
    assert 0 < len(large) < 13 and batch.track_count == 13 - len(large)
    assert sorted((r.name, r.reason) for r in batch.rejected) == sorted(
        (
            f"{LEAF}/{p.name}",
            f"{p.stat().st_size:,} bytes: larger than any song file (at most 250,000); not read",
        )
        for p in large
    )


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


def test_msd_dagster_load_refuses_an_unreadable_folder_and_keeps_the_database(
    root: Path, tmp_path: Path
) -> None:
    """The reported data loss, end to end: load, make a leaf folder unreadable, load again
    through ``msd-dagster load`` as a user file permissions apply to."""
    database = tmp_path / "msd.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), MSD_HOME=str(tmp_path / "home"))
    load = ["-m", "msd_dagster.cli", "load", "--source", str(root)]
    load += ["--database-url", f"sqlite:///{database}", "--skip-additional-files"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            unprivileged_command(load),
            cwd=REPOSITORY,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    tracks, bars = real_counts()
    (root / LEAF).chmod(0o000)
    second = run()
    output = second.stdout + second.stderr
    assert second.returncode == 1, output
    assert "[1/1] A/A: FAILED" in output
    assert (
        f"folder A/A FAILED: list: SourceListingError: cannot list {LEAF}: Permission denied"
        in (output)
    )
    assert "Traceback" not in output
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM msd_track").fetchone()[0] == tracks
        assert db.execute("SELECT COUNT(*) FROM msd_bar").fetchone()[0] == bars
