"""The reader against independent h5py reads of the real song files, and against bad files."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from msd_dagster.msd.fields import ARRAYS, COMPOUND_TABLES
from msd_dagster.msd.frames import read_songs
from msd_dagster.msd.reader import InvalidSongFile, read_song, track_id_from_name
from msd_dagster_tests.shared_data import REAL_LEAF, real_song_paths


def expected_value(field: str, raw: object) -> object:
    """The documented null rules, written out again independently of msd_dagster.msd.nulls."""
    if isinstance(raw, bytes | np.bytes_):
        text = bytes(raw).decode("utf-8")
        return text or None
    value = raw.item() if hasattr(raw, "item") else raw
    if isinstance(value, float) and math.isnan(value):
        return None
    if field in ("year", "danceability", "energy") and value == 0:
        return None
    if field.endswith("7digitalid") or field == "artist_playmeid":
        return value if value > 0 else None
    return value


@pytest.mark.parametrize("path", real_song_paths(), ids=lambda p: p.name)
def test_every_field_and_array_matches_an_independent_h5py_read(path: Path) -> None:
    song = read_song(path)
    with h5py.File(path, "r") as f:
        for table, fields in COMPOUND_TABLES.items():
            row = f[table][0]
            decoded = {
                "metadata/songs": song.metadata,
                "analysis/songs": song.analysis,
                "musicbrainz/songs": song.musicbrainz,
            }[table]
            assert list(decoded) == [name for name, _ in fields]
            for name, _ in fields:
                assert decoded[name] == expected_value(name, row[name]), (table, name)
        for array_path in ARRAYS:
            raw = f[array_path][()]
            got = song.arrays[array_path]
            assert got.shape == raw.shape, array_path
            if raw.dtype.kind == "S":
                assert list(got) == [v.decode("utf-8") for v in raw], array_path
            else:
                assert got.dtype == raw.dtype, array_path
                assert np.array_equal(got, raw, equal_nan=True), array_path
    assert song.track_id == path.stem


def test_path_bytes_and_file_object_give_the_same_song() -> None:
    path = real_song_paths()[0]
    data = path.read_bytes()
    by_path = read_song(path)
    by_bytes = read_song(data, name=path.name)
    by_file = read_song(io.BytesIO(data), name=path.name)
    for other in (by_bytes, by_file):
        assert other.metadata == by_path.metadata
        assert other.analysis == by_path.analysis
        for key, values in by_path.arrays.items():
            assert np.array_equal(values, other.arrays[key]) or values.dtype == object


def test_known_edge_case_file_has_nulls_where_the_msd_says_unknown() -> None:
    real_song_paths()
    song = read_song(REAL_LEAF / "TRAAADZ128F9348C2E.h5")
    assert song.arrays["musicbrainz/artist_mbtags"].shape == (0,)
    assert song.musicbrainz["year"] is None
    assert song.metadata["artist_latitude"] is None
    assert song.metadata["artist_longitude"] is None
    assert song.analysis["danceability"] is None and song.analysis["energy"] is None
    assert song.metadata["artist_name"] == "Sonora Santanera"


def test_track_id_from_name() -> None:
    assert track_id_from_name("data/A/A/A/TRAAABD128F429CF47.h5") == "TRAAABD128F429CF47"
    assert track_id_from_name("notes.h5") is None


# --- bad input -------------------------------------------------------------------------------


def _copy_real(folder: Path, name: str | None = None) -> Path:
    """A writable copy of a real file, in its own folder so it may keep the real name."""
    source = real_song_paths()[0]
    folder.mkdir()
    target = folder / (name or source.name)
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, a phrase the reason must contain)."""
    real = real_song_paths()[0]
    files: dict[str, tuple[Path, str]] = {}

    text = tmp_path / "TRAAAAA00000000001.h5"
    text.write_text("this is not an HDF5 file\n")
    files["not_hdf5"] = (text, "not an HDF5 file")

    empty = tmp_path / "TRAAAAA00000000002.h5"
    empty.write_bytes(b"")
    files["zero_bytes"] = (empty, "empty")

    truncated = tmp_path / "TRAAAAA00000000003.h5"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    files["truncated"] = (truncated, "")

    empty_hdf5 = tmp_path / "TRAAAAA00000000004.h5"
    with h5py.File(empty_hdf5, "w"):
        pass
    files["empty_hdf5"] = (empty_hdf5, "missing group")

    no_group = _copy_real(tmp_path / "missing_group")
    with h5py.File(no_group, "a") as f:
        del f["musicbrainz"]
    files["missing_group"] = (no_group, "musicbrainz")

    no_dataset = _copy_real(tmp_path / "missing_dataset")
    with h5py.File(no_dataset, "a") as f:
        del f["analysis/segments_timbre"]
    files["missing_dataset"] = (no_dataset, "analysis/segments_timbre")

    no_field = _copy_real(tmp_path / "missing_field")
    with h5py.File(no_field, "a") as f:
        row = f["musicbrainz/songs"][()]
        del f["musicbrainz/songs"]
        f.create_dataset(
            "musicbrainz/songs",
            data=row[["idx_artist_mbtags"]].astype([("idx_artist_mbtags", "<i4")]),
        )
    files["missing_field"] = (no_field, "year")

    ragged = _copy_real(tmp_path / "misaligned")
    with h5py.File(ragged, "a") as f:
        f["analysis/bars_start"].resize((1,))
    files["misaligned_arrays"] = (ragged, "different lengths")

    wrong_name = _copy_real(tmp_path / "renamed", "TRAAAAA00000000009.h5")
    files["track_id_mismatch"] = (wrong_name, f"analysis/songs.track_id is {real.stem}")
    return files


def test_every_kind_of_bad_file_raises_invalid_song_file_with_path_and_reason(
    tmp_path: Path,
) -> None:
    for kind, (path, phrase) in _bad_files(tmp_path).items():
        with pytest.raises(InvalidSongFile) as caught:
            read_song(path)
        assert caught.value.path == str(path), kind
        assert phrase in caught.value.reason, (kind, caught.value.reason)
        assert str(path) in str(caught.value)


def test_missing_file_is_an_invalid_song_file_not_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(InvalidSongFile, match="cannot read"):
        read_song(tmp_path / "TRAAAAA00000000000.h5")


def test_batch_reader_rejects_bad_files_and_returns_the_good_ones(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    good = real_song_paths()
    sources = [(str(p), p) for p in good] + [(str(p), p) for p, _ in bad.values()]
    songs, rejected = read_songs(sources)
    assert sorted(s.track_id for s in songs) == sorted(p.stem for p in good)
    assert sorted(r.name for r in rejected) == sorted(str(p) for p, _ in bad.values())
    assert all(r.reason for r in rejected)
