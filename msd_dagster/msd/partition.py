"""Read and normalize the song files of one partition (no Dagster here)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import pandas as pd

from msd_dagster.msd.frames import (
    ANALYSIS_KINDS,
    NormalizedBatch,
    RejectedFile,
    artist_part,
    choose_representatives,
    shared_frames,
    track_frames,
)
from msd_dagster.msd.reader import InvalidSongFile, Song, read_song
from msd_dagster.source.layout import (
    SourceError,
    UnreadableSourceFile,
    is_song_file_key,
    not_a_song_file_reason,
)


def split_song_keys(keys: Iterable[str]) -> tuple[list[str], list[RejectedFile]]:
    """The song file keys, in order, and every other key rejected by name (never read)."""
    songs: list[str] = []
    others: list[RejectedFile] = []
    for key in keys:
        if is_song_file_key(key):
            songs.append(key)
        else:
            others.append(RejectedFile(key, not_a_song_file_reason(key)))
    return songs, others


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


# Songs per chunk of a streamed folder: ~250 kB of parsed arrays and frames per song, so a
# chunk holds ~40 MB whatever the folder's size (the subset's folders: ~286 songs, the full
# set's ~1,480).
DEFAULT_CHUNK_SONGS = 150


class FrameSink(Protocol):
    """Where a :class:`FolderStream` also sends its frames (e.g. the frame store)."""

    def start(self) -> None:
        """A new pass over the folder begins: forget what an earlier pass sent."""

    def append(self, frames: Mapping[str, pd.DataFrame]) -> None:
        """One chunk's track frames, or, once, the shared frames of the whole folder."""


class FolderStream:
    """One folder's song files, read, parsed and normalized ``chunk_songs`` at a time: the
    frames of :func:`normalize_partition`, in chunks of tracks, for
    :func:`~msd_dagster.warehouse.partition_load.load_partition_stream`.

    Each chunk's track frames (``msd_track`` and the analysis tables) are built from its songs
    and handed on; of a song only its artist-level fields are kept, for the artist that it
    represents (its smallest track id, as in :func:`normalize_songs`). So memory follows the
    chunk, plus one small record per artist, and the frames are exactly those of the whole
    folder at once. Bad files are rejected as there; when no file of the folder is readable or
    valid, the same errors are raised, after the last chunk (the load's transaction then rolls
    back). Every :meth:`track_chunks` call is a new pass (a retried transaction).
    """

    def __init__(
        self,
        dataset: ReadableDataset,
        keys: Sequence[str],
        modified: dict[str, datetime] | None = None,
        *,
        chunk_songs: int = DEFAULT_CHUNK_SONGS,
        max_workers: int = 8,
        sink: FrameSink | None = None,
    ) -> None:
        if chunk_songs < 1:
            raise ValueError(f"chunk_songs must be at least 1, not {chunk_songs}")
        self.dataset = dataset
        self.keys = list(keys)
        self.modified = modified or {}
        self.chunk_songs = chunk_songs
        self.max_workers = max_workers
        self.sink = sink
        self._start()

    def _start(self) -> None:
        self.rejected: list[RejectedFile] = []
        self.source_rows: dict[str, int] = dict.fromkeys(("msd_track", *ANALYSIS_KINDS), 0)
        self.finished = False  # every chunk was read
        self.failed = False  # the last pass failed in the stream itself (reading, parsing)
        self.seconds = 0.0  # spent reading, parsing and normalizing
        self._representatives: dict[str, Song] = {}
        self._tracks: list[pd.DataFrame] = []
        if self.sink is not None:
            self.sink.start()

    @property
    def tracks(self) -> pd.DataFrame:
        """``msd_track`` of the songs read so far (small: one row per song)."""
        return pd.concat(self._tracks, ignore_index=True)

    def track_chunks(self) -> Iterator[dict[str, pd.DataFrame]]:
        self._start()
        started = time.perf_counter()
        try:
            for chunk in self._chunks():
                self.seconds += time.perf_counter() - started
                yield chunk
                started = time.perf_counter()
        except GeneratorExit:
            raise
        except BaseException:
            self.failed = True
            raise
        self.seconds += time.perf_counter() - started
        self.finished = True

    def shared_frames(self) -> dict[str, pd.DataFrame]:
        if not self.finished:
            raise RuntimeError("shared_frames() before every chunk was read")
        started = time.perf_counter()
        representatives = [self._representatives[a] for a in sorted(self._representatives)]
        frames = shared_frames(representatives)
        if self.sink is not None:
            self.sink.append(frames)
        self.seconds += time.perf_counter() - started
        return frames

    def _chunks(self) -> Iterator[dict[str, pd.DataFrame]]:
        song_keys, not_songs = split_song_keys(self.keys)
        song_keys.sort()
        self.rejected.extend(not_songs)
        unreadable: list[UnreadableSourceFile] = []
        batch: list[Song] = []
        modified: dict[str, datetime] = {}
        chunks = 0
        for key, data in self.dataset.read_many(song_keys, max_workers=self.max_workers):
            if isinstance(data, UnreadableSourceFile):
                unreadable.append(data)
            song = _parse(key, data)
            del data
            if isinstance(song, RejectedFile):
                self.rejected.append(song)
                continue
            batch.append(song)
            if self.modified.get(key) is not None:
                modified[song.track_id] = self.modified[key]
            if len(batch) == self.chunk_songs:
                yield self._chunk(batch, modified)
                chunks += 1
                batch, modified = [], {}
        if song_keys and len(unreadable) == len(song_keys):
            raise none_readable_error(song_keys, unreadable)
        if self.keys and not chunks and not batch:
            raise none_valid_error(self.keys, self.rejected)
        if batch or not chunks:  # an empty folder still has its (empty) frames
            yield self._chunk(batch, modified)

    def _chunk(self, songs: list[Song], modified: dict[str, datetime]) -> dict[str, pd.DataFrame]:
        songs.sort(key=lambda s: s.track_id)
        counts = source_row_counts(songs)
        for table in ("msd_track", *ANALYSIS_KINDS):
            self.source_rows[table] += counts[table]
        choose_representatives(self._representatives, songs, keep=artist_part)
        self.source_rows["msd_artist"] = len(self._representatives)
        frames = track_frames(songs, modified)
        self._tracks.append(frames["msd_track"])
        if self.sink is not None:
            self.sink.append(frames)
        return frames


def normalize_partition(
    dataset: ReadableDataset,
    keys: Sequence[str],
    modified: dict[str, datetime] | None = None,
    *,
    max_workers: int = 8,
) -> tuple[NormalizedBatch, dict[str, int]]:
    """Parse every file of a partition and build its frames; bad files are rejected, not raised.

    ``modified`` maps keys to their source modification time (becomes ``upload_timestamp``).
    Returns the frames and the row counts implied by the source files: a
    :class:`FolderStream` of one chunk, with its rejections and errors.

    A file that cannot be read for a reason of its own (``UnreadableSourceFile``: permissions,
    a broken symbolic link, gone since the listing, denied by S3) or parsed
    (``InvalidSongFile``) is rejected by name with its reason; the other files load. Faults
    that may pass (network, throttling, I/O errors) raise, so that the step is retried. When
    not one file of the partition could be read, that is no longer a property of the files
    (e.g. S3 credentials that may list but not read): ``SourceError`` (permanent) is raised
    instead of a partition without tracks, which would delete the partition's rows. So it is
    when not one file is a valid song file (a folder truncated by a failed copy).
    """
    stream = FolderStream(
        dataset, keys, modified, chunk_songs=max(1, len(keys)), max_workers=max_workers
    )
    (frames,) = stream.track_chunks()
    frames.update(stream.shared_frames())
    return NormalizedBatch(frames, stream.rejected), stream.source_rows


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
