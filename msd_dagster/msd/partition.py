"""Read and normalize the song files of one partition (no Dagster here)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from msd_dagster.msd.frames import ANALYSIS_KINDS, NormalizedBatch, RejectedFile, normalize_songs
from msd_dagster.msd.reader import InvalidSongFile, Song, read_song
from msd_dagster.source.layout import is_song_file_key


class ReadableDataset(Protocol):
    def read_many(self, keys: list[str], max_workers: int = ...) -> Iterable[tuple[str, bytes]]: ...


def source_row_counts(songs: Sequence[Song]) -> dict[str, int]:
    """Rows each track table must get, counted from the parsed arrays (not from the frames)."""
    counts = {"msd_track": len(songs)}
    for table, kind in ANALYSIS_KINDS.items():
        counts[table] = sum(s.arrays[f"analysis/{kind}_start"].shape[0] for s in songs)
    counts["msd_artist"] = len({s.artist_id for s in songs})
    return counts


def normalize_partition(
    dataset: ReadableDataset,
    keys: Sequence[str],
    modified: dict[str, datetime] | None = None,
    *,
    max_workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[NormalizedBatch, dict[str, int]]:
    """Parse every file of a partition and build its frames; bad files are rejected, not raised.

    ``modified`` maps keys to their source modification time (becomes ``upload_timestamp``).
    Returns the frames and the row counts implied by the source files.
    """
    songs: list[Song] = []
    rejected: list[RejectedFile] = []
    song_keys = [k for k in keys if is_song_file_key(k)]
    rejected.extend(
        RejectedFile(k, "not at data/<c3>/<c4>/<c5>/<TRACK_ID>.h5 for its track id")
        for k in keys
        if not is_song_file_key(k)
    )
    modified_by_track: dict[str, datetime] = {}
    for done, (key, data) in enumerate(dataset.read_many(song_keys, max_workers=max_workers), 1):
        try:
            song = read_song(data, name=key)
        except InvalidSongFile as exc:
            rejected.append(RejectedFile(key, exc.reason))
        else:
            songs.append(song)
            if modified and modified.get(key) is not None:
                modified_by_track[song.track_id] = modified[key]
        if progress:
            progress(done, len(song_keys))
    batch = normalize_songs(songs, rejected, modified_by_track)
    return batch, source_row_counts(songs)
