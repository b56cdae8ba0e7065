"""The dataset profile: its numbers against independent SQL on the real sample folder, on every
backend here; its images are real PNGs; the asset and ``msd-dagster profile`` write the report.

The independent side fetches the few rows of the loaded folder (13 songs) with plain SQL text
and counts and bins them in Python, so a wrong aggregate, bin or grouping in the profile's
SQLAlchemy expressions shows up as a difference.
"""

from __future__ import annotations

import base64
import io
import math
import re
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import matplotlib.image
import pytest
import sqlalchemy as sa

from msd_dagster import cli
from msd_dagster.defs.assets.profile import PROFILE_KEY, PROFILE_MARKDOWN, REPORT_PATH
from msd_dagster.profile_report import PAGE_NAME, build_report, write_report
from msd_dagster.warehouse.profile import (
    HISTOGRAM_BINS,
    LOCATION_CELL_DEGREES,
    TOP_LABELS,
    WarehouseProfile,
    profile_warehouse,
)
from msd_dagster.warehouse.schema import MSD_TABLES, TABLES_BY_NAME
from msd_dagster_tests.db_fixtures import ServerDatabase, empty_schema
from msd_dagster_tests.pipeline_helpers import (
    PipelineTarget,
    assert_partition_run_ok,
    materialization_metadata,
    sqlite_url,
    url_string,
)
from msd_dagster_tests.shared_data import REAL_SUBSET, real_song_paths

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
FIGURES = 7  # songs per year, three histograms, terms, tags, locations


def load_real_folder(url: str | sa.URL, tmp: Path) -> PipelineTarget:
    """The 13 real song files of data/A/A/A, loaded as partition A/A."""
    real_song_paths()  # skips without the samples
    target = PipelineTarget.create(REAL_SUBSET, url, tmp / "parquet", ["A/A"])
    assert_partition_run_ok(target.materialize("A/A"), "A/A")
    return target


def backend_url(
    backend: str, server_database: Callable[[str], ServerDatabase], tmp: Path
) -> str | sa.URL:
    if backend == "sqlite":
        return sqlite_url(tmp / "msd.sqlite")
    database = server_database(backend)  # skips, with the reason, without a server
    empty_schema(database.engine)
    return database.url


def fetch(conn: sa.Connection, sql: str) -> list[tuple]:
    return [tuple(row) for row in conn.execute(sa.text(sql))]


def python_bin(value: float, lo: float, width: float, count: int) -> int:
    """The bin of ``value``, as the profile defines it (-1 below, ``count`` above)."""
    if value < lo:
        return -1
    if value >= lo + count * width:
        return count
    return math.floor((value - lo) / width)


def assert_matches_independent_sql(conn: sa.Connection, profile: WarehouseProfile) -> None:
    counts = {t.name: fetch(conn, f"SELECT COUNT(*) FROM {t.name}")[0][0] for t in MSD_TABLES}
    assert profile.row_counts == counts
    assert counts["msd_track"] == 13 and counts["msd_segment"] > 1000

    years = [row[0] for row in fetch(conn, "SELECT year FROM msd_track")]
    assert profile.unknown_year == years.count(None) > 0
    assert profile.songs_per_year == sorted(Counter(y for y in years if y is not None).items())

    for column, bins in HISTOGRAM_BINS.items():
        values = [row[0] for row in fetch(conn, f"SELECT {column} FROM msd_track")]
        known = [v for v in values if v is not None]
        hist = profile.histograms[column]
        binned = Counter(python_bin(v, bins.lo, bins.width, bins.count) for v in known)
        assert hist.counts == [binned.get(i, 0) for i in range(bins.count)], column
        assert (hist.below, hist.above) == (binned.get(-1, 0), binned.get(bins.count, 0))
        assert hist.nulls == values.count(None)
        assert hist.values == len(known) == 13
        assert (hist.minimum, hist.maximum) == (min(known), max(known))
        assert hist.mean == pytest.approx(sum(known) / len(known), rel=1e-9)

    for table, column, top in (
        ("msd_artist_term", "term_name", profile.top_terms),
        ("msd_artist_mbtag", "mbtag_name", profile.top_mbtags),
    ):
        pairs = fetch(conn, f"SELECT artist_id, {column} FROM {table}")
        artists = Counter(label for _, label in set(pairs))
        # Most artists first, ties by code point (the tables' binary collation).
        expected = sorted(artists.items(), key=lambda item: (-item[1], item[0]))[:TOP_LABELS]
        assert top == expected, table
        distinct = profile.distinct_terms if table == "msd_artist_term" else profile.distinct_mbtags
        assert distinct == len(artists)
    assert len(profile.top_terms) == TOP_LABELS and profile.top_terms[0] == ("rock", 9)

    coordinates = fetch(conn, "SELECT artist_lat, artist_long FROM msd_artist")
    located = [(lat, long) for lat, long in coordinates if lat is not None and long is not None]
    cell = LOCATION_CELL_DEGREES
    grid = Counter(
        (-90 + math.floor((lat + 90) / cell) * cell, -180 + math.floor((long + 180) / cell) * cell)
        for lat, long in located
    )
    assert {(c.latitude, c.longitude): c.artists for c in profile.locations} == dict(grid)
    assert profile.located_artists == len(located) > 0

    for table in ("msd_track", "msd_artist"):
        names = [c.name for c in TABLES_BY_NAME[table].columns]
        quote = conn.dialect.identifier_preparer.quote  # "key" is reserved in MariaDB
        rows = fetch(conn, f"SELECT {', '.join(quote(n) for n in names)} FROM {table}")
        expected_nulls = {
            (table, name): sum(row[i] is None for row in rows) for i, name in enumerate(names)
        }
        found = {(n.table, n.column): n.nulls for n in profile.nulls if n.table == table}
        assert found == expected_nulls
        assert {n.rows for n in profile.nulls if n.table == table} == {len(rows)}
    by_column = {(n.table, n.column): n for n in profile.nulls}
    assert by_column[("msd_track", "track_id")].nulls == 0
    assert by_column[("msd_track", "danceability")].share == 1.0  # never set in the MSD


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_profile_numbers_match_independent_sql(
    backend: str, server_database: Callable[[str], ServerDatabase], fast_tmp_path: Path
) -> None:
    target = load_real_folder(backend_url(backend, server_database, fast_tmp_path), fast_tmp_path)
    engine = target.engine()
    try:
        with engine.connect() as conn:
            assert_matches_independent_sql(conn, profile_warehouse(conn))
    finally:
        engine.dispose()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def assert_sensible_png(png: bytes) -> None:
    width, height = png_size(png)
    assert 400 <= width <= 1600 and 200 <= height <= 1600, (width, height)
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.01  # something is drawn, not a blank image


def embedded_pngs(markdown: str) -> list[bytes]:
    return [base64.b64decode(match) for match in DATA_URI.findall(markdown)]


@pytest.fixture
def sqlite_profile(fast_tmp_path: Path) -> tuple[PipelineTarget, WarehouseProfile]:
    target = load_real_folder(sqlite_url(fast_tmp_path / "msd.sqlite"), fast_tmp_path)
    engine = target.engine()
    try:
        with engine.connect() as conn:
            return target, profile_warehouse(conn)
    finally:
        engine.dispose()


def test_every_image_is_a_png_of_sensible_size_and_the_page_shows_them(
    sqlite_profile: tuple[PipelineTarget, WarehouseProfile], tmp_path: Path
) -> None:
    _, profile = sqlite_profile
    report = build_report(profile, "sqlite:///msd.sqlite", LOCATION_CELL_DEGREES)
    markdown = report.markdown()
    images = embedded_pngs(markdown)
    assert len(images) == len(report.figures) == FIGURES
    for png in images:
        assert_sensible_png(png)
    assert "| msd_track | danceability | 13 | 100.0% |" in markdown
    assert "| msd_track | 13 |" in markdown

    page = write_report(report, tmp_path / "profile")
    assert page == tmp_path / "profile" / PAGE_NAME
    html = page.read_text(encoding="utf-8")
    shown = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(shown) == sorted(f"{name}.png" for name in report.figures)
    for name in shown:
        assert_sensible_png((page.parent / name).read_bytes())
    assert not list(page.parent.glob("*.tmp"))


def test_the_asset_reports_markdown_numbers_and_files(
    sqlite_profile: tuple[PipelineTarget, WarehouseProfile],
    fast_tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from msd_dagster.definitions import defs

    target, profile = sqlite_profile
    monkeypatch.setenv("MSD_HOME", str(fast_tmp_path / "home"))
    asset = next(a for a in defs.assets if PROFILE_KEY in getattr(a, "keys", ()))
    result = dg.materialize(
        [asset], instance=target.instance, resources={"warehouse": target.resources["warehouse"]}
    )
    assert result.success
    metadata = materialization_metadata(result, PROFILE_KEY)
    assert len(embedded_pngs(metadata[PROFILE_MARKDOWN])) == FIGURES
    # Plain numbers, which Dagster plots over materializations.
    assert metadata["rows/msd_track"] == 13 and isinstance(metadata["rows/msd_track"], int)
    assert metadata["songs_unknown_year"] == profile.unknown_year
    assert metadata["tempo_mean"] == pytest.approx(profile.histograms["tempo"].mean)
    assert isinstance(metadata["tempo_mean"], float)
    page = Path(metadata[REPORT_PATH])
    assert page == fast_tmp_path / "home" / "profile" / PAGE_NAME and page.is_file()


def test_cli_profile_writes_the_report_and_fails_in_one_line(
    sqlite_profile: tuple[PipelineTarget, WarehouseProfile],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, _ = sqlite_profile
    out = tmp_path / "report"
    url = url_string(target.database_url)
    assert cli.main(["profile", "--database-url", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("profiled 13 songs and ") and printed.strip().endswith(
        str(out / PAGE_NAME)
    )
    assert len(list(out.glob("*.png"))) == FIGURES

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert cli.main(["profile", "--database-url", url, "--out", str(blocked / "x")]) == 2
    printed = capsys.readouterr().out
    assert printed == f"error: cannot write the profile to {blocked / 'x'}: Not a directory\n"

    bad = "postgresql+psycopg://msd:hunter2@127.0.0.1:1/none"
    assert cli.main(["profile", "--database-url", bad, "--out", str(tmp_path / "no")]) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("error: cannot profile ") and printed.count("\n") == 1
    assert "hunter2" not in printed
    assert not (tmp_path / "no").exists()
