"""Normalize parsed songs into one DataFrame per ``msd_*`` table.

Columns are exactly the loader columns of :mod:`msd_dagster.warehouse.schema` (every column but
the identity surrogate keys). Frames are built from a batch of songs (one partition), so memory
follows the batch, never the dataset.

Artist-level facts (name, location, terms, tags, similar artists) are repeated in every song
file of an artist. When the files of one batch disagree, the file with the smallest track id
wins; the loader applies the same rule across partitions through ``msd_artist.source_track_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd

from msd_dagster.msd.reader import InvalidSongFile, Song, read_song

ANALYSIS_KINDS: dict[str, str] = {
    "msd_bar": "bars",
    "msd_beat": "beats",
    "msd_section": "sections",
    "msd_tatum": "tatums",
    "msd_segment": "segments",
}
SINGULAR: dict[str, str] = {
    "msd_bar": "bar",
    "msd_beat": "beat",
    "msd_section": "section",
    "msd_tatum": "tatum",
    "msd_segment": "segment",
}
TABLE_NAMES: tuple[str, ...] = (
    "msd_r_term",
    "msd_r_mbtag",
    "msd_artist",
    "msd_artist_term",
    "msd_artist_mbtag",
    "msd_artist_similarity",
    "msd_track",
    *ANALYSIS_KINDS,
)

ARTIST_COLUMNS: dict[str, str] = {
    # msd_artist column -> metadata/songs field
    "artist_mbid": "artist_mbid",
    "artist_name": "artist_name",
    "artist_lat": "artist_latitude",
    "artist_long": "artist_longitude",
    "artist_location": "artist_location",
    "artist_familiarity": "artist_familiarity",
    "artist_hotttnesss": "artist_hotttnesss",
    "artist_7digitalid": "artist_7digitalid",
    "artist_playmeid": "artist_playmeid",
}
# The artists' lists: table column -> array path, the listed value first (its key with
# artist_id; the arrays of one artist are parallel).
ARTIST_TERM_ARRAYS: dict[str, str] = {
    "term_name": "metadata/artist_terms",
    "term_freq": "metadata/artist_terms_freq",
    "term_weight": "metadata/artist_terms_weight",
}
ARTIST_MBTAG_ARRAYS: dict[str, str] = {
    "mbtag_name": "musicbrainz/artist_mbtags",
    "mbtag_count": "musicbrainz/artist_mbtags_count",
}
TRACK_ANALYSIS_COLUMNS: tuple[str, ...] = (
    "analysis_sample_rate",
    "audio_md5",
    "danceability",
    "duration",
    "end_of_fade_in",
    "energy",
    "key",
    "key_confidence",
    "loudness",
    "mode",
    "mode_confidence",
    "start_of_fade_out",
    "tempo",
    "time_signature",
    "time_signature_confidence",
)
TRACK_METADATA_COLUMNS: dict[str, str] = {
    # msd_track column -> metadata/songs field
    "artist_id": "artist_id",
    "release": "release",
    "song_hotness": "song_hotttnesss",
    "title": "title",
    "track_7digitalid": "track_7digitalid",
    "song_id": "song_id",
    "release_7digitalid": "release_7digitalid",
    "analyzer_version": "analyzer_version",
    "genre": "genre",
}
INT_COLUMNS: frozenset[str] = frozenset(
    {
        "analysis_sample_rate",
        "key",
        "mode",
        "time_signature",
        "track_7digitalid",
        "year",
        "release_7digitalid",
        "artist_7digitalid",
        "artist_playmeid",
        "mbtag_count",
        "similarity_rank",
    }
)
FLOAT_COLUMNS: frozenset[str] = frozenset(
    {
        "danceability",
        "duration",
        "end_of_fade_in",
        "energy",
        "key_confidence",
        "loudness",
        "mode_confidence",
        "start_of_fade_out",
        "tempo",
        "time_signature_confidence",
        "song_hotness",
        "artist_lat",
        "artist_long",
        "artist_familiarity",
        "artist_hotttnesss",
        "term_freq",
        "term_weight",
    }
)


@dataclass(frozen=True)
class RejectedFile:
    """A source file that was not loaded, and why."""

    name: str
    reason: str


@dataclass
class NormalizedBatch:
    """The frames of one batch of song files, plus the files that were rejected."""

    frames: dict[str, pd.DataFrame]
    rejected: list[RejectedFile] = field(default_factory=list)

    @property
    def track_count(self) -> int:
        return len(self.frames["msd_track"])


def typed_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Nullable integers, float64 with NaN for NULL, pandas strings for text."""
    for column in df.columns:
        if column in INT_COLUMNS:
            df[column] = pd.array(df[column], dtype="Int32")
        elif column in FLOAT_COLUMNS:
            df[column] = pd.to_numeric(df[column]).astype("float64")
        elif column != "upload_timestamp":
            df[column] = df[column].astype("string")
    return df


def songs_frame(songs: Sequence[Song], modified: dict[str, datetime] | None = None) -> pd.DataFrame:
    """msd_track: one row per song."""
    modified = modified or {}
    records = []
    for song in songs:
        row: dict[str, object] = {"track_id": song.track_id}
        row.update({c: song.analysis[c] for c in TRACK_ANALYSIS_COLUMNS})
        row.update({c: song.metadata[f] for c, f in TRACK_METADATA_COLUMNS.items()})
        row["year"] = song.musicbrainz["year"]
        row["upload_timestamp"] = modified.get(song.track_id)
        records.append(row)
    columns = [
        "track_id",
        *TRACK_ANALYSIS_COLUMNS,
        *TRACK_METADATA_COLUMNS,
        "year",
        "upload_timestamp",
    ]
    df = pd.DataFrame.from_records(records, columns=columns)
    df["upload_timestamp"] = pd.to_datetime(df["upload_timestamp"]).astype("datetime64[us]")
    df = typed_columns(df)
    return df.sort_values("track_id", ignore_index=True)


def choose_representatives(
    chosen: dict[str, Song], songs: Iterable[Song], keep: Callable[[Song], Song] = lambda s: s
) -> None:
    """Keep in ``chosen``, per artist, its song with the smallest track id (deterministic), as
    ``keep(song)`` (which must keep its ids)."""
    for song in songs:
        current = chosen.get(song.artist_id)
        if current is None or song.track_id < current.track_id:
            chosen[song.artist_id] = keep(song)


def _artist_representatives(songs: Sequence[Song]) -> list[Song]:
    """One song per artist: the one with the smallest track id."""
    chosen: dict[str, Song] = {}
    choose_representatives(chosen, songs)
    return [chosen[a] for a in sorted(chosen)]


def artists_frame(representatives: Sequence[Song]) -> pd.DataFrame:
    """msd_artist: one row per artist of the batch, plus stub rows for similar artists.

    Stubs (only ``artist_id``) make ``msd_artist_similarity``'s foreign keys resolve for
    artists without a song file in the loaded set; they never overwrite a real row.
    """
    records = []
    known = set()
    for song in representatives:
        row: dict[str, object] = {"artist_id": song.artist_id}
        row.update({c: song.metadata[f] for c, f in ARTIST_COLUMNS.items()})
        row["source_track_id"] = song.track_id
        records.append(row)
        known.add(song.artist_id)
    stubs = sorted(
        {a for s in representatives for a in s.arrays["metadata/similar_artists"]} - known
    )
    records.extend({"artist_id": a} for a in stubs)
    columns = ["artist_id", *ARTIST_COLUMNS, "source_track_id"]
    return typed_columns(pd.DataFrame.from_records(records, columns=columns))


def _artist_list_frame(representatives: Sequence[Song], arrays: dict[str, str]) -> pd.DataFrame:
    value_column = next(iter(arrays))
    # Concatenated once per column (a DataFrame per artist would cost ~1 ms each).
    listed = [s for s in representatives if len(s.arrays[arrays[value_column]])]
    columns = ["artist_id", *arrays]
    if listed:
        lengths = [len(s.arrays[arrays[value_column]]) for s in listed]
        data: dict[str, object] = {
            "artist_id": np.repeat(np.array([s.artist_id for s in listed], dtype=object), lengths)
        }
        data.update(
            {
                column: np.concatenate([s.arrays[path] for s in listed])
                for column, path in arrays.items()
            }
        )
        df = pd.DataFrame(data, columns=columns)
    else:
        df = pd.DataFrame(columns=columns)
    # A file may list the same term twice; the first occurrence is kept.
    df = df.drop_duplicates(subset=["artist_id", value_column], ignore_index=True)
    return typed_columns(df)


def artist_terms_frame(representatives: Sequence[Song]) -> pd.DataFrame:
    """msd_artist_term: the Echo Nest terms of each artist, with frequency and weight."""
    return _artist_list_frame(representatives, ARTIST_TERM_ARRAYS)


def artist_mbtags_frame(representatives: Sequence[Song]) -> pd.DataFrame:
    """msd_artist_mbtag: the MusicBrainz tags of each artist, with their counts."""
    return _artist_list_frame(representatives, ARTIST_MBTAG_ARRAYS)


def artist_similarity_frame(representatives: Sequence[Song]) -> pd.DataFrame:
    """msd_artist_similarity: artist -> similar artist, with the 1-based rank in the file."""
    listed = [s for s in representatives if len(s.arrays["metadata/similar_artists"])]
    columns = ["artist_id_1", "artist_id_2", "similarity_rank"]
    if listed:
        lengths = np.array([len(s.arrays["metadata/similar_artists"]) for s in listed])
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        df = pd.DataFrame(
            {
                "artist_id_1": np.repeat(
                    np.array([s.artist_id for s in listed], dtype=object), lengths
                ),
                "artist_id_2": np.concatenate(
                    [s.arrays["metadata/similar_artists"] for s in listed]
                ),
                "similarity_rank": (np.arange(int(lengths.sum())) - starts + 1).astype(np.int32),
            }
        )
    else:
        df = pd.DataFrame(columns=columns)
    df = df[columns].drop_duplicates(subset=["artist_id_1", "artist_id_2"], ignore_index=True)
    return typed_columns(df)


def dictionary_frame(values: Iterable[str], column: str) -> pd.DataFrame:
    """msd_r_term / msd_r_mbtag: the distinct names, sorted."""
    return pd.DataFrame({column: pd.array(sorted(set(values)), dtype="string")})


def analysis_frame(songs: Sequence[Song], table: str) -> pd.DataFrame:
    """msd_bar ... msd_segment: one row per event, 1-based position per track."""
    kind = ANALYSIS_KINDS[table]
    one = SINGULAR[table]
    counts = np.array([len(s.arrays[f"analysis/{kind}_start"]) for s in songs], dtype=np.int64)
    total = int(counts.sum())
    track_ids = np.repeat(np.array([s.track_id for s in songs], dtype=object), counts)
    positions = (
        np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    ).astype(np.int32)

    # Every float column is written once into one (columns x rows) block, which becomes the
    # frame's float block without another copy (a dict of arrays would be consolidated, i.e.
    # copied, by the DataFrame constructor: twice the segments' ~60 MB per partition).
    sources: list[tuple[str, str, int | None]] = [
        (f"{one}_confidence", "confidence", None),
        (f"{one}_start", "start", None),
    ]
    if table == "msd_segment":
        sources += [
            ("segment_loudness_max", "loudness_max", None),
            ("segment_loudness_max_time", "loudness_max_time", None),
            ("segment_loudness_start", "loudness_start", None),
        ]
        sources += [(f"p{i + 1}", "pitches", i) for i in range(12)]
        sources += [(f"t{i + 1}", "timbre", i) for i in range(12)]
    block = np.empty((len(sources), total), dtype=np.float64)
    if songs:
        row = 0
        while row < len(sources):
            _, name, column = sources[row]
            arrays = [s.arrays[f"analysis/{kind}_{name}"] for s in songs]
            if column is None:
                np.concatenate(arrays, out=block[row], casting="same_kind")
                row += 1
            else:  # the 12 columns of pitches / timbre
                matrix = np.concatenate(arrays).reshape(-1, 12)
                block[row : row + 12] = matrix.T
                row += 12
    df = pd.DataFrame(block.T, columns=[name for name, _, _ in sources], copy=False)
    df.insert(0, "track_id", pd.array(track_ids, dtype="string"))
    df.insert(1, f"track_{one}_id", positions)
    return df


def shared_frames(representatives: Sequence[Song]) -> dict[str, pd.DataFrame]:
    """The six artist-level frames, from one song per artist (its smallest track id)."""
    terms = artist_terms_frame(representatives)
    mbtags = artist_mbtags_frame(representatives)
    return {
        "msd_r_term": dictionary_frame(terms["term_name"], "term_name"),
        "msd_r_mbtag": dictionary_frame(mbtags["mbtag_name"], "mbtag_name"),
        "msd_artist": artists_frame(representatives),
        "msd_artist_term": terms,
        "msd_artist_mbtag": mbtags,
        "msd_artist_similarity": artist_similarity_frame(representatives),
    }


def track_frames(
    songs: Sequence[Song], modified: dict[str, datetime] | None = None
) -> dict[str, pd.DataFrame]:
    """``msd_track`` and the five analysis frames of songs sorted by track id."""
    frames = {"msd_track": songs_frame(songs, modified)}
    for table in ANALYSIS_KINDS:
        frames[table] = analysis_frame(songs, table)
    return frames


def artist_part(song: Song) -> Song:
    """The song without its analysis arrays: what the artist-level frames read of it."""
    return replace(
        song, arrays={k: v for k, v in song.arrays.items() if not k.startswith("analysis/")}
    )


def normalize_songs(
    songs: Sequence[Song],
    rejected: Sequence[RejectedFile] = (),
    modified: dict[str, datetime] | None = None,
) -> NormalizedBatch:
    """Every msd_* frame for a batch of parsed songs (sorted by track id)."""
    songs = sorted(songs, key=lambda s: s.track_id)
    frames = {**shared_frames(_artist_representatives(songs)), **track_frames(songs, modified)}
    return NormalizedBatch(frames=frames, rejected=list(rejected))


def read_songs(
    sources: Iterable[tuple[str, object]],
) -> tuple[list[Song], list[RejectedFile]]:
    """Parse ``(name, path-or-bytes)`` pairs; bad files are collected, never raised."""
    songs: list[Song] = []
    rejected: list[RejectedFile] = []
    for name, source in sources:
        try:
            songs.append(read_song(source, name=name))  # type: ignore[arg-type]
        except InvalidSongFile as exc:
            rejected.append(RejectedFile(name=name, reason=exc.reason))
    return songs, rejected
