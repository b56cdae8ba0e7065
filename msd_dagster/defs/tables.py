"""How the twelve msd_* tables appear as Dagster assets (names, descriptions, schemas)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from msd_dagster.msd.frames import TABLE_NAMES
from msd_dagster.warehouse.schema import TABLES_BY_NAME, TRACK_TABLES

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


def table_schema(table: str) -> dg.TableSchema:
    columns = TABLES_BY_NAME[table].columns
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=_type_name(c.type),
                description=c.comment,
                constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=c.primary_key),
            )
            for c in columns
        ]
    )


def _type_name(type_: sa.types.TypeEngine) -> str:
    try:
        return str(type_.compile())
    except Exception:  # noqa: BLE001 - a dialect-only type: its class name is informative
        return type(type_).__name__


def preview(df: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(rows).to_markdown(index=False) if len(df) else "_empty_")


assert set(NORMALIZED_NAMES) == set(TABLE_NAMES)
