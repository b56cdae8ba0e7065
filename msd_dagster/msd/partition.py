"""Read and normalize the song files of one partition (no Dagster here)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from msd_dagster.msd.frames import ANALYSIS_KINDS, NormalizedBatch, RejectedFile, normalize_songs
from msd_dagster.msd.reader import InvalidSongFile, Song, read_song
from msd_dagster.source.layout import (
    SourceError,
    UnreadableSourceFile,
    is_song_file_key,
    not_a_song_file_reason,
)


class ReadableDataset(Protocol):
    def read_many(
        self, keys: list[str], max_workers: int = ...
    ) -> Iterable[tuple[str, bytes | UnreadableSourceFile]]: ...


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

    A file that cannot be read for a reason of its own (``UnreadableSourceFile``: permissions,
    a broken symbolic link, gone since the listing, denied by S3) or parsed
    (``InvalidSongFile``) is rejected by name with its reason; the other files load. Faults
    that may pass (network, throttling, I/O errors) raise, so that the step is retried. When
    not one file of the partition could be read, that is no longer a property of the files
    (e.g. S3 credentials that may list but not read): ``SourceError`` (permanent) is raised
    instead of a partition without tracks, which would delete the partition's rows. So it is
    when not one file is a valid song file (a folder truncated by a failed copy).
    """
    songs: list[Song] = []
    rejected: list[RejectedFile] = []
    song_keys = [k for k in keys if is_song_file_key(k)]
    rejected.extend(
        RejectedFile(k, not_a_song_file_reason(k)) for k in keys if not is_song_file_key(k)
    )
    modified_by_track: dict[str, datetime] = {}
    unreadable: list[UnreadableSourceFile] = []
    for done, (key, data) in enumerate(dataset.read_many(song_keys, max_workers=max_workers), 1):
        if isinstance(data, UnreadableSourceFile):
            unreadable.append(data)
        song = _parse(key, data)
        if isinstance(song, RejectedFile):
            rejected.append(song)
        else:
            songs.append(song)
            if modified and modified.get(key) is not None:
                modified_by_track[song.track_id] = modified[key]
        if progress:
            progress(done, len(song_keys))
    if song_keys and len(unreadable) == len(song_keys):
        raise none_readable_error(song_keys, unreadable)
    if keys and not songs:
        raise none_valid_error(keys, rejected)
    batch = normalize_songs(songs, rejected, modified_by_track)
    return batch, source_row_counts(songs)


def _parse(key: str, data: bytes | UnreadableSourceFile) -> Song | RejectedFile:
    if isinstance(data, UnreadableSourceFile):
        return RejectedFile(key, data.reason)
    try:
        return read_song(data, name=key)
    except InvalidSongFile as exc:
        return RejectedFile(key, exc.reason)


def _nothing_loaded(keys: Sequence[str], what: str, example: str, then: str) -> SourceError:
    """A permanent error naming the partition's folder: ``none of its N <what>, e.g. <example>.
    Nothing was loaded; <then>``."""
    folder = "/".join(keys[0].split("/")[:3])
    return SourceError(
        folder,
        f"none of its {len(keys)} {what}, e.g. {example}. Nothing was loaded; {then}",
        permanent=True,
    )


def none_readable_error(
    keys: Sequence[str], problems: Sequence[UnreadableSourceFile]
) -> SourceError:
    """The error for a partition none of whose song files could be read: names the folder and
    the first file's reason."""
    first = problems[0]
    return _nothing_loaded(
        keys,
        "song files could be read",
        f"{first.location}: {first.reason}",
        "fix access to the files and load again",
    )


def none_valid_error(keys: Sequence[str], rejected: Sequence[RejectedFile]) -> SourceError:
    """The error for a partition with files but not one valid song file among them."""
    first = min(rejected, key=lambda r: r.name)
    return _nothing_loaded(
        keys,
        "files is a valid song file",
        f"{first.name}: {first.reason}",
        "the rows loaded before are kept",
    )
