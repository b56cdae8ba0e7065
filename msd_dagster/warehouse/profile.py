"""The dataset profile: what the loaded music looks like, computed by the database.

Every number is an aggregate query in SQLAlchemy Core, so it runs on PostgreSQL, MariaDB,
SQLite and SQL Server alike and returns a few hundred rows at most, whatever the size of the
tables: histograms and the location grid are binned in SQL (``floor((x - lo) / width)``,
grouped), never by fetching the rows. The heaviest part is counting the rows of the analysis
tables; the rest reads ``msd_track``, ``msd_artist`` and the artists' terms and tags.

:func:`profile_warehouse` returns a :class:`WarehouseProfile`; :mod:`msd_dagster.profile_report`
turns it into plots and a page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.verify import table_totals

TOP_LABELS = 25
# Profiled for missing values: every column of these tables.
NULL_PROFILED_TABLES = ("msd_track", "msd_artist")
# Location grid cell, in degrees of latitude and longitude.
LOCATION_CELL_DEGREES = 1.0


@dataclass(frozen=True)
class Bins:
    """Equal-width bins over ``[lo, hi)``; values outside are counted as below / above."""

    lo: float
    hi: float
    width: float
    unit: str

    def __post_init__(self) -> None:
        if not math.isclose(self.lo + self.count * self.width, self.hi):
            raise ValueError(f"bins of {self.width} do not divide [{self.lo}, {self.hi})")

    @property
    def count(self) -> int:
        return round((self.hi - self.lo) / self.width)

    def edges(self) -> list[float]:
        return [self.lo + i * self.width for i in range(self.count + 1)]


# Fixed ranges, so that profiles of different loads compare bin for bin; the songs outside
# (very long songs, loudness below -45 dB) are counted as below / above, never dropped.
HISTOGRAM_BINS: dict[str, Bins] = {
    "tempo": Bins(0.0, 260.0, 5.0, "BPM"),
    "loudness": Bins(-45.0, 5.0, 1.0, "dB"),
    "duration": Bins(0.0, 900.0, 15.0, "s"),
}


@dataclass(frozen=True)
class Histogram:
    column: str
    bins: Bins
    counts: list[int]  # one per bin
    below: int  # values < bins.lo
    above: int  # values >= bins.hi
    nulls: int
    minimum: float | None
    maximum: float | None
    mean: float | None

    @property
    def values(self) -> int:
        """Non-NULL values (in the bins or outside them)."""
        return sum(self.counts) + self.below + self.above


@dataclass(frozen=True)
class ColumnNulls:
    table: str
    column: str
    nulls: int
    rows: int

    @property
    def share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class LocationCell:
    """Artists whose coordinates fall in the cell whose south-west corner is (lat, long)."""

    latitude: float
    longitude: float
    artists: int


@dataclass(frozen=True)
class WarehouseProfile:
    row_counts: dict[str, int]
    songs_per_year: list[tuple[int, int]]  # (year, songs), by year
    unknown_year: int
    histograms: dict[str, Histogram]
    top_terms: list[tuple[str, int]]  # (term, artists), most artists first
    top_mbtags: list[tuple[str, int]]
    distinct_terms: int  # terms that at least one artist has
    distinct_mbtags: int
    locations: list[LocationCell]
    located_artists: int
    nulls: list[ColumnNulls]

    @property
    def tracks(self) -> int:
        return self.row_counts.get("msd_track", 0)

    @property
    def artists(self) -> int:
        return self.row_counts.get("msd_artist", 0)


class _floor(FunctionElement):
    """``floor(x)``. SQLite has floor() only when built with its math functions."""

    type = sa.Integer()
    inherit_cache = True
    name = "floor"


@compiles(_floor)
def _compile_floor(element: _floor, compiler, **kw) -> str:
    return f"FLOOR({compiler.process(element.clauses, **kw)})"


@compiles(_floor, "sqlite")
def _compile_floor_sqlite(element: _floor, compiler, **kw) -> str:
    # Only ever applied to values >= 0 (see bin_index), where truncation is the floor.
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


def bin_index(value: sa.ColumnElement, lo: float, width: float, count: int) -> sa.ColumnElement:
    """The 0-based bin of ``value`` over ``count`` bins of ``width`` from ``lo``; -1 below,
    ``count`` above, NULL for NULL."""
    hi = lo + count * width
    return sa.case(
        (value < lo, -1),
        (value >= hi, count),
        else_=_floor((value - float(lo)) / float(width)),
    )


def _grouped_bins(
    conn: sa.Connection, source: sa.Select, labels: list[str]
) -> list[tuple[int | None, ...]]:
    """``SELECT labels..., COUNT(*) FROM (source) GROUP BY labels``: grouping by the columns of
    a subquery, so that no expression (and no bound value) is written twice."""
    inner = source.subquery("binned")
    columns = [inner.c[label] for label in labels]
    statement = sa.select(*columns, sa.func.count()).group_by(*columns)
    return [tuple(row) for row in conn.execute(statement)]


def histogram(
    conn: sa.Connection,
    track: sa.Table,
    column: str,
    bins: Bins,
    summary: tuple[object, object, object],
) -> Histogram:
    """Counts of ``msd_track.column`` per bin, below, above and NULL; with ``summary``, its
    min, max and mean (:func:`column_summaries`)."""
    value = track.c[column]
    counts = [0] * bins.count
    below = above = nulls = 0
    indexed = sa.select(bin_index(value, bins.lo, bins.width, bins.count).label("bin"))
    for index, songs in _grouped_bins(conn, indexed, ["bin"]):
        if index is None:
            nulls += songs
        elif index < 0:
            below += songs
        elif index >= bins.count:
            above += songs
        else:
            counts[int(index)] += songs
    minimum, maximum, mean = summary
    return Histogram(
        column=column,
        bins=bins,
        counts=counts,
        below=below,
        above=above,
        nulls=nulls,
        minimum=_float(minimum),
        maximum=_float(maximum),
        mean=_float(mean),
    )


def column_summaries(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str]
) -> dict[str, tuple[object, object, object]]:
    """Min, max and mean of each of ``columns``, in one scan."""
    aggregates = [
        f(table.c[column]) for column in columns for f in (sa.func.min, sa.func.max, sa.func.avg)
    ]
    values = conn.execute(sa.select(*aggregates)).one()
    return {column: tuple(values[3 * i : 3 * i + 3]) for i, column in enumerate(columns)}


def _float(value: object) -> float | None:
    return None if value is None else float(value)


def songs_per_year(conn: sa.Connection, track: sa.Table) -> tuple[list[tuple[int, int]], int]:
    """``([(year, songs), ...] by year, songs of unknown year)`` (year 0 is loaded as NULL)."""
    rows = conn.execute(sa.select(track.c.year, sa.func.count()).group_by(track.c.year)).all()
    known = sorted((int(year), int(songs)) for year, songs in rows if year is not None)
    unknown = sum(int(songs) for year, songs in rows if year is None)
    return known, unknown


def top_labels(
    conn: sa.Connection, table: sa.Table, label_column: str, limit: int = TOP_LABELS
) -> tuple[list[tuple[str, int]], int]:
    """``(the `limit` labels with the most artists, most first, ties by label; labels in use)``.

    Each (artist, label) pair is unique in the table, so the rows of a label are its artists.
    """
    label = table.c[label_column]
    artists = sa.func.count().label("artists")
    statement = (
        sa.select(label, artists).group_by(label).order_by(artists.desc(), label).limit(limit)
    )
    top = [(str(name), int(count)) for name, count in conn.execute(statement)]
    distinct = sa.select(sa.func.count(sa.distinct(label)))
    return top, int(conn.execute(distinct).scalar_one())


def location_grid(
    conn: sa.Connection, artist: sa.Table, cell: float = LOCATION_CELL_DEGREES
) -> list[LocationCell]:
    """Artists with both coordinates, counted per ``cell``-degree square (a bounded number of
    rows: at most 180 x 360 for 1-degree cells)."""
    lat, long = artist.c.artist_lat, artist.c.artist_long
    # Out-of-range coordinates would only widen the grid; they land in the edge cells.
    lat_cells, long_cells = round(180 / cell), round(360 / cell)
    located = sa.select(
        bin_index(lat, -90.0, cell, lat_cells).label("lat_bin"),
        bin_index(long, -180.0, cell, long_cells).label("long_bin"),
    ).where(lat.is_not(None), long.is_not(None))
    merged: dict[tuple[float, float], int] = {}  # clamped cells may repeat
    for lat_bin, long_bin, artists in _grouped_bins(conn, located, ["lat_bin", "long_bin"]):
        lat_bin = min(max(int(lat_bin), 0), lat_cells - 1)
        long_bin = min(max(int(long_bin), 0), long_cells - 1)
        corner = (-90.0 + lat_bin * cell, -180.0 + long_bin * cell)
        merged[corner] = merged.get(corner, 0) + int(artists)
    return [LocationCell(lat_, long_, n) for (lat_, long_), n in sorted(merged.items())]


def column_nulls(conn: sa.Connection, table: sa.Table) -> list[ColumnNulls]:
    """NULLs of every column of ``table``, in one scan (``COUNT(*)`` and ``COUNT(column)``)."""
    columns = list(table.columns)
    statement = sa.select(
        sa.func.count(), *(sa.func.count(c).label(f"c{i}") for i, c in enumerate(columns))
    )
    rows, *present = conn.execute(statement).one()
    return [
        ColumnNulls(table.name, column.name, int(rows) - int(count), int(rows))
        for column, count in zip(columns, present, strict=True)
    ]


def profile_warehouse(conn: sa.Connection) -> WarehouseProfile:
    """The whole profile of the database behind ``conn`` (every query in one connection)."""
    track = warehouse_table(conn, "msd_track")
    artist = warehouse_table(conn, "msd_artist")
    years, unknown = songs_per_year(conn, track)
    terms, distinct_terms = top_labels(conn, warehouse_table(conn, "msd_artist_term"), "term_name")
    mbtags, distinct_mbtags = top_labels(
        conn, warehouse_table(conn, "msd_artist_mbtag"), "mbtag_name"
    )
    locations = location_grid(conn, artist)
    summaries = column_summaries(conn, track, list(HISTOGRAM_BINS))
    return WarehouseProfile(
        row_counts=table_totals(conn),
        songs_per_year=years,
        unknown_year=unknown,
        histograms={
            column: histogram(conn, track, column, bins, summaries[column])
            for column, bins in HISTOGRAM_BINS.items()
        },
        top_terms=terms,
        top_mbtags=mbtags,
        distinct_terms=distinct_terms,
        distinct_mbtags=distinct_mbtags,
        locations=locations,
        located_artists=sum(c.artists for c in locations),
        nulls=[
            entry
            for name in NULL_PROFILED_TABLES
            for entry in column_nulls(conn, warehouse_table(conn, name))
        ],
    )
