"""The dataset profile as a report: PNG plots, a Markdown page for Dagster, an HTML page on disk.

:func:`build_report` takes a :class:`~msd_dagster.warehouse.profile.WarehouseProfile` (numbers
computed by the database) and draws its plots with matplotlib's Agg canvas (no display, no
pyplot state, safe in any process). The same sections render as Markdown with the images
embedded as ``data:image/png;base64`` URIs (Dagster shows it on the asset's page) and as an
HTML page beside the PNG files (:func:`write_report`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from msd_dagster.event_metadata import table_rows_key
from msd_dagster.warehouse.profile import LOCATION_CELL_DEGREES, Histogram, WarehouseProfile

PAGE_NAME = "index.html"
FIGURE_SIZE = (8.0, 3.6)  # inches
FIGURE_DPI = 80  # 640 x 288 pixels: readable on the asset page, ~20-40 KB per PNG
BAR_COLOR = "#4f43dd"

Table = tuple[list[str], list[list[str]]]  # (header, rows)


@dataclass(frozen=True)
class Section:
    title: str
    text: str = ""
    image: str | None = None  # a figure's name
    table: Table | None = None


@dataclass
class Report:
    database: str
    sections: list[Section]
    figures: dict[str, bytes]  # name -> PNG
    facts: dict[str, int | float] = field(default_factory=dict)

    def markdown(self) -> str:
        """The report in Markdown, its images embedded as data URIs."""
        parts = ["# Dataset profile"]  # the asset's metadata names the database beside it
        for section in self.sections:
            parts.append(f"## {section.title}")
            if section.text:
                parts.append(section.text)
            if section.image:
                parts.append(f"![{section.title}]({data_uri(self.figures[section.image])})")
            if section.table:
                parts.append(_markdown_table(section.table))
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        """A standalone page that shows the PNG files written beside it."""
        body = [
            f"<h1>Dataset profile</h1><p>Database: <code>{html.escape(self.database)}</code></p>"
        ]
        for section in self.sections:
            body.append(f"<h2>{html.escape(section.title)}</h2>")
            if section.text:
                body.append(f"<p>{html.escape(section.text)}</p>")
            if section.image:
                body.append(f'<img src="{section.image}.png" alt="{html.escape(section.title)}">')
            if section.table:
                body.append(_html_table(section.table))
        style = (
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
            "td.n{text-align:right}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Dataset profile</title><style>{style}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _markdown_table(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * (len(header) - 1) + "---:|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if i == len(row) - 1 else ''}>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# --------------------------------------------------------------------------------------------
# Plots


def _png(
    draw: Callable[[Figure], None],
    size: tuple[float, float] = FIGURE_SIZE,
    left: float = 0.8,
) -> bytes:
    """A PNG of what ``draw`` puts on a new figure; ``left`` is the margin for the y labels,
    in inches. Fixed margins: an automatic layout draws every figure twice."""
    width, height = size
    figure = Figure(figsize=size, dpi=FIGURE_DPI)
    figure.subplots_adjust(
        left=left / width, right=1 - 0.25 / width, bottom=0.6 / height, top=1 - 0.4 / height
    )
    FigureCanvasAgg(figure)
    draw(figure)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _years_plot(profile: WarehouseProfile) -> bytes:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        years = [y for y, _ in profile.songs_per_year]
        axes.bar(years, [n for _, n in profile.songs_per_year], width=0.9, color=BAR_COLOR)
        axes.set_xlabel("year")
        axes.set_ylabel("songs")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"Songs per year ({profile.unknown_year:,} of unknown year not shown)")

    return _png(draw)


def _histogram_plot(hist: Histogram) -> bytes:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        edges = hist.bins.edges()
        axes.stairs(hist.counts, edges, fill=True, color=BAR_COLOR)
        axes.set_xlabel(f"{hist.column} ({hist.bins.unit})")
        axes.set_ylabel("songs")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        outside = f"{hist.below:,} below {edges[0]:g}, {hist.above:,} from {edges[-1]:g} on"
        axes.set_title(f"{hist.column}: {hist.values:,} songs ({outside}), {hist.nulls:,} NULL")

    return _png(draw)


def _labels_plot(labels: list[tuple[str, int]], title: str) -> bytes:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        names = [_short(name) for name, _ in labels][::-1]  # the most frequent on top
        axes.barh(range(len(names)), [n for _, n in labels][::-1], color=BAR_COLOR)
        axes.set_yticks(range(len(names)), names, fontsize=8)
        axes.set_xlabel("artists")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)

    return _png(draw, (8.0, 0.22 * max(len(labels), 8) + 1.2), left=2.3)


def _short(label: str, length: int = 28) -> str:
    """A label cut to ``length`` characters: a long tag would squeeze the bars to nothing."""
    return label if len(label) <= length else label[: length - 1] + "…"


def _locations_plot(profile: WarehouseProfile, cell: float) -> bytes:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        cells = profile.locations
        sizes = [12 + 8 * c.artists for c in cells]
        axes.scatter(
            [c.longitude + cell / 2 for c in cells],
            [c.latitude + cell / 2 for c in cells],
            s=sizes,
            color=BAR_COLOR,
            alpha=0.6,
            linewidths=0,
        )
        axes.set_xlim(-180, 180)
        axes.set_ylim(-90, 90)
        axes.set_aspect("equal")
        axes.grid(True, linewidth=0.3)
        axes.set_xlabel("longitude")
        axes.set_ylabel("latitude")
        axes.set_title(
            f"{profile.located_artists:,} of {profile.artists:,} artists located "
            f"(per {cell:g}° cell)"
        )

    return _png(draw, (8.0, 4.4))


# --------------------------------------------------------------------------------------------
# The report


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def numeric_facts(profile: WarehouseProfile) -> dict[str, int | float]:
    """The profile's headline numbers, as plain metadata entries Dagster plots over time."""
    facts: dict[str, int | float] = {table_rows_key(t): n for t, n in profile.row_counts.items()}
    years = [y for y, _ in profile.songs_per_year]
    facts.update(
        {
            "songs_with_year": sum(n for _, n in profile.songs_per_year),
            "songs_unknown_year": profile.unknown_year,
            "artists_located": profile.located_artists,
            "terms_in_use": profile.distinct_terms,
            "mbtags_in_use": profile.distinct_mbtags,
        }
    )
    if years:
        facts.update({"first_year": years[0], "last_year": years[-1]})
    for column, hist in profile.histograms.items():
        for stat in ("mean", "minimum", "maximum"):
            value = getattr(hist, stat)
            if value is not None:
                facts[f"{column}_{stat}"] = round(value, 4)
    return facts


def build_report(
    profile: WarehouseProfile, database: str, cell: float = LOCATION_CELL_DEGREES
) -> Report:
    """Plots and sections of ``profile``; ``database`` is shown as is (pass a masked URL),
    ``cell`` is the location grid's cell size in degrees (:func:`location_grid`'s)."""
    figures = {
        "songs_per_year": _years_plot(profile),
        **{f"{c}_histogram": _histogram_plot(h) for c, h in profile.histograms.items()},
        "top_terms": _labels_plot(
            profile.top_terms, f"Top {len(profile.top_terms)} Echo Nest terms by artists"
        ),
        "top_mbtags": _labels_plot(
            profile.top_mbtags, f"Top {len(profile.top_mbtags)} MusicBrainz tags by artists"
        ),
        "artist_locations": _locations_plot(profile, cell),
    }
    tracks = profile.tracks
    sections = [
        Section(
            "Songs per year",
            f"{tracks:,} songs: {tracks - profile.unknown_year:,} with a year, "
            f"{profile.unknown_year:,} ({_percent(profile.unknown_year, tracks)}) of unknown "
            "year (0 in the song file, NULL in msd_track).",
            "songs_per_year",
        ),
        *[
            Section(
                f"{column.capitalize()}",
                f"mean {_fmt(h.mean)} {h.bins.unit}, minimum {_fmt(h.minimum)}, "
                f"maximum {_fmt(h.maximum)}; bins of {h.bins.width:g} {h.bins.unit}.",
                f"{column}_histogram",
            )
            for column, h in profile.histograms.items()
        ],
        Section(
            "Echo Nest terms",
            f"{profile.distinct_terms:,} terms in use by artists; the most frequent.",
            "top_terms",
        ),
        Section(
            "MusicBrainz tags",
            f"{profile.distinct_mbtags:,} tags in use by artists; the most frequent.",
            "top_mbtags",
        ),
        Section(
            "Artist locations",
            "Artists with a latitude and longitude, counted per grid cell (larger dots: more "
            "artists).",
            "artist_locations",
        ),
        Section(
            "Missing values",
            "Share of NULLs in every column of msd_track and msd_artist (msd_artist also holds "
            "id-only rows for artists known only as someone's similar artist).",
            table=(
                ["table", "column", "NULLs", "share"],
                [
                    [n.table, n.column, f"{n.nulls:,}", _percent(n.nulls, n.rows)]
                    for n in profile.nulls
                ],
            ),
        ),
        Section(
            "Rows per table",
            table=(
                ["table", "rows"],
                [[table, f"{rows:,}"] for table, rows in profile.row_counts.items()],
            ),
        ),
    ]
    return Report(database, sections, figures, numeric_facts(profile))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def write_report(report: Report, folder: Path) -> Path:
    """The PNG files and ``index.html`` in ``folder`` (created; earlier files replaced); the
    page's path. Each file is replaced whole (written aside, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in report.figures.items():
        _replace(folder / f"{name}.png", png)
    page = folder / PAGE_NAME
    _replace(page, report.html().encode("utf-8"))
    return page


def _replace(path: Path, content: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(content)
    temporary.replace(path)
