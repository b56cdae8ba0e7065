"""How the twelve msd_* tables appear as Dagster assets (names, descriptions, schemas)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from msd_dagster.msd.frames import (
    ANALYSIS_KINDS,
    ARTIST_COLUMNS,
    SINGULAR,
    TABLE_NAMES,
    TRACK_ANALYSIS_COLUMNS,
    TRACK_METADATA_COLUMNS,
)
from msd_dagster.warehouse.schema import (
    TABLES_BY_NAME,
    TRACK_TABLES,
    Reference,
    load_columns,
    references,
)

# msd_* table -> normalized asset name
NORMALIZED_NAMES: dict[str, str] = {
    "msd_track": "songs",
    "msd_artist": "artists",
    "msd_artist_term": "artist_terms",
    "msd_artist_mbtag": "artist_mbtags",
    "msd_r_term": "terms",
    "msd_r_mbtag": "mbtags",
    "msd_artist_similarity": "similar_artists",
    "msd_bar": "bars",
    "msd_beat": "beats",
    "msd_section": "sections",
    "msd_tatum": "tatums",
    "msd_segment": "segments",
}
TRACK_TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in TRACK_TABLES)

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


def normalized_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["normalized", NORMALIZED_NAMES[table]])


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


def table_schema(table: str) -> dg.TableSchema:
    columns = TABLES_BY_NAME[table].columns
    refs = references(table)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
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
    return f"references {target} (verified by the foreign_keys_resolve check, not a constraint)"


def _type_name(type_: sa.types.TypeEngine) -> str:
    try:
        return str(type_.compile())
    except Exception:  # noqa: BLE001 - a dialect-only type: its class name is informative
        return type(type_).__name__


def column_lineage(table: str) -> dg.TableColumnLineage:
    """Each warehouse column comes from the same-named column of its normalized frame."""
    upstream = normalized_key(table)
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=upstream, column_name=column)]
            for column in load_columns(TABLES_BY_NAME[table])
        }
    )


def preview(df: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(rows).to_markdown(index=False) if len(df) else "_empty_")


assert set(NORMALIZED_NAMES) == set(TABLE_NAMES)
