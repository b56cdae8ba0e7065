"""How the song files and the twelve msd_* tables appear as Dagster assets (keys, names,
descriptions, schemas)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from msd_dagster.defs.check_names import ROWS_CHECK
from msd_dagster.msd.frames import (
    ANALYSIS_KINDS,
    ARTIST_COLUMNS,
    SINGULAR,
    TABLE_NAMES,
    TRACK_ANALYSIS_COLUMNS,
    TRACK_METADATA_COLUMNS,
)
from msd_dagster.warehouse.schema import (
    MSD_TABLES,
    TABLES_BY_NAME,
    TRACK_TABLE_NAMES,
    Reference,
    load_columns,
    references,
)

# The raw layer: each folder's song files as listed at the source.
RAW_KEY = dg.AssetKey(["raw", "song_files"])
# The warehouse layer: one asset per table, in the order they are loaded.
TABLE_ORDER: tuple[str, ...] = tuple(t.name for t in MSD_TABLES)

# The normalized layer: three assets, each a set of frames named like the tables they load.
NORMALIZED_FRAMES: dict[str, tuple[str, ...]] = {
    "songs": TRACK_TABLE_NAMES,
    "artists": ("msd_artist", "msd_artist_similarity"),
    "genres": ("msd_r_term", "msd_r_mbtag", "msd_artist_term", "msd_artist_mbtag"),
}
NORMALIZED_OF: dict[str, str] = {
    table: name for name, tables in NORMALIZED_FRAMES.items() for table in tables
}
# Song files that could not be read, kept with the songs' frames (name, reason).
REJECTED_FRAME = "rejected_files"
NORMALIZED_DESCRIPTIONS: dict[str, str] = {
    "songs": "Tracks and their audio analysis (bars, beats, sections, tatums, segments), one "
    "frame per table, parsed from the partition's song files; also the rejected files.",
    "artists": "Artists of the partition's songs and their similar artists.",
    "genres": "Echo Nest terms and MusicBrainz tags of the partition's artists, and the "
    "dictionaries of both.",
}

DESCRIPTIONS: dict[str, str] = {
    "msd_track": "One row per song file: Echo Nest analysis summary and song metadata.",
    "msd_artist": "One row per artist (plus id-only rows for artists known only as similar).",
    "msd_artist_term": "Echo Nest terms (genres) of each artist, with frequency and weight.",
    "msd_artist_mbtag": "MusicBrainz tags of each artist, with their counts.",
    "msd_r_term": "Dictionary of Echo Nest terms.",
    "msd_r_mbtag": "Dictionary of MusicBrainz tags.",
    "msd_artist_similarity": "Similar artists of each artist, with their rank.",
    "msd_bar": "Bars of each track: 1-based position, confidence, start time.",
    "msd_beat": "Beats of each track: 1-based position, confidence, start time.",
    "msd_section": "Sections of each track: 1-based position, confidence, start time.",
    "msd_tatum": "Tatums of each track: 1-based position, confidence, start time.",
    "msd_segment": "Segments of each track: loudness, pitches p1..p12 and timbre t1..t12.",
}


def normalized_key(name: str) -> dg.AssetKey:
    """``songs`` -> ``normalized/songs`` (see :data:`NORMALIZED_FRAMES`)."""
    return dg.AssetKey(["normalized", name])


def warehouse_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", table])


def source_field(table: str, column: str) -> str | None:
    """Where a column comes from in the song file (HDF5 path and field), for the catalog."""
    if table != "msd_track" and column == "track_id":
        return "analysis/songs.track_id"
    if table not in ("msd_track", "msd_artist") and column in ("artist_id", "artist_id_1"):
        return "metadata/songs.artist_id"
    if table == "msd_track":
        if column in TRACK_ANALYSIS_COLUMNS:
            return f"analysis/songs.{column}"
        if column in TRACK_METADATA_COLUMNS:
            return f"metadata/songs.{TRACK_METADATA_COLUMNS[column]}"
        return {
            "track_id": "analysis/songs.track_id (= file name)",
            "year": "musicbrainz/songs.year",
            "upload_timestamp": "source object modification time",
        }.get(column)
    if table == "msd_artist":
        if column in ARTIST_COLUMNS:
            return f"metadata/songs.{ARTIST_COLUMNS[column]}"
        return {
            "artist_id": "metadata/songs.artist_id, metadata/similar_artists",
            "source_track_id": "track id of the song file whose artist fields won",
        }.get(column)
    if table in ANALYSIS_KINDS:
        kind, one = ANALYSIS_KINDS[table], SINGULAR[table]
        if column == f"{one}_id":
            return None  # identity surrogate key
        if column.startswith(f"{one}_"):
            return f"analysis/{kind}_{column.removeprefix(one + '_')}"
        if column.startswith("segment_"):
            return f"analysis/segments_{column.removeprefix('segment_')}"
        if column[0] in "pt" and column[1:].isdigit():
            array = "pitches" if column[0] == "p" else "timbre"
            return f"analysis/segments_{array}[:, {int(column[1:]) - 1}]"
        if column == f"track_{one}_id":
            return f"1-based index in analysis/{kind}_start"
        return None
    return {
        ("msd_artist_term", "term_name"): "metadata/artist_terms",
        ("msd_artist_term", "term_freq"): "metadata/artist_terms_freq",
        ("msd_artist_term", "term_weight"): "metadata/artist_terms_weight",
        ("msd_artist_mbtag", "mbtag_name"): "musicbrainz/artist_mbtags",
        ("msd_artist_mbtag", "mbtag_count"): "musicbrainz/artist_mbtags_count",
        ("msd_artist_similarity", "artist_id_2"): "metadata/similar_artists",
        ("msd_artist_similarity", "similarity_rank"): "1-based index in metadata/similar_artists",
        ("msd_r_term", "term_name"): "metadata/artist_terms (distinct)",
        ("msd_r_mbtag", "mbtag_name"): "musicbrainz/artist_mbtags (distinct)",
    }.get((table, column))


def table_schema(table: str, *, qualified: bool = False) -> dg.TableSchema:
    """The catalog schema of ``table``; ``qualified`` names columns ``table.column`` (for the
    normalized assets, which hold several frames)."""
    columns = TABLES_BY_NAME[table].columns
    refs = references(table)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f"{table}.{c.name}" if qualified else c.name,
                type=_type_name(c.type),
                description=(
                    f"from {source_field(table, c.name)}" if source_field(table, c.name) else None
                ),
                constraints=dg.TableColumnConstraints(
                    nullable=c.nullable,
                    unique=c.primary_key,
                    other=[_describe(r) for r in refs if r.column == c.name],
                ),
            )
            for c in columns
        ]
    )


def _describe(reference: Reference) -> str:
    target = f"{reference.parent_table}.{reference.parent_column}"
    if reference.enforced:
        return f"foreign key to {target}"
    return f"references {target} (verified by the {ROWS_CHECK} check, not a constraint)"


def _type_name(type_: sa.types.TypeEngine) -> str:
    try:
        return str(type_.compile())
    except Exception:  # noqa: BLE001 - a dialect-only type: its class name is informative
        return type(type_).__name__


def normalized_schema(name: str) -> dg.TableSchema:
    """Every column of every frame of a normalized asset, as ``table.column``."""
    return dg.TableSchema(
        columns=[
            column
            for table in NORMALIZED_FRAMES[name]
            for column in table_schema(table, qualified=True).columns
        ]
    )


def column_lineage(table: str) -> dg.TableColumnLineage:
    """Each warehouse column comes from the same column of its frame in the normalized asset."""
    upstream = normalized_key(NORMALIZED_OF[table])
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=upstream, column_name=f"{table}.{column}")]
            for column in load_columns(TABLES_BY_NAME[table])
        }
    )


def preview(df: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(rows).to_markdown(index=False) if len(df) else "_empty_")


assert set(NORMALIZED_OF) == set(TABLE_NAMES)
