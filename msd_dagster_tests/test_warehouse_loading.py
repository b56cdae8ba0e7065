"""Partition loads on real databases (SQLite, PostgreSQL, MariaDB): exact values, reruns,
shared rows, load-order independence, atomic failures, schema checks and the check queries.

Needs the ``engine`` fixture of ``msd_dagster_tests.db_fixtures`` (PostgreSQL/MariaDB variants
are skipped when the local servers are unreachable).
"""

from __future__ import annotations

import math
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from msd_dagster.source.layout import partition_track_range
from msd_dagster.warehouse import partition_load, verify
from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.ddl import (
    SchemaMismatchError,
    drop_schema,
    ensure_schema,
    warehouse_table,
)
from msd_dagster.warehouse.partition_load import load_partition
from msd_dagster.warehouse.queries import (
    count_duplicate_natural_keys,
    count_orphan_foreign_keys,
    count_rows,
    total_tracks,
)
from msd_dagster.warehouse.schema import (
    MSD_TABLES,
    NATURAL_KEYS,
    SCHEMA_VERSION,
    SHARED_TABLES,
    TABLES_BY_NAME,
    TRACK_TABLES,
    load_columns,
    msd_schema_version,
    references,
)
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster.warehouse.verify import table_row_counts
from msd_dagster_tests.db_fixtures import ServerDatabase, empty_schema

pytest_plugins = ["msd_dagster_tests.db_fixtures"]

# --------------------------------------------------------------------------------------------
# Test data: two partitions sharing artists, with the text and numbers that broke before.

GURMUKHI = "ਪੰਜਾਬੀ"
BHANGRA = "ਭੰਗੜਾ"
HONG_KONG = "香港歌手"
ODD_TEXT = 'quote " comma , newline \n CR \r tab \t backslash \\ semicolon ; end'
LONG_NAME = ("ਪੰਜਾਬੀ 香港歌手 Beyoncé 🎸 " * 50)[:1024]  # 1024 characters, ~2,500 UTF-8 bytes
# Floats whose decimal text is easy to get wrong: subnormal, extremes, 17-digit mantissas.
TRICKY = [
    0.1,
    1 / 3,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.5e-10,
    123456789.12345679,
    math.pi,
    9007199254740993.0,
    -7.123456789012345,
]


def artist_id(tag: str) -> str:
    return ("AR" + tag).ljust(18, "0")


def track_id(partition: str, n: int) -> str:
    return f"TR{partition[0]}{partition[2]}{n:04d}128F429CF4"


S, X, Y, Z = (artist_id(t) for t in ("SHARED", "XONLYAA", "YSIMILAR", "ZSTUB"))


def frame(table_name: str, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A frame with exactly the loader columns, typed like the normalizer's output."""
    table = TABLES_BY_NAME[table_name]
    rows = list(rows)
    data: dict[str, pd.Series] = {}
    for name in load_columns(table):
        column = table.c[name]
        values = [row.get(name) for row in rows]
        if isinstance(column.type, sa.Float):
            data[name] = pd.Series([np.nan if v is None else v for v in values], dtype="float64")
        elif isinstance(column.type, sa.Integer):
            # nullable integers as pandas Int32 (with <NA>), positions as plain int64
            data[name] = pd.Series(values, dtype="Int32" if column.nullable else "int64")
        elif isinstance(column.type, sa.DateTime):
            data[name] = pd.Series(pd.to_datetime(values), dtype="datetime64[us]")
        else:
            data[name] = pd.Series(values, dtype="str")
    return pd.DataFrame(data, columns=load_columns(table))


def artist_row(aid: str, source: str | None, **attributes: Any) -> dict[str, Any]:
    return {"artist_id": aid, "source_track_id": source, **attributes}


def track_row(tid: str, artist: str, n: int, **overrides: Any) -> dict[str, Any]:
    row = {
        "track_id": tid,
        "analysis_sample_rate": 22050,
        "audio_md5": f"{n:032x}",
        "danceability": None,  # 0.0 in the files means "unknown"
        "duration": TRICKY[n % len(TRICKY)] + 200,
        "end_of_fade_in": 0.1 * n,
        "energy": None,
        "key": n % 12,
        "key_confidence": 1 / 3,
        "loudness": -7.123456789012345,
        "mode": 1,
        "mode_confidence": 0.5,
        "start_of_fade_out": 190.12345678901234,
        "tempo": 120.00000000000001,
        "time_signature": 4,
        "time_signature_confidence": 1.0,
        "artist_id": artist,
        "release": f"Release {n} {HONG_KONG}",
        "song_hotness": None if n % 2 else 0.6,
        "title": f"Title {n} {GURMUKHI} 🎸",
        "track_7digitalid": 1_000_000 + n,
        "year": None if n % 2 else 1999,
        "upload_timestamp": None if n == 3 else f"2011-02-0{n} 12:34:56.{n:06d}",
        "song_id": ("SO" + tid[2:]),
        "release_7digitalid": None,
        "analyzer_version": None,
        "genre": "" if n == 2 else None,  # empty text stays empty, not NULL
    }
    row.update(overrides)
    return row


def analysis_rows(table: str, tracks: list[str], per_track: int) -> list[dict[str, Any]]:
    singular = table.removeprefix("msd_")
    rows = []
    for t_index, tid in enumerate(tracks):
        for position in range(1, per_track + 1):
            k = t_index * 31 + position
            row = {
                "track_id": tid,
                f"track_{singular}_id": position,
                f"{singular}_confidence": None if k % 7 == 0 else TRICKY[k % len(TRICKY)],
                f"{singular}_start": 0.1 * position + t_index,
            }
            if table == "msd_segment":
                row.update(
                    segment_loudness_max=-60.0 + k,
                    segment_loudness_max_time=TRICKY[(k + 1) % len(TRICKY)],
                    segment_loudness_start=None,
                    **{f"p{i}": TRICKY[(k + i) % len(TRICKY)] for i in range(1, 13)},
                    **{f"t{i}": -TRICKY[(k + i) % len(TRICKY)] for i in range(1, 13)},
                )
            rows.append(row)
    return rows


def frames(rows: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, pd.DataFrame]:
    """A partition's frames from its rows per table, in the given order."""
    return {table: frame(table, table_rows) for table, table_rows in rows.items()}


def frames_aa(
    *, drop_last_track: bool = False, title: str | None = None
) -> dict[str, pd.DataFrame]:
    tracks = [track_id("A/A", n) for n in (1, 2, 3)]
    if drop_last_track:
        tracks = tracks[:2]
    owners = {tracks[0]: S, tracks[1]: X, **({tracks[2]: S} if len(tracks) > 2 else {})}
    f = frames(
        {
            "msd_r_term": [
                {"term_name": t}
                for t in ["rock", "Rock", "rock ", GURMUKHI, HONG_KONG, "café", "🎸"]
            ],
            "msd_r_mbtag": [{"mbtag_name": t} for t in [GURMUKHI, "punjabi"]],
            "msd_artist": [
                # a later track of the same artist, with other values: must lose to the smallest one
                artist_row(
                    S, track_id("A/A", 3), artist_name="WRONG (later track)", artist_lat=99.0
                ),
                artist_row(
                    S,
                    track_id("A/A", 1),
                    artist_mbid="8f2c5e1d-1d5e-4c0e-9a8b-2f1e3d4c5b6a",
                    artist_name=f"Shared {GURMUKHI}",
                    artist_lat=0.1,
                    artist_long=None,
                    artist_location=HONG_KONG,
                    artist_familiarity=1 / 3,
                    artist_hotttnesss=5e-324,
                    artist_7digitalid=12345,
                    artist_playmeid=None,
                ),
                artist_row(
                    X,
                    track_id("A/A", 2),
                    artist_name=LONG_NAME,
                    artist_lat=-33.8688,
                    artist_long=151.2093,
                    artist_location=ODD_TEXT,
                    artist_familiarity=1.7976931348623157e308,
                    artist_playmeid=-1,
                ),
                artist_row(Y, None),  # stub: only known as X's similar artist
                artist_row(Z, None),
            ],
            "msd_artist_term": [
                {"artist_id": S, "term_name": "rock", "term_freq": 0.9, "term_weight": 1 / 3},
                {"artist_id": S, "term_name": GURMUKHI, "term_freq": 1.0, "term_weight": 0.5},
                {"artist_id": X, "term_name": HONG_KONG, "term_freq": 5e-324, "term_weight": None},
                {"artist_id": X, "term_name": "Rock", "term_freq": 0.1, "term_weight": 0.2},
            ],
            "msd_artist_mbtag": [
                {"artist_id": S, "mbtag_name": GURMUKHI, "mbtag_count": 3},
                {"artist_id": X, "mbtag_name": "punjabi", "mbtag_count": None},
            ],
            "msd_artist_similarity": [
                {"artist_id_1": S, "artist_id_2": X, "similarity_rank": 1},
                {"artist_id_1": X, "artist_id_2": Y, "similarity_rank": 1},
                {"artist_id_1": X, "artist_id_2": Z, "similarity_rank": 2},
            ],
            "msd_track": [
                track_row(tid, owners[tid], n, **({"title": title} if title else {}))
                for n, tid in enumerate(tracks, start=1)
            ],
            "msd_bar": analysis_rows("msd_bar", tracks[:1], 3),  # others: 0 bars
            "msd_beat": analysis_rows("msd_beat", tracks, 4),
            "msd_section": analysis_rows("msd_section", tracks, 2),
            "msd_tatum": analysis_rows("msd_tatum", tracks, 5),
            "msd_segment": analysis_rows("msd_segment", tracks, 3),
        }
    )
    # Columns in any order are accepted.
    f["msd_track"] = f["msd_track"][list(reversed(f["msd_track"].columns))]
    return f


def frames_ab() -> dict[str, pd.DataFrame]:
    tracks = [track_id("A/B", n) for n in (1, 2)]
    return frames(
        {
            "msd_r_term": [
                {"term_name": t} for t in ["rock", BHANGRA, "1 13 165900 150", "NULL", ODD_TEXT]
            ],
            "msd_r_mbtag": [{"mbtag_name": t} for t in [BHANGRA, HONG_KONG, "22 6 19 4"]],
            "msd_artist": [
                artist_row(S, tracks[0], artist_name="Shared, as seen from A/B", artist_lat=1.0),
                artist_row(
                    Y,
                    tracks[1],
                    artist_name=BHANGRA,
                    artist_lat=31.1471,
                    artist_long=75.3412,
                    artist_location="Punjab",
                    artist_7digitalid=7,
                ),
                artist_row(X, None),
            ],
            "msd_artist_term": [
                {"artist_id": S, "term_name": "rock", "term_freq": 0.9, "term_weight": 1 / 3},
                {"artist_id": Y, "term_name": BHANGRA, "term_freq": 0.7, "term_weight": 0.6},
                {"artist_id": Y, "term_name": "rock ", "term_freq": 0.1, "term_weight": 0.1},
            ],
            "msd_artist_mbtag": [
                {"artist_id": Y, "mbtag_name": BHANGRA, "mbtag_count": 1},
                {"artist_id": Y, "mbtag_name": HONG_KONG, "mbtag_count": 2},
                {"artist_id": S, "mbtag_name": GURMUKHI, "mbtag_count": 3},
            ],
            "msd_artist_similarity": [
                {"artist_id_1": Y, "artist_id_2": X, "similarity_rank": 1},
                {"artist_id_1": S, "artist_id_2": X, "similarity_rank": 1},
            ],
            "msd_track": [track_row(tracks[0], S, 4), track_row(tracks[1], Y, 5)],
            "msd_bar": analysis_rows("msd_bar", tracks, 2),
            "msd_beat": analysis_rows("msd_beat", tracks, 3),
            "msd_section": analysis_rows("msd_section", tracks, 1),
            "msd_tatum": analysis_rows("msd_tatum", tracks, 6),
            "msd_segment": analysis_rows("msd_segment", tracks, 2),
        }
    )


# --------------------------------------------------------------------------------------------
# Comparing contents by natural key

Snapshot = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


def canonical(value: Any) -> Any:
    """Comparable form: floats by their bits, NaN/NA/NaT as None, numpy scalars as Python."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float | np.floating):
        return ("float", struct.pack(">d", float(value)).hex())
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def frame_rows(name: str, df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{c: canonical(v) for c, v in row.items()} for row in df.to_dict("records")]


def expected_state(*loads: Mapping[str, pd.DataFrame], partitions: Iterable[str]) -> Snapshot:
    """What the tables must hold after ``loads`` (in order) of ``partitions``: the rules of
    docs/partitions-and-reruns.md and docs/data-model.md spelled out independently of the loader's
    SQL. Track rows of a partition are replaced; shared keys are inserted when missing; an artist
    row whose source track id is not larger than the stored one (a rerun of the winner included)
    wins, and its non-NULL values replace; any other incoming row only fills the stored row's NULL
    columns; pairs (terms, tags, similarity) gain values only where theirs are NULL."""
    state: Snapshot = {name: {} for name in TABLES_BY_NAME}
    for frames, partition in zip(loads, partitions, strict=True):
        lo, hi = partition_track_range(partition)
        for table in TRACK_TABLES:
            rows = state[table.name]
            for key in [k for k in rows if lo <= k[0] < hi]:
                del rows[key]
        for name, df in frames.items():
            keys = NATURAL_KEYS[name]
            columns = load_columns(TABLES_BY_NAME[name])
            for row in frame_rows(name, df):
                key = tuple(row[k] for k in keys)
                values = tuple(row[c] for c in columns)
                current = state[name].get(key)
                if current is None:
                    state[name][key] = values
                    continue
                wins = False
                if name == "msd_artist":
                    src = columns.index("source_track_id")
                    new, old = values[src], current[src]
                    wins = new is not None and (old is None or new <= old)
                first, second = (values, current) if wins else (current, values)
                merged = tuple(
                    a if a is not None else b for a, b in zip(first, second, strict=True)
                )
                if name == "msd_artist" and not wins:
                    merged = (*merged[:src], current[src], *merged[src + 1 :])
                state[name][key] = merged
    return state


def snapshot(engine: sa.Engine, tables: Iterable[str] = TABLES_BY_NAME) -> Snapshot:
    result: Snapshot = {}
    with engine.connect() as conn:
        for name in tables:
            table = warehouse_table(conn, name)
            columns = load_columns(TABLES_BY_NAME[name])
            keys = NATURAL_KEYS[name]
            rows = conn.execute(sa.select(*[table.c[c] for c in columns])).all()
            by_key = {}
            for row in rows:
                values = tuple(canonical(v) for v in row)
                by_key[tuple(values[columns.index(k)] for k in keys)] = values
            assert len(by_key) == len(rows), f"{name}: duplicate natural keys"
            result[name] = by_key
    return result


def assert_same(actual: Snapshot, expected: Snapshot) -> None:
    for name in expected:
        columns = load_columns(TABLES_BY_NAME[name])
        missing = set(expected[name]) - set(actual[name])
        extra = set(actual[name]) - set(expected[name])
        assert not missing and not extra, f"{name}: missing {missing}, extra {extra}"
        for key, values in expected[name].items():
            got = actual[name][key]
            diffs = [(c, e, g) for c, e, g in zip(columns, values, got, strict=True) if e != g]
            assert not diffs, f"{name} {key}: (column, expected, got) {diffs}"


def row_of(state: Snapshot, name: str, key: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(load_columns(TABLES_BY_NAME[name]), state[name][key], strict=True))


def load_both(engine: sa.Engine) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    aa, ab = frames_aa(), frames_ab()
    load_partition(engine, "A/A", aa)
    load_partition(engine, "A/B", ab)
    return aa, ab


# --------------------------------------------------------------------------------------------
# Tests


def test_partition_track_range() -> None:
    assert partition_track_range("A/B") == ("TRAB", "TRAC")
    assert partition_track_range("A/A") == ("TRAA", "TRAB")
    assert partition_track_range("A/Z") == ("TRAZ", "TRB")
    assert partition_track_range("Z/Z") == ("TRZZ", "TS")
    for bad in ["ab", "A/b", "AB", "A/B/C", "", "A-B", "AA/B", 5]:
        with pytest.raises(ValueError, match="partition key"):
            partition_track_range(bad)  # type: ignore[arg-type]


def test_round_trip_every_value(engine: sa.Engine) -> None:
    aa, ab = load_both(engine)
    actual = snapshot(engine)
    assert_same(actual, expected_state(aa, ab, partitions=["A/A", "A/B"]))

    # Spot checks that do not rely on expected_state.
    assert {k[0] for k in actual["msd_r_term"]} == {
        "rock",
        "Rock",
        "rock ",
        GURMUKHI,
        HONG_KONG,
        "café",
        "🎸",
        BHANGRA,
        "1 13 165900 150",
        "NULL",
        ODD_TEXT,
    }
    assert {k[0] for k in actual["msd_r_mbtag"]} == {
        GURMUKHI,
        "punjabi",
        BHANGRA,
        HONG_KONG,
        "22 6 19 4",
    }
    x = row_of(actual, "msd_artist", (X,))
    assert x["artist_name"] == LONG_NAME and len(LONG_NAME) == 1024
    assert x["artist_location"] == ODD_TEXT
    assert x["artist_familiarity"] == canonical(1.7976931348623157e308)
    s = row_of(actual, "msd_artist", (S,))
    assert s["artist_hotttnesss"] == canonical(5e-324)
    assert s["artist_long"] is None and s["artist_playmeid"] is None
    term = row_of(actual, "msd_artist_term", (X, HONG_KONG))
    assert term["term_freq"] == canonical(5e-324) and term["term_weight"] is None
    track = row_of(actual, "msd_track", (track_id("A/A", 1),))
    assert track["upload_timestamp"] == datetime(2011, 2, 1, 12, 34, 56, 1)
    assert track["year"] is None and track["song_hotness"] is None and track["danceability"] is None
    assert row_of(actual, "msd_track", (track_id("A/A", 3),))["upload_timestamp"] is None
    assert row_of(actual, "msd_track", (track_id("A/A", 2),))["genre"] == ""
    with engine.connect() as conn:
        # Bit-exactness checked by the database itself, not only after a driver round trip.
        tatum = warehouse_table(conn, "msd_tatum")
        hits = conn.execute(
            sa.select(sa.func.count()).select_from(tatum).where(tatum.c.tatum_confidence == 5e-324)
        ).scalar_one()
    expected_hits = sum(
        (df["tatum_confidence"] == 5e-324).sum() for df in (aa["msd_tatum"], ab["msd_tatum"])
    )
    assert hits == expected_hits > 0


def test_rerun_is_idempotent(engine: sa.Engine) -> None:
    load_both(engine)
    before = snapshot(engine)
    written = load_partition(engine, "A/A", frames_aa())
    assert_same(snapshot(engine), before)
    for table in SHARED_TABLES:
        if table.name != "msd_artist":  # artist rows are re-merged (same values) on a rerun
            assert written[table.name] == 0, table.name  # nothing new
    assert written["msd_track"] == 3 and written["msd_tatum"] == 15
    for name in TABLES_BY_NAME:
        assert count_duplicate_natural_keys(engine, name) == 0


def test_rerun_never_deletes_shared_rows(engine: sa.Engine) -> None:
    aa, ab = load_both(engine)
    shared = [t.name for t in SHARED_TABLES]
    before = snapshot(engine, shared)
    # A/B again, without any shared rows: artists and tags of A/B (and of A/A) stay.
    empty_shared = {**ab, **{name: ab[name].iloc[0:0] for name in shared}}
    load_partition(engine, "A/B", empty_shared)
    assert_same(snapshot(engine, shared), before)
    # A/A with one track fewer: its track rows go, the shared rows it brought stay.
    smaller = frames_aa(drop_last_track=True)
    for name in ("msd_artist_term", "msd_artist_mbtag", "msd_artist_similarity"):
        smaller[name] = smaller[name].iloc[:1]
    load_partition(engine, "A/A", smaller)
    assert_same(snapshot(engine, shared), before)
    expected = expected_state(
        aa, ab, empty_shared, smaller, partitions=["A/A", "A/B", "A/B", "A/A"]
    )
    assert_same(snapshot(engine), expected)
    assert count_rows(engine, "msd_track", "A/A") == 2


def test_artist_choice_independent_of_load_order(engine: sa.Engine) -> None:
    load_both(engine)
    a_then_b = snapshot(engine)
    drop_schema(engine)
    ensure_schema(engine)
    load_partition(engine, "A/B", frames_ab())
    b_then_a_first = snapshot(engine, ["msd_artist"])
    load_partition(engine, "A/A", frames_aa())
    b_then_a = snapshot(engine)
    assert_same(b_then_a, a_then_b)
    # Shared artist: A/B's row first, replaced by A/A's smaller source track.
    assert row_of(b_then_a_first, "msd_artist", (S,))["source_track_id"] == track_id("A/B", 1)
    s = row_of(b_then_a, "msd_artist", (S,))
    assert s["source_track_id"] == track_id("A/A", 1) and s["artist_name"] == f"Shared {GURMUKHI}"
    # Y: full row from A/B, never overwritten by A/A's stub; Z: stub only.
    y = row_of(b_then_a, "msd_artist", (Y,))
    assert y["artist_name"] == BHANGRA and y["source_track_id"] == track_id("A/B", 2)
    z = row_of(b_then_a, "msd_artist", (Z,))
    assert all(v is None for c, v in z.items() if c != "artist_id")


@pytest.mark.parametrize("failure", ["duplicate_key", "foreign_key"])
def test_failed_load_keeps_previous_contents(engine: sa.Engine, failure: str) -> None:
    aa, ab = load_both(engine)
    before = snapshot(engine)
    broken = frames_aa(title="second version")
    broken["msd_r_term"] = pd.concat(
        [broken["msd_r_term"], frame("msd_r_term", [{"term_name": "new term"}])]
    )
    if failure == "duplicate_key":  # the last table fails after everything else was written
        segments = broken["msd_segment"]
        broken["msd_segment"] = pd.concat([segments, segments.iloc[:1]])
    else:  # a track whose artist exists nowhere
        tracks = broken["msd_track"].copy()
        tracks.loc[tracks.index[-1], "artist_id"] = artist_id("NOSUCHARTIST")
        broken["msd_track"] = tracks
    with pytest.raises(sa.exc.IntegrityError):
        load_partition(engine, "A/A", broken)
    assert_same(snapshot(engine), before)
    fixed = frames_aa(title="second version")
    fixed["msd_r_term"] = broken["msd_r_term"]
    load_partition(engine, "A/A", fixed)
    after = snapshot(engine)
    assert_same(after, expected_state(aa, ab, fixed, partitions=["A/A", "A/B", "A/A"]))
    assert row_of(after, "msd_track", (track_id("A/A", 1),))["title"] == "second version"
    assert ("new term",) in after["msd_r_term"]


def _killer(engine: sa.Engine) -> Callable[[sa.Connection], None]:
    if engine.dialect.name == "postgresql":

        def kill(conn: sa.Connection) -> None:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with engine.connect() as other:
                assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar()
                other.commit()

        return kill

    def kill(conn: sa.Connection) -> None:
        connection_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
        with engine.connect() as other:
            other.exec_driver_sql(f"KILL {int(connection_id)}")

    return kill


def test_killed_connection_rolls_back(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("no server connection to kill (SQLite: see test_failed_load_keeps_...)")
    aa, ab = load_both(engine)
    before = snapshot(engine)
    kill = _killer(engine)
    real_bulk_insert = partition_load.bulk_insert
    killed = []

    def bulk_insert_then_die(conn, table, df, **kwargs):  # type: ignore[no-untyped-def]
        if table.name == "msd_beat" and not killed:  # msd_track and msd_bar already written
            kill(conn)
            killed.append(table.name)
        return real_bulk_insert(conn, table, df, **kwargs)

    monkeypatch.setattr(partition_load, "bulk_insert", bulk_insert_then_die)
    second = frames_aa(title="after the kill")
    with pytest.raises(sa.exc.DBAPIError):
        load_partition(engine, "A/A", second)
    assert killed == ["msd_beat"]
    assert_same(snapshot(engine), before)
    load_partition(engine, "A/A", second)  # the rerun succeeds
    assert_same(snapshot(engine), expected_state(aa, ab, second, partitions=["A/A", "A/B", "A/A"]))


def test_earlier_pipeline_count_queries(engine: sa.Engine) -> None:
    aa, ab = load_both(engine)
    expected = expected_state(aa, ab, partitions=["A/A", "A/B"])
    with engine.connect() as conn:
        for name in TABLES_BY_NAME:
            assert conn.exec_driver_sql(f"SELECT COUNT(1) FROM {name}").scalar() == len(
                expected[name]
            )
    assert total_tracks(engine) == 5


def test_count_rows_per_partition(engine: sa.Engine) -> None:
    load_both(engine)
    # Rows in A/A and in A/B. Track tables: rows of the partition's tracks.
    track_tables = {
        "msd_track": (3, 2),
        "msd_bar": (3, 4),
        "msd_beat": (12, 6),
        "msd_section": (6, 2),
        "msd_tatum": (15, 12),
        "msd_segment": (9, 4),
    }
    # Artist tables: artists with a track in the partition (A/A: S, X; A/B: S, Y).
    artist_tables = {
        "msd_artist": (2, 2),
        "msd_artist_term": (4, 4),
        "msd_artist_mbtag": (2, 3),
        "msd_artist_similarity": (3, 2),
    }
    dictionaries = {"msd_r_term": (11, 11), "msd_r_mbtag": (5, 5)}  # all rows, any partition
    for name, (in_aa, in_ab) in {**track_tables, **artist_tables, **dictionaries}.items():
        assert count_rows(engine, name, "A/A") == in_aa, name
        assert count_rows(engine, name, "A/B") == in_ab, name
        assert count_rows(engine, name, "B/A") == (in_aa if name in dictionaries else 0), name
        assert count_duplicate_natural_keys(engine, name, "A/A") == 0
        assert count_orphan_foreign_keys(engine, name, "A/A") == 0
    assert count_rows(engine, "msd_artist") == 4  # with stub Z
    with engine.connect() as conn:  # a Connection works as well as an Engine
        assert count_rows(conn, "msd_tatum", None) == 27
    with pytest.raises(ValueError, match="unknown table"):
        count_rows(engine, "msd_nope", None)


def _fk_checks_off(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    elif conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")


def test_queries_detect_planted_duplicates_and_orphans(engine: sa.Engine) -> None:
    load_both(engine)
    bar = warehouse_table(engine, "msd_bar")
    # msd_bar as an earlier, unconstrained database would have it: no unique key.
    loose = sa.Table(
        bar.name,
        sa.MetaData(),
        *[
            sa.Column(c.name, c.type, primary_key=c.identity is not None, autoincrement=True)
            for c in bar.columns
        ],
        mysql_charset="utf8mb4",
    )
    with engine.begin() as conn:
        columns = [bar.c[c] for c in load_columns(bar)]
        rows = [dict(r._mapping) for r in conn.execute(sa.select(*columns).order_by(*columns[:2]))]
        bar.drop(conn)
        loose.create(conn)
        conn.execute(sa.insert(loose), rows)
        conn.execute(sa.insert(loose), [rows[0], rows[0]])  # the first A/A bar twice more
    assert count_duplicate_natural_keys(engine, "msd_bar", "A/A") == 1
    assert count_duplicate_natural_keys(engine, "msd_bar", "A/B") == 0
    assert count_duplicate_natural_keys(engine, "msd_bar", None) == 1
    with pytest.raises(SchemaMismatchError, match=r"msd_bar: no primary key or unique constraint"):
        ensure_schema(engine)

    ghost_track, ghost_artist = track_id("A/A", 999), artist_id("GHOST")
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # PRAGMA only applies outside a transaction
        try:
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute(
                "INSERT INTO msd_beat (track_id, track_beat_id) VALUES (?, 1)", (ghost_track,)
            )
            raw.execute(
                "INSERT INTO msd_track (track_id, artist_id) VALUES (?, ?)",
                (track_id("A/A", 998), ghost_artist),
            )
            raw.execute(
                "INSERT INTO msd_artist_term (artist_id, term_name) VALUES (?, 'x')",
                (ghost_artist,),
            )
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
            raw.close()
    else:
        with engine.begin() as conn:
            _fk_checks_off(conn)
            conn.execute(
                sa.insert(warehouse_table(conn, "msd_beat")),
                {"track_id": ghost_track, "track_beat_id": 1},
            )
            conn.execute(
                sa.insert(warehouse_table(conn, "msd_track")),
                {"track_id": track_id("A/A", 998), "artist_id": ghost_artist},
            )
            conn.execute(
                sa.insert(warehouse_table(conn, "msd_artist_term")),
                {"artist_id": ghost_artist, "term_name": "x"},
            )
        if engine.dialect.name in ("mysql", "mariadb"):
            engine.dispose()  # FOREIGN_KEY_CHECKS is per session: do not pool it
    assert count_orphan_foreign_keys(engine, "msd_beat", "A/A") == 1
    assert count_orphan_foreign_keys(engine, "msd_beat", "A/B") == 0
    assert count_orphan_foreign_keys(engine, "msd_track", "A/A") == 1
    assert count_orphan_foreign_keys(engine, "msd_track", None) == 1
    assert count_orphan_foreign_keys(engine, "msd_artist_term", None) == 1
    # An artist without tracks belongs to no partition (see queries.py).
    assert count_orphan_foreign_keys(engine, "msd_artist_term", "A/A") == 1
    assert count_orphan_foreign_keys(engine, "msd_artist_similarity", None) == 0
    assert count_orphan_foreign_keys(engine, "msd_r_term", None) == 0


@pytest.mark.parametrize(
    "change", ["missing_column", "extra_column", "retyped_column", "version", "fingerprint"]
)
def test_schema_mismatch_is_detected(engine: sa.Engine, change: str) -> None:
    dialect = engine.dialect.name
    statements = {
        "missing_column": ["ALTER TABLE msd_section DROP COLUMN section_start"],
        "extra_column": ["ALTER TABLE msd_track ADD COLUMN loaded_by VARCHAR(20)"],
        "retyped_column": {
            "postgresql": ["ALTER TABLE msd_beat ALTER COLUMN beat_start TYPE real"],
            "mysql": ["ALTER TABLE msd_beat MODIFY beat_start FLOAT"],
        }.get(dialect),
        "version": ["UPDATE msd_schema_version SET schema_version = 0"],
        "fingerprint": ["UPDATE msd_schema_version SET fingerprint = 'f00d'"],
    }[change]
    if statements is None:
        pytest.skip("SQLite cannot retype a column in place (and REAL is 64-bit there)")
    expected = {
        "missing_column": r"msd_section: missing column\(s\) section_start",
        "extra_column": r"msd_track: extra column\(s\) loaded_by",
        "retyped_column": r"msd_beat\.beat_start: .*32-bit float.*64-bit float",
        "version": rf"schema version 0, this code writes version {SCHEMA_VERSION}",
        "fingerprint": r"recorded fingerprint f00d differs",
    }[change]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    with pytest.raises(SchemaMismatchError, match=expected) as raised:
        ensure_schema(engine)
    assert "Nothing was written" in str(raised.value)
    with pytest.raises(SchemaMismatchError):  # still refused on the next call
        ensure_schema(engine)


def test_tables_of_another_pipeline_are_refused(engine: sa.Engine) -> None:
    drop_schema(engine)
    legacy = sa.Table(
        "msd_artist_term",
        sa.MetaData(),
        sa.Column("artist_term_id", sa.Integer, primary_key=True),
        sa.Column("artist_id", sa.CHAR(18)),
        sa.Column("term_name", sa.String(50)),
    )
    legacy.create(engine)
    try:
        with pytest.raises(SchemaMismatchError) as raised:
            ensure_schema(engine)
        message = str(raised.value)
        assert "msd_artist_term: missing column(s) term_freq, term_weight" in message
        assert (
            "msd_artist_term.term_name: database type VARCHAR(50) holds 50 characters, "
            "the definition needs 256" in message
        )
        assert "msd_artist_term.artist_id: nullable" in message
        # Nothing was created next to the foreign table.
        assert set(sa.inspect(engine).get_table_names()) == {"msd_artist_term"}
    finally:
        legacy.drop(engine)


def test_invalid_frames_are_rejected_before_writing(engine: sa.Engine) -> None:
    frames = frames_aa()
    with pytest.raises(ValueError, match=r"missing \['msd_segment'\]"):
        load_partition(engine, "A/A", {k: v for k, v in frames.items() if k != "msd_segment"})
    with pytest.raises(ValueError, match=r"unexpected column\(s\) \['bar_id'\]"):
        load_partition(engine, "A/A", {**frames, "msd_bar": frames["msd_bar"].assign(bar_id=1)})
    with pytest.raises(ValueError, match="outside partition A/B"):
        load_partition(engine, "A/B", frames)
    with pytest.raises(ValueError, match="partition key"):
        load_partition(engine, "a/a", frames)
    # The analysis tables' track_id is no database constraint: the loader refuses the orphan.
    orphan = frames["msd_beat"].iloc[:1].assign(track_id=track_id("A/A", 77))
    beats = pd.concat([frames["msd_beat"], orphan])
    with pytest.raises(ValueError, match=r"frame msd_beat: 1 row\(s\) whose track_id is not in"):
        load_partition(engine, "A/A", {**frames, "msd_beat": beats})
    assert total_tracks(engine) == 0


def test_analysis_references_are_checked_not_constrained(engine: sa.Engine) -> None:
    ensure_schema(engine)
    inspector = sa.inspect(engine)
    schema = "dbo" if engine.dialect.name == "mssql" else None
    for table in TRACK_TABLES[1:]:
        assert inspector.get_foreign_keys(table.name, schema=schema) == [], table.name
        [reference] = references(table.name)
        assert (reference.column, reference.parent_table, reference.enforced) == (
            "track_id",
            "msd_track",
            False,
        )
    [track_fk] = inspector.get_foreign_keys("msd_track", schema=schema)
    assert track_fk["referred_table"] == "msd_artist"
    assert [r.enforced for r in references("msd_artist_similarity")] == [True, True]


def test_missing_keys_of_analysis_tables_are_exact(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = frames_aa()
    load_partition(engine, "A/A", frames)
    t1, t2, t3 = (track_id("A/A", n) for n in (1, 2, 3))
    with engine.begin() as conn:
        tatum = warehouse_table(conn, "msd_tatum")
        gone = sa.or_(
            sa.and_(tatum.c.track_id == t1, tatum.c.track_tatum_id == 5),  # the range shrinks
            sa.and_(tatum.c.track_id == t2, tatum.c.track_tatum_id == 3),  # a gap
            tatum.c.track_id == t3,  # the whole track
        )
        assert conn.execute(sa.delete(tatum).where(gone)).rowcount == 7
        conn.execute(sa.insert(tatum), {"track_id": t1, "track_tatum_id": 9})  # a key too many

    def verdicts() -> list[verify.TableVerdict]:
        with engine.connect() as conn:
            return verify.verify_partition(conn, "A/A", frames)

    expected = {"database_rows": 9, "frame_rows": 15, "missing_keys": 7, "duplicates": 0}
    for keys_per_query in (500, 1):  # the gapped tracks' keys fetched in one query, or many
        monkeypatch.setattr(verify, "keys_per_query", lambda conn, n=keys_per_query: n)
        verdict = next(v for v in verdicts() if v.table == "msd_tatum")
        actual = {k: getattr(verdict, k) for k in expected}
        assert actual == expected, keys_per_query
        assert not verdict.passed
    others = [v for v in verdicts() if v.table != "msd_tatum"]
    assert all(v.passed for v in others), others


def test_bulk_insert_chunks_and_values(engine: sa.Engine) -> None:
    frames = frames_aa()
    with engine.begin() as conn:
        bulk_insert(conn, warehouse_table(conn, "msd_artist"), frames["msd_artist"].iloc[1:3])
        bulk_insert(conn, warehouse_table(conn, "msd_track"), frames["msd_track"].iloc[:2])
        tatums = frames["msd_tatum"]
        tatums = tatums[tatums["track_id"] < track_id("A/A", 3)]
        assert bulk_insert(conn, warehouse_table(conn, "msd_tatum"), tatums, chunk_rows=3) == 10
    stored = snapshot(engine, ["msd_tatum"])["msd_tatum"]
    assert len(stored) == 10
    for row in frame_rows("msd_tatum", tatums):
        key = (row["track_id"], row["track_tatum_id"])
        assert stored[key] == tuple(row[c] for c in load_columns(TABLES_BY_NAME["msd_tatum"]))


def test_sqlite_engine_settings_and_concurrent_loads(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    first, second = create_engine_for_url(url), create_engine_for_url(url)
    try:
        ensure_schema(first)
        with first.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 60_000
        load_partition(first, "A/A", frames_aa())  # shared artists exist before both start
        errors: list[BaseException] = []

        def run(engine: sa.Engine, key: str, frames: dict[str, pd.DataFrame]) -> None:
            try:
                for _ in range(3):
                    load_partition(engine, key, frames)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(first, "A/A", frames_aa())),
            threading.Thread(target=run, args=(second, "A/B", frames_ab())),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert total_tracks(first) == 5
        assert count_rows(second, "msd_tatum", None) == 27
    finally:
        first.dispose()
        second.dispose()


def test_concurrent_loads_of_one_folder_and_another(engine: sa.Engine) -> None:
    """Two loads of A/A and one of A/B at the same time, each from its own engine, five times
    over: none fails, and the tables hold each row once, as after loading A/A then A/B."""
    aa, ab = frames_aa(), frames_ab()
    url = engine.url.render_as_string(hide_password=False)
    errors: list[BaseException] = []

    def run(key: str, frames: dict[str, pd.DataFrame]) -> None:
        own = create_engine_for_url(url)
        try:
            for _ in range(5):
                load_partition(own, key, frames)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [
        threading.Thread(target=run, args=("A/A", aa)),
        threading.Thread(target=run, args=("A/A", aa)),
        threading.Thread(target=run, args=("A/B", ab)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    # The documented rules make the result independent of the order the loads committed in.
    expected = expected_state(aa, ab, partitions=["A/A", "A/B"])
    assert expected == expected_state(ab, aa, partitions=["A/B", "A/A"])
    assert_same(snapshot(engine), expected)


def test_value_conversion_is_exact_and_strict() -> None:
    from msd_dagster.warehouse.rows import normalize_column, rows_of
    from msd_dagster.warehouse.schema import msd_track

    year, title, tempo = msd_track.c.year, msd_track.c.title, msd_track.c.tempo
    for series in (
        pd.Series([1999, None], dtype="Int32"),
        pd.Series([1999.0, np.nan]),  # NaN forced float64
        pd.Series([1999, None], dtype=object),
    ):
        values = normalize_column(series, year).objects().tolist()
        assert values == [1999, None] and type(values[0]) is int
    with pytest.raises(ValueError, match="non-integral"):
        normalize_column(pd.Series([1999.5]), year)
    with pytest.raises(TypeError, match="expected text, found bytes"):
        normalize_column(pd.Series([b"\xe0\xa8\xaa"]), title)
    assert normalize_column(pd.Series([np.nan, np.nan]), title).objects().tolist() == [None, None]
    floats = normalize_column(pd.Series(TRICKY + [np.nan]), tempo).objects().tolist()
    assert [canonical(v) for v in floats] == [canonical(v) for v in TRICKY] + [None]
    stamp = msd_track.c.upload_timestamp
    aware = pd.Series(pd.to_datetime(["2011-02-01 14:34:56.000001+02:00", None], utc=True))
    assert normalize_column(aware, stamp).objects().tolist() == [
        datetime(2011, 2, 1, 12, 34, 56, 1),
        None,
    ]
    text = pd.Series([GURMUKHI, None, ""], dtype="str")
    rows = rows_of([normalize_column(text, title), normalize_column(text.isna(), year)])
    assert rows == [(GURMUKHI, 0), (None, 1), ("", 0)]


def test_table_row_counts_are_cheap_and_say_how_they_were_counted(engine: sa.Engine) -> None:
    if engine.dialect.name == "postgresql":
        # n_live_tup is a running tally per table: earlier tests' loads into these tables
        # (an autoanalyze replaces it with a sample) can leave it off by a few rows after they
        # are emptied. New tables start it at 0, so the figure below is this test's alone.
        drop_schema(engine)
        ensure_schema(engine)
    load_partition(engine, "A/A", frames_aa())
    load_partition(engine, "A/B", frames_ab())
    exact = {table.name: count_rows(engine, table.name) for table in MSD_TABLES}
    # PostgreSQL's sessions report their statistics when idle for a while or when they end.
    engine.dispose()
    deadline = time.monotonic() + 20
    while True:
        counts, method = table_row_counts(engine)
        if counts == exact or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(counts) == set(exact)
    if engine.dialect.name == "sqlite":
        assert method.startswith("upper bound") and counts == exact
    elif engine.dialect.name == "postgresql":
        assert method == "estimate: pg_stat_user_tables.n_live_tup" and counts == exact
    else:  # InnoDB samples: an estimate, of the right size
        assert method == "estimate: information_schema.TABLES.TABLE_ROWS"
        assert all(0 <= counts[t] <= 3 * exact[t] + 10 for t in exact), (counts, exact)


# --------------------------------------------------------------------------------------------
# PostgreSQL: one physical partition per folder

_FOLDER_PARTITIONS = """
SELECT c.relname, p.relname, c.relfilenode, pg_total_relation_size(c.oid),
       pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
"""


def _folder_partitions(engine: sa.Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {name: tuple(rest) for name, *rest in conn.exec_driver_sql(_FOLDER_PARTITIONS)}


def test_postgresql_reload_truncates_the_folders_own_partitions(
    server_database: Callable[[str], ServerDatabase],
) -> None:
    engine = server_database("postgresql").engine
    empty_schema(engine)
    aa, ab = load_both(engine)
    first = _folder_partitions(engine)
    analysis = [t.name for t in TRACK_TABLES if t.name != "msd_track"]
    assert sorted(first) == sorted(f"{t}_p_{k}" for t in analysis for k in ("aa", "ab"))
    assert first["msd_bar_p_ab"][0] == "msd_bar"
    bounds = re.sub(r" +'", "'", first["msd_bar_p_ab"][3])  # CHAR(18) pads them
    assert bounds == "FOR VALUES FROM ('TRAB') TO ('TRAC')"
    with engine.connect() as conn:
        # The identity key is each partition's primary key; the natural key is unique overall.
        keys = conn.exec_driver_sql(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype IN ('p', 'u') "
            "AND conrelid IN ('msd_bar'::regclass, 'msd_bar_p_aa'::regclass)"
        ).all()
        assert sorted(keys) == [
            ("msd_bar", "u", "UNIQUE (track_id, track_bar_id)"),
            ("msd_bar_p_aa", "p", "PRIMARY KEY (bar_id)"),
            ("msd_bar_p_aa", "u", "UNIQUE (track_id, track_bar_id)"),
        ]
        for table in analysis:
            for key, frames in (("aa", aa), ("ab", ab)):
                own = conn.exec_driver_sql(f"SELECT count(*) FROM {table}_p_{key}").scalar()
                assert own == len(frames[table]) > 0, (table, key)
    before = snapshot(engine)
    for _ in range(3):
        load_partition(engine, "A/A", aa)
    assert_same(snapshot(engine), before)
    again = _folder_partitions(engine)
    for table in analysis:
        # A TRUNCATE gives the partition a new file and frees the old one when it commits; a
        # DELETE would keep the file and the old rows' space in it.
        (_, node_aa, size_aa, _), (_, node_ab, _, _) = (
            first[f"{table}_p_aa"],
            first[f"{table}_p_ab"],
        )
        assert again[f"{table}_p_aa"][1] != node_aa and again[f"{table}_p_aa"][2] == size_aa
        assert again[f"{table}_p_ab"][1] == node_ab  # another folder's partition is untouched


def test_postgresql_tables_made_before_the_partitioning_still_load(
    server_database: Callable[[str], ServerDatabase],
) -> None:
    engine = server_database("postgresql").engine
    drop_schema(engine)
    try:
        with engine.begin() as conn:  # the plain tables of earlier versions: same definitions
            for table in (msd_schema_version, *MSD_TABLES):
                table.create(conn)
        ensure_schema(engine)  # accepted as they are
        load_both(engine)
        before = snapshot(engine)
        load_partition(engine, "A/A", frames_aa())
        assert_same(snapshot(engine), before)
        assert _folder_partitions(engine) == {}
        assert count_rows(engine, "msd_bar") == len(frames_aa()["msd_bar"]) + len(
            frames_ab()["msd_bar"]
        )
    finally:
        drop_schema(engine)
        ensure_schema(engine)
