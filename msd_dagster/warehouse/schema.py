"""The twelve ``msd_*`` tables, defined once for every SQL dialect.

Columns are stated once, with portable types; where a backend stores a kind of column its own
way (``ColumnKind``: ids, key text, timestamps ...), the registered backends
(:mod:`msd_dagster.warehouse.dialects`) contribute their type as a variant, and their table
options (MySQL's charset) to every table. Names and columns follow the earlier pipeline's ERD
(see docs/data-model.md); the additions keep every field of the song files that the ERD
dropped. Decisions that matter:

* Surrogate keys (``bar_id``, ``artist_term_id`` ...) are identity columns; the natural keys
  (``track_id, track_bar_id``, ``artist_id, term_name`` ...) are unique, which is what makes
  reruns idempotent.
* Floats are ``DOUBLE`` everywhere (MySQL's ``FLOAT`` is single precision and would lose data).
* Text is Unicode everywhere (NVARCHAR on SQL Server, utf8mb4 on MySQL/MariaDB) and sized to the
  HDF5 field widths, so nothing is truncated. Key text columns use a binary collation so that
  distinct tags stay distinct ('Rock' vs 'rock', accents).
* The five analysis tables reference ``msd_track.track_id`` without a database constraint
  (:data:`CHECKED_REFERENCES`). They hold 99% of the rows, and a per-row foreign-key check made
  PostgreSQL's COPY ~4x slower (104k vs 410k rows/s, ``benchmarks/bulk_insert_bench.py``).
  The reference still holds: the loader refuses frames with an analysis row whose track is not
  in the same partition load (one transaction), and the ``partition_rows_loaded`` check counts
  unresolved references in the database before every partition load commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from msd_dagster.warehouse.dialects import BACKENDS
from msd_dagster.warehouse.dialects.base import ColumnKind

# Bumped whenever a table definition changes; stored in msd_schema_version.
SCHEMA_VERSION = 2  # 2: analysis tables' track_id is a checked reference, not a FK

metadata = sa.MetaData()


def _portable(kind: ColumnKind, type_: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """``type_``, with each registered backend's own type for ``kind`` as its variant."""
    for backend in BACKENDS:
        variant = backend.column_types.get(kind)
        if variant is not None:
            type_ = type_.with_variant(variant(type_), *backend.dialect_names)
    return type_


# Keyword arguments of every table: each backend's table options (MySQL's charset).
TABLE_OPTIONS: dict[str, Any] = {k: v for b in BACKENDS for k, v in b.table_options.items()}


def _id_column(name: str) -> sa.Column:
    """Identity surrogate key: BIGINT IDENTITY / BIGSERIAL-like."""
    return sa.Column(
        name,
        _portable("surrogate_key", sa.BigInteger()),
        sa.Identity(start=1),
        primary_key=True,
    )


# Key text and ids use binary collations: comparisons, uniqueness and ORDER BY follow code
# points on every dialect, so distinct tags stay distinct ('Rock' vs 'rock', accents).


def _key_text(length: int) -> sa.types.TypeEngine:
    """Unicode text that takes part in a unique key: compared byte for byte on every dialect."""
    return _portable("key_text", sa.Unicode(length))


def _msd_id() -> sa.types.TypeEngine:
    # Track, artist and song ids are 18 ASCII characters. Binary collation: the partition range
    # (track_id >= 'TRAB' AND track_id < 'TRAC') and the "smallest source_track_id wins" rule
    # compare code points everywhere, never a locale's ordering.
    return _portable("msd_id", sa.CHAR(18))


def _timestamp() -> sa.types.TypeEngine:
    # Microseconds survive on every dialect.
    return _portable("timestamp", sa.DateTime())


def _text(length: int = 1024) -> sa.types.TypeEngine:
    return _portable("text", sa.Unicode(length))


def _double() -> sa.types.TypeEngine:
    return _portable("double", sa.Double())


msd_schema_version = sa.Table(
    "msd_schema_version",
    metadata,
    sa.Column("schema_version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    **TABLE_OPTIONS,
)

msd_artist = sa.Table(
    "msd_artist",
    metadata,
    sa.Column("artist_id", _msd_id(), primary_key=True),
    sa.Column("artist_mbid", sa.String(40)),
    sa.Column("artist_name", _text()),
    sa.Column("artist_lat", _double()),
    sa.Column("artist_long", _double()),
    sa.Column("artist_location", _text()),
    sa.Column("artist_familiarity", _double()),
    sa.Column("artist_hotttnesss", _double()),
    sa.Column("artist_7digitalid", sa.Integer),
    sa.Column("artist_playmeid", sa.Integer),
    # The song file whose artist fields won (smallest track id); NULL when the artist is only
    # known from a similar-artists list or from AdditionalFiles.
    sa.Column("source_track_id", _msd_id()),
    **TABLE_OPTIONS,
)

msd_track = sa.Table(
    "msd_track",
    metadata,
    sa.Column("track_id", _msd_id(), primary_key=True),
    sa.Column("analysis_sample_rate", sa.Integer),
    sa.Column("audio_md5", sa.String(32)),
    sa.Column("danceability", _double()),
    sa.Column("duration", _double()),
    sa.Column("end_of_fade_in", _double()),
    sa.Column("energy", _double()),
    sa.Column("key", sa.Integer),
    sa.Column("key_confidence", _double()),
    sa.Column("loudness", _double()),
    sa.Column("mode", sa.Integer),
    sa.Column("mode_confidence", _double()),
    sa.Column("start_of_fade_out", _double()),
    sa.Column("tempo", _double()),
    sa.Column("time_signature", sa.Integer),
    sa.Column("time_signature_confidence", _double()),
    sa.Column("artist_id", _msd_id(), sa.ForeignKey("msd_artist.artist_id"), nullable=False),
    sa.Column("release", _text()),
    sa.Column("song_hotness", _double()),
    sa.Column("title", _text()),
    sa.Column("track_7digitalid", sa.Integer),
    sa.Column("year", sa.Integer),
    # When the song file was last modified at the source (file mtime / S3 LastModified), so a
    # rerun writes the same value.
    sa.Column("upload_timestamp", _timestamp()),
    sa.Column("song_id", _msd_id()),
    sa.Column("release_7digitalid", sa.Integer),
    sa.Column("analyzer_version", sa.String(32)),
    sa.Column("genre", _text()),
    sa.Index("ix_msd_track_artist_id", "artist_id"),
    **TABLE_OPTIONS,
)


def _label_table(name: str, label: str) -> sa.Table:
    """The reference list of one kind of artist label (Echo Nest terms, MusicBrainz tags)."""
    return sa.Table(
        name,
        metadata,
        _id_column(f"{label}_id"),
        sa.Column(f"{label}_name", _key_text(256), nullable=False, unique=True),
        **TABLE_OPTIONS,
    )


def _artist_label_table(name: str, label: str, extra: list[sa.Column]) -> sa.Table:
    """Which artist carries which label: one row per (artist, label name)."""
    return sa.Table(
        name,
        metadata,
        _id_column(f"artist_{label}_id"),
        sa.Column("artist_id", _msd_id(), sa.ForeignKey("msd_artist.artist_id"), nullable=False),
        sa.Column(f"{label}_name", _key_text(256), nullable=False),
        *extra,
        sa.UniqueConstraint("artist_id", f"{label}_name", name=f"uq_{name}"),
        **TABLE_OPTIONS,
    )


msd_r_term = _label_table("msd_r_term", "term")
msd_r_mbtag = _label_table("msd_r_mbtag", "mbtag")
msd_artist_term = _artist_label_table(
    "msd_artist_term",
    "term",
    [sa.Column("term_freq", _double()), sa.Column("term_weight", _double())],
)
msd_artist_mbtag = _artist_label_table(
    "msd_artist_mbtag", "mbtag", [sa.Column("mbtag_count", sa.Integer)]
)

msd_artist_similarity = sa.Table(
    "msd_artist_similarity",
    metadata,
    _id_column("artist_similarity_id"),
    sa.Column("artist_id_1", _msd_id(), sa.ForeignKey("msd_artist.artist_id"), nullable=False),
    sa.Column("artist_id_2", _msd_id(), sa.ForeignKey("msd_artist.artist_id"), nullable=False),
    # 1-based position in the song file's similar-artists list (most similar first).
    sa.Column("similarity_rank", sa.Integer),
    sa.UniqueConstraint("artist_id_1", "artist_id_2", name="uq_msd_artist_similarity"),
    sa.Index("ix_msd_artist_similarity_artist_id_2", "artist_id_2"),
    **TABLE_OPTIONS,
)


def _analysis_table(name: str, singular: str, extra: list[sa.Column]) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        _id_column(f"{singular}_id"),
        sa.Column("track_id", _msd_id(), nullable=False),  # see CHECKED_REFERENCES
        sa.Column(f"track_{singular}_id", sa.Integer, nullable=False),
        sa.Column(f"{singular}_confidence", _double()),
        sa.Column(f"{singular}_start", _double()),
        *extra,
        # Also the index on track_id that partition deletes and the checks use.
        sa.UniqueConstraint("track_id", f"track_{singular}_id", name=f"uq_{name}_position"),
        **TABLE_OPTIONS,
    )


msd_bar = _analysis_table("msd_bar", "bar", [])
msd_beat = _analysis_table("msd_beat", "beat", [])
msd_section = _analysis_table("msd_section", "section", [])
msd_tatum = _analysis_table("msd_tatum", "tatum", [])
msd_segment = _analysis_table(
    "msd_segment",
    "segment",
    [
        sa.Column("segment_loudness_max", _double()),
        sa.Column("segment_loudness_max_time", _double()),
        sa.Column("segment_loudness_start", _double()),
        *[sa.Column(f"p{i}", _double()) for i in range(1, 13)],
        *[sa.Column(f"t{i}", _double()) for i in range(1, 13)],
    ],
)

# Load order: parents before children (foreign keys).
SHARED_TABLES: tuple[sa.Table, ...] = (
    msd_r_term,
    msd_r_mbtag,
    msd_artist,
    msd_artist_term,
    msd_artist_mbtag,
    msd_artist_similarity,
)
TRACK_TABLES: tuple[sa.Table, ...] = (
    msd_track,
    msd_bar,
    msd_beat,
    msd_section,
    msd_tatum,
    msd_segment,
)
# The analysis tables (99% of the rows): children of msd_track.
ANALYSIS_TABLES: tuple[sa.Table, ...] = tuple(t for t in TRACK_TABLES if t is not msd_track)
MSD_TABLES: tuple[sa.Table, ...] = SHARED_TABLES + TRACK_TABLES
TABLES_BY_NAME: dict[str, sa.Table] = {t.name: t for t in MSD_TABLES}

# The natural key that makes a row unique (what upserts and the duplicate checks use).
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "msd_r_term": ("term_name",),
    "msd_r_mbtag": ("mbtag_name",),
    "msd_artist": ("artist_id",),
    "msd_artist_term": ("artist_id", "term_name"),
    "msd_artist_mbtag": ("artist_id", "mbtag_name"),
    "msd_artist_similarity": ("artist_id_1", "artist_id_2"),
    "msd_track": ("track_id",),
    "msd_bar": ("track_id", "track_bar_id"),
    "msd_beat": ("track_id", "track_beat_id"),
    "msd_section": ("track_id", "track_section_id"),
    "msd_tatum": ("track_id", "track_tatum_id"),
    "msd_segment": ("track_id", "track_segment_id"),
}


@dataclass(frozen=True)
class Reference:
    """``table.column`` refers to ``parent_table.parent_column``."""

    table: str
    column: str
    parent_table: str
    parent_column: str
    enforced: bool  # a FOREIGN KEY constraint in the database, or verified by the checks only


# References that are not database constraints (module docstring): the loader and the
# ``partition_rows_loaded`` checks verify them.
CHECKED_REFERENCES: tuple[Reference, ...] = tuple(
    Reference(t.name, "track_id", "msd_track", "track_id", enforced=False)
    for t in (msd_bar, msd_beat, msd_section, msd_tatum, msd_segment)
)


def references(table_name: str) -> list[Reference]:
    """Every reference of ``table_name``: its foreign keys and its checked references."""
    table = TABLES_BY_NAME[table_name]
    declared = [
        Reference(table_name, fk.parent.name, fk.column.table.name, fk.column.name, enforced=True)
        for fk in table.foreign_keys
    ]
    checked = [r for r in CHECKED_REFERENCES if r.table == table_name]
    return sorted(declared + checked, key=lambda r: (r.column, r.parent_table))


def load_columns(table: sa.Table) -> list[str]:
    """The columns a loader writes: every column except the identity surrogate key."""
    return [c.name for c in table.columns if c.identity is None]


TRACK_TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in TRACK_TABLES)
SHARED_TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in SHARED_TABLES)
