"""The layout of an MSD song file: groups, compound tables (field order as in the files) and arrays.

Shared by the reader (what must be present) and the generator (what to write).
"""

from __future__ import annotations

import numpy as np

METADATA_SONGS_FIELDS: tuple[tuple[str, str], ...] = (
    ("analyzer_version", "S32"),
    ("artist_7digitalid", "<i4"),
    ("artist_familiarity", "<f8"),
    ("artist_hotttnesss", "<f8"),
    ("artist_id", "S32"),
    ("artist_latitude", "<f8"),
    ("artist_location", "S1024"),
    ("artist_longitude", "<f8"),
    ("artist_mbid", "S40"),
    ("artist_name", "S1024"),
    ("artist_playmeid", "<i4"),
    ("genre", "S1024"),
    ("idx_artist_terms", "<i4"),
    ("idx_similar_artists", "<i4"),
    ("release", "S1024"),
    ("release_7digitalid", "<i4"),
    ("song_hotttnesss", "<f8"),
    ("song_id", "S32"),
    ("title", "S1024"),
    ("track_7digitalid", "<i4"),
)

ANALYSIS_SONGS_FIELDS: tuple[tuple[str, str], ...] = (
    ("analysis_sample_rate", "<i4"),
    ("audio_md5", "S32"),
    ("danceability", "<f8"),
    ("duration", "<f8"),
    ("end_of_fade_in", "<f8"),
    ("energy", "<f8"),
    ("idx_bars_confidence", "<i4"),
    ("idx_bars_start", "<i4"),
    ("idx_beats_confidence", "<i4"),
    ("idx_beats_start", "<i4"),
    ("idx_sections_confidence", "<i4"),
    ("idx_sections_start", "<i4"),
    ("idx_segments_confidence", "<i4"),
    ("idx_segments_loudness_max", "<i4"),
    ("idx_segments_loudness_max_time", "<i4"),
    ("idx_segments_loudness_start", "<i4"),
    ("idx_segments_pitches", "<i4"),
    ("idx_segments_start", "<i4"),
    ("idx_segments_timbre", "<i4"),
    ("idx_tatums_confidence", "<i4"),
    ("idx_tatums_start", "<i4"),
    ("key", "<i4"),
    ("key_confidence", "<f8"),
    ("loudness", "<f8"),
    ("mode", "<i4"),
    ("mode_confidence", "<f8"),
    ("start_of_fade_out", "<f8"),
    ("tempo", "<f8"),
    ("time_signature", "<i4"),
    ("time_signature_confidence", "<f8"),
    ("track_id", "S32"),
)

MUSICBRAINZ_SONGS_FIELDS: tuple[tuple[str, str], ...] = (
    ("idx_artist_mbtags", "<i4"),
    ("year", "<i4"),
)

COMPOUND_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "metadata/songs": METADATA_SONGS_FIELDS,
    "analysis/songs": ANALYSIS_SONGS_FIELDS,
    "musicbrainz/songs": MUSICBRAINZ_SONGS_FIELDS,
}

# Every array dataset with its dtype and trailing shape.
ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "metadata/artist_terms": ("S256", ()),
    "metadata/artist_terms_freq": ("<f8", ()),
    "metadata/artist_terms_weight": ("<f8", ()),
    "metadata/similar_artists": ("S20", ()),
    "analysis/bars_confidence": ("<f8", ()),
    "analysis/bars_start": ("<f8", ()),
    "analysis/beats_confidence": ("<f8", ()),
    "analysis/beats_start": ("<f8", ()),
    "analysis/sections_confidence": ("<f8", ()),
    "analysis/sections_start": ("<f8", ()),
    "analysis/segments_confidence": ("<f8", ()),
    "analysis/segments_loudness_max": ("<f8", ()),
    "analysis/segments_loudness_max_time": ("<f8", ()),
    "analysis/segments_loudness_start": ("<f8", ()),
    "analysis/segments_pitches": ("<f8", (12,)),
    "analysis/segments_start": ("<f8", ()),
    "analysis/segments_timbre": ("<f8", (12,)),
    "analysis/tatums_confidence": ("<f8", ()),
    "analysis/tatums_start": ("<f8", ()),
    "musicbrainz/artist_mbtags": ("S256", ()),
    "musicbrainz/artist_mbtags_count": ("<i4", ()),
}

# Arrays that describe the same events and must have the same length.
PARALLEL_ARRAYS: dict[str, tuple[str, ...]] = {
    "terms": tuple(p for p in ARRAYS if p.startswith("metadata/artist_terms")),
    "mbtags": tuple(p for p in ARRAYS if p.startswith("musicbrainz/artist_mbtags")),
    **{
        kind: tuple(p for p in ARRAYS if p.startswith(f"analysis/{kind}_"))
        for kind in ("bars", "beats", "sections", "tatums", "segments")
    },
}

GROUPS: tuple[str, ...] = ("metadata", "analysis", "musicbrainz")


def compound_dtype(path: str) -> np.dtype:
    """The numpy dtype of a compound table, in file field order."""
    return np.dtype(list(COMPOUND_TABLES[path]))
