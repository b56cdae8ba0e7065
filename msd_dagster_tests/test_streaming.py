"""A folder loaded in chunks of songs (``FolderStream`` + ``load_partition_stream``) on real
databases: the same rows and the same check numbers as one chunk, checked against the real song
files read independently (h5py); a failure in a late chunk rolls the whole folder back; reruns
are idempotent. Needs the ``engine`` fixture of ``msd_dagster_tests.db_fixtures``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import h5py
import pandas as pd
import pytest
import sqlalchemy as sa

from msd_dagster.frame_store import FrameStore, GroupWriter
from msd_dagster.msd.frames import ANALYSIS_KINDS, normalize_songs, read_songs
from msd_dagster.msd.partition import FolderStream
from msd_dagster.source.layout import SourceError
from msd_dagster.source.local import LocalDataset
from msd_dagster.warehouse.checked_load import load_and_verify
from msd_dagster.warehouse.queries import count_rows
from msd_dagster.warehouse.schema import TABLES_BY_NAME, TRACK_TABLE_NAMES
from msd_dagster_tests.shared_data import REAL_SUBSET, real_song_paths
from msd_dagster_tests.test_warehouse_loading import assert_same, expected_state, snapshot

pytest_plugins = ["msd_dagster_tests.db_fixtures"]

FOLDER = "A/A"
CHILDREN_FIRST = (
    "msd_artist_term",
    "msd_artist_mbtag",
    "msd_artist_similarity",
    "msd_artist",
    "msd_r_term",
    "msd_r_mbtag",
)


def real_keys() -> list[str]:
    return [f"data/A/A/A/{p.name}" for p in real_song_paths()]


def independent_counts() -> tuple[set[str], dict[str, int]]:
    """Track ids and rows per track table, read from the files with h5py alone."""
    tracks: set[str] = set()
    rows = dict.fromkeys(TRACK_TABLE_NAMES, 0)
    for path in real_song_paths():
        with h5py.File(path, "r") as f:
            tracks.add(f["analysis/songs"]["track_id"][0].decode())
            rows["msd_track"] += 1
            for table, kind in ANALYSIS_KINDS.items():
                rows[table] += f[f"analysis/{kind}_start"].shape[0]
    return tracks, rows


def whole_folder_frames() -> dict[str, pd.DataFrame]:
    """The folder's frames from the files' paths, in one batch (not through the stream)."""
    songs, rejected = read_songs((p.name, p) for p in real_song_paths())
    assert not rejected
    return normalize_songs(songs).frames


def database_tracks(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.exec_driver_sql("SELECT track_id FROM msd_track").scalars())


def load_in_chunks(engine: sa.Engine, chunk_songs: int, dataset=None, **stream_options):
    stream = FolderStream(
        dataset or LocalDataset(REAL_SUBSET), real_keys(), chunk_songs=chunk_songs, **stream_options
    )
    return load_and_verify(engine, FOLDER, stream, lambda: stream.source_rows), stream


@pytest.mark.parametrize("chunk_songs", [3, 7])
def test_chunks_give_the_rows_and_numbers_of_one_chunk(engine: sa.Engine, chunk_songs) -> None:
    tracks, file_rows = independent_counts()
    assert len(tracks) == 13  # the real folder A/A/A
    whole, _ = load_in_chunks(engine, chunk_songs=10_000)
    one_chunk = snapshot(engine)
    chunked, stream = load_in_chunks(engine, chunk_songs=chunk_songs)
    assert stream.finished and not stream.rejected
    assert_same(snapshot(engine), one_chunk)
    assert_same(snapshot(engine), expected_state(whole_folder_frames(), partitions=[FOLDER]))
    # The numbers the checks report are those of one chunk, and those of the files.
    assert chunked.verdicts == whole.verdicts
    assert all(v.passed for v in chunked.verdicts)
    assert {t: chunked.written[t] for t in TRACK_TABLE_NAMES} == file_rows
    assert {t: whole.written[t] for t in TRACK_TABLE_NAMES} == file_rows
    verdicts = {v.table: v for v in chunked.verdicts}
    for table, rows in file_rows.items():
        assert (verdicts[table].database_rows, verdicts[table].source_rows) == (rows, rows)
    assert database_tracks(engine) == tracks
    assert file_rows["msd_segment"] > 10_000  # a real folder: thousands of rows per chunk


def test_stored_frames_are_those_of_one_batch(tmp_path) -> None:
    """The frames the stream stores chunk by chunk read back as the whole folder's frames."""
    store = FrameStore(tmp_path)
    groups = {("songs",): TRACK_TABLE_NAMES, ("artists",): CHILDREN_FIRST}
    writer = GroupWriter(store, FOLDER, groups)
    stream = FolderStream(LocalDataset(REAL_SUBSET), real_keys(), chunk_songs=4, sink=writer)
    for _chunk in stream.track_chunks():
        pass
    stream.shared_frames()
    writer.commit()
    stored = {**store.read(["songs"], FOLDER), **store.read(["artists"], FOLDER)}
    for name, frame in whole_folder_frames().items():
        pd.testing.assert_frame_equal(stored[name], frame.reset_index(drop=True), obj=name)


class FailingAfter(LocalDataset):
    """The real folder, with a fault that may pass after ``files`` files (a lost connection)."""

    def __init__(self, files: int) -> None:
        super().__init__(REAL_SUBSET)
        self.files = files

    def read_many(self, keys, max_workers: int = 1) -> Iterator:
        for n, item in enumerate(super().read_many(keys, max_workers), 1):
            if n > self.files:
                raise SourceError(item[0], "connection reset by peer", permanent=False)
            yield item


class DuplicateInChunk:
    """A pass over the folder whose ``bad``-th chunk repeats one bar row (a database error)."""

    def __init__(self, stream: FolderStream, bad: int) -> None:
        self.stream, self.bad = stream, bad

    def track_chunks(self) -> Iterator[Mapping[str, pd.DataFrame]]:
        for n, chunk in enumerate(self.stream.track_chunks(), 1):
            if n == self.bad:
                bars = chunk["msd_bar"]
                chunk = {**chunk, "msd_bar": pd.concat([bars, bars.tail(1)], ignore_index=True)}
            yield chunk

    def shared_frames(self) -> Mapping[str, pd.DataFrame]:
        return self.stream.shared_frames()


def test_a_failure_in_a_late_chunk_rolls_the_whole_folder_back(engine: sa.Engine) -> None:
    load_in_chunks(engine, chunk_songs=3)
    before = snapshot(engine)
    # Chunks of 3: the 11th file is in the 4th chunk of 5; three chunks were written.
    with pytest.raises(SourceError, match="connection reset"):
        load_in_chunks(engine, chunk_songs=3, dataset=FailingAfter(10))
    assert_same(snapshot(engine), before)
    stream = FolderStream(LocalDataset(REAL_SUBSET), real_keys(), chunk_songs=3)
    with pytest.raises(sa.exc.IntegrityError):
        load_and_verify(engine, FOLDER, DuplicateInChunk(stream, bad=4), lambda: {})
    assert_same(snapshot(engine), before)
    # An empty database keeps nothing of a failed first load either.
    with engine.begin() as conn:
        for name in [*reversed(TRACK_TABLE_NAMES), *CHILDREN_FIRST]:
            conn.exec_driver_sql(f"DELETE FROM {name}")
    with pytest.raises(SourceError):
        load_in_chunks(engine, chunk_songs=3, dataset=FailingAfter(12))
    assert all(count_rows(engine, name) == 0 for name in TABLES_BY_NAME)


def test_rerun_in_chunks_is_idempotent(engine: sa.Engine) -> None:
    first, _ = load_in_chunks(engine, chunk_songs=7)
    state = snapshot(engine)
    again, _ = load_in_chunks(engine, chunk_songs=7)
    assert_same(snapshot(engine), state)
    assert again.verdicts == first.verdicts and all(v.passed for v in again.verdicts)
    assert {t: count_rows(engine, t) for t in TRACK_TABLE_NAMES} == {
        t: len(state[t]) for t in TRACK_TABLE_NAMES
    }
