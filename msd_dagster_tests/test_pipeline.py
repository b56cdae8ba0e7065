"""The real Dagster asset graph end to end: raw -> normalized -> warehouse, plus the checks.

Every test runs ``msd_dagster.definitions.defs`` (assets, checks, sensor, CLI) with resources
pointed at temporary copies: a generated dataset (``pipeline_dataset``) or the real samples in
``../shared``, a temporary SQLite file or a fresh PostgreSQL / MariaDB database, and a temporary
Parquet folder. Runs are in process (``dg.materialize``) except for the CLI tests.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import h5py
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from msd_dagster.commands.load_steps import database_problem
from msd_dagster.defs import sensors
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import MsdSourceResource, WarehouseResource
from msd_dagster.defs.tables import warehouse_key
from msd_dagster.generate import GeneratedDataset
from msd_dagster.instance import recommended_dagster_yaml
from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.schema import MSD_TABLES, NATURAL_KEYS, SHARED_TABLES
from msd_dagster_tests.db_fixtures import SERVERS, ServerDatabase, empty_schema
from msd_dagster_tests.pipeline_helpers import (
    PARTITIONS_DEF_NAME,
    PIPELINE_FOLDERS,
    PIPELINE_SONGS,
    RAW_KEY,
    ROWS_CHECK,
    SONGS_KEY,
    UNICODE_MBTAGS,
    PipelineTarget,
    assert_partition_run_ok,
    check_evaluations,
    dump_tables,
    expected_row_counts,
    fast_folder,
    materialization_metadata,
    partition_tracks,
    row_counts,
    sqlite_url,
    table_rows,
)
from msd_dagster_tests.shared_data import REAL_SUBSET, real_song_paths

ANALYSIS = {
    "msd_bar": "bars",
    "msd_beat": "beats",
    "msd_section": "sections",
    "msd_tatum": "tatums",
    "msd_segment": "segments",
}
REPO = Path(__file__).resolve().parents[1]
SINGULAR = {"msd_bar": "bar", "msd_beat": "beat", "msd_section": "section"}
SINGULAR |= {"msd_tatum": "tatum", "msd_segment": "segment"}


def exact(value: Any, zero_sign: bool = True) -> tuple[str, Any]:
    """A value compared exactly: floats by their bits (``float.hex``), everything by type.

    ``zero_sign=False`` treats -0.0 as 0.0: SQLite (REAL affinity stores integral values as
    integers) and the MariaDB server both store -0.0 as 0.0; only PostgreSQL keeps the sign.
    """
    if isinstance(value, float):
        return ("float", (value if zero_sign or value != 0 else 0.0).hex())
    return (type(value).__name__, value)


def assert_same_contents(
    actual: dict[str, list[tuple]],
    expected: dict[str, list[tuple]],
    label: str,
    zero_sign: bool = True,
) -> None:
    assert sorted(actual) == sorted(expected)
    for table in expected:
        a, e = actual[table], expected[table]
        assert len(a) == len(e), f"{label}: {table} has {len(a)} rows, expected {len(e)}"
        for i, (row_a, row_e) in enumerate(zip(a, e, strict=True)):
            if [exact(v, zero_sign) for v in row_a] != [exact(v, zero_sign) for v in row_e]:
                pytest.fail(f"{label}: {table} row {i} differs:\n  {row_a!r}\n  {row_e!r}")


def negative_zeros(dump: dict[str, list[tuple]]) -> int:
    return sum(
        1
        for rows in dump.values()
        for row in rows
        for v in row
        if isinstance(v, float) and v == 0 and math.copysign(1, v) < 0
    )


def source_negative_zeros(dataset: GeneratedDataset) -> int:
    """-0.0 values in the analysis arrays of the generated song files."""
    total = 0
    for track_id in dataset.track_ids:
        with h5py.File(dataset.track_path(track_id), "r") as f:
            for name, item in f["analysis"].items():
                if name != "songs":
                    values = item[:]
                    total += int(np.count_nonzero((values == 0) & np.signbit(values)))
    return total


def assert_unique_natural_keys(dump: dict[str, list[tuple]], engine: sa.Engine) -> None:
    with engine.connect() as conn:
        for table in MSD_TABLES:
            names = [
                c.name for c in warehouse_table(conn, table.name).columns if c.identity is None
            ]
            positions = [names.index(k) for k in NATURAL_KEYS[table.name]]
            keys = [tuple(row[p] for p in positions) for row in dump[table.name]]
            assert len(keys) == len(set(keys)), f"duplicate natural keys in {table.name}"


# --------------------------------------------------------------------------------------------
# Two partitions of the generated dataset in SQLite, shared by several tests. Tests that change
# the database restore it (and say so); ``baseline`` is the dump taken right after loading.


@dataclass
class LoadedSqlite:
    target: PipelineTarget
    engine: sa.Engine
    result: dg.ExecuteInProcessResult
    baseline: dict[str, list[tuple]]


@pytest.fixture(scope="module")
def sqlite_loaded(pipeline_dataset: GeneratedDataset, fast_tmp_root: Path) -> LoadedSqlite:
    """Both folders in one run (a partition range), as msd-dagster load and backfills do."""
    tmp = fast_folder(fast_tmp_root, "sqlite_pipeline")
    target = PipelineTarget.create(
        pipeline_dataset.root, sqlite_url(tmp / "msd.sqlite"), tmp / "parquet"
    )
    result = target.materialize(PIPELINE_FOLDERS[0], PIPELINE_FOLDERS[-1])
    engine = target.engine()
    yield LoadedSqlite(target, engine, result, dump_tables(engine))
    engine.dispose()


def test_two_partitions_load_the_generated_rows_and_pass_every_check(
    sqlite_loaded: LoadedSqlite, pipeline_dataset: GeneratedDataset
) -> None:
    assert msd_folders.name == PARTITIONS_DEF_NAME  # the helpers' instances register these
    ds, engine = pipeline_dataset, sqlite_loaded.engine
    counts = row_counts(engine)
    # The generator's own counts ...
    assert counts["msd_track"] == len(ds.track_ids) == PIPELINE_SONGS
    for table, kind in ANALYSIS.items():
        assert counts[table] == ds.rows[kind] > 0, table
    assert counts["msd_artist_term"] == ds.artist_rows["terms"]
    assert counts["msd_artist_mbtag"] == ds.artist_rows["mbtags"]
    assert counts["msd_artist_similarity"] == ds.artist_rows["similar"]
    assert counts["msd_r_term"] == len(ds.unique_terms)
    assert counts["msd_r_mbtag"] == len(ds.unique_mbtags)
    # ... and msd_artist: artists with songs plus id-only rows for their similar artists.
    assert counts == expected_row_counts(ds)

    tracks = {row["track_id"]: row for row in table_rows(engine, "msd_track")}
    assert sorted(tracks) == ds.track_ids
    assert {t: row["artist_id"] for t, row in tracks.items()} == ds.track_artist
    assert {t: row["song_id"] for t, row in tracks.items()} == ds.song_ids
    artists = table_rows(engine, "msd_artist")
    with_songs = sorted(a["artist_id"] for a in artists if a["source_track_id"] is not None)
    assert with_songs == ds.artist_ids
    with engine.connect() as conn:
        for table, kind in ANALYSIS.items():
            t = warehouse_table(conn, table)
            per_track = dict(
                conn.execute(sa.select(t.c.track_id, sa.func.count()).group_by(t.c.track_id)).all()
            )
            expected = {tid: rows[kind] for tid, rows in ds.track_rows.items() if rows[kind]}
            assert per_track == expected, table
    assert sorted(row[0] for row in sqlite_loaded.baseline["msd_r_term"]) == ds.unique_terms
    mbtags = [row[0] for row in sqlite_loaded.baseline["msd_r_mbtag"]]
    assert sorted(mbtags) == ds.unique_mbtags
    assert set(UNICODE_MBTAGS) <= set(mbtags)

    result = sqlite_loaded.result
    assert_partition_run_ok(result, *PIPELINE_FOLDERS)
    for partition in PIPELINE_FOLDERS:
        part = expected_row_counts(ds, partition_tracks(ds, partition))
        for table in part:
            metadata = materialization_metadata(result, warehouse_key(table), partition)
            assert metadata["dagster/partition_row_count"] == part[table], (partition, table)
            assert metadata["dagster/table_name"] == table
        evaluations = check_evaluations(result, partition)
        bars = evaluations[("warehouse/msd_bar", ROWS_CHECK)]
        numbers = {name: value.value for name, value in bars.metadata.items()}
        assert numbers == {
            "rows": {
                "database": part["msd_bar"],
                "frame": part["msd_bar"],
                "files": part["msd_bar"],
            },
            "missing_keys": 0,
            "duplicate_keys": 0,
            "unresolved_references": 0,
        }
        n = f"{part['msd_bar']:,}"
        assert bars.description == (
            f"database {n} = frame {n} = files {n}; missing 0, duplicates 0, "
            "unresolved references 0"
        )
        raw = materialization_metadata(result, RAW_KEY, partition)
        assert raw["dagster/partition_row_count"] == len(partition_tracks(ds, partition))
    # The table's rows after the run's last folder (SQLite: the highest row id, exact here:
    # nothing was deleted).
    for table, total in counts.items():
        metadata = materialization_metadata(result, warehouse_key(table), PIPELINE_FOLDERS[-1])
        assert metadata["dagster/row_count"] == total, table
        assert metadata["row_count_method"].startswith("upper bound: the highest row id")


def test_rerunning_a_partition_leaves_identical_contents(
    sqlite_loaded: LoadedSqlite, pipeline_dataset: GeneratedDataset
) -> None:
    engine = sqlite_loaded.engine
    ids_before = {
        table.name: sorted(tuple(row.values()) for row in table_rows(engine, table.name))
        for table in SHARED_TABLES
        if table.name != "msd_artist"
    }
    result = sqlite_loaded.target.materialize("A/A")
    assert_partition_run_ok(result, "A/A")
    after = dump_tables(engine)
    assert_same_contents(after, sqlite_loaded.baseline, "after rerunning A/A")
    assert_unique_natural_keys(after, engine)
    written = {
        table.name: materialization_metadata(result, warehouse_key(table.name))["rows_written"]
        for table in MSD_TABLES
    }
    assert written["msd_track"] == len(partition_tracks(pipeline_dataset, "A/A"))
    # Shared rows are upserted in place: nothing new, and their surrogate ids are unchanged.
    for table in ids_before:
        assert written[table] == 0, table
    for table, rows in ids_before.items():
        assert sorted(tuple(row.values()) for row in table_rows(engine, table)) == rows, table


def test_bad_files_are_rejected_with_a_reason_and_the_good_ones_load(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path
) -> None:
    ds = pipeline_dataset
    root = fast_tmp_path / "dataset"
    shutil.copytree(ds.root / "data" / "A" / "A", root / "data" / "A" / "A")
    good = partition_tracks(ds, "A/A")
    donor = ds.track_path(good[0]).read_bytes()
    (root / "data" / "A" / "A" / "Z").mkdir(exist_ok=True)
    bad = {
        # name of a valid track id, content not HDF5
        "data/A/A/Z/TRAAZZZ128F4200001.h5": (b"not a song file\n" * 64, ["not an HDF5 file"]),
        # the first half of a good file
        "data/A/A/Z/TRAAZZZ128F4200002.h5": (donor[: len(donor) // 2], ["truncated"]),
        # a good file under another track's name
        "data/A/A/Z/TRAAZZZ128F4200003.h5": (donor, ["TRAAZZZ128F4200003", good[0]]),
    }
    for key, (content, _) in bad.items():
        assert not (root / key).exists()
        (root / key).write_bytes(content)
    # Files that are no song files, at any depth of the folder: listed and rejected by name.
    not_songs = ["data/A/A/notes.txt", "data/A/A/Z/.DS_Store", "data/A/A/Z/TRAAZZZ128F4200004"]
    for key in not_songs:
        (root / key).write_bytes(b"x")
    bad.update(
        {
            key: (b"x", ["not a song file (only <TRACK_ID>.h5 files are loaded)"])
            for key in not_songs
        }
    )

    target = PipelineTarget.create(
        root, sqlite_url(fast_tmp_path / "msd.sqlite"), fast_tmp_path / "parquet", ["A/A"]
    )
    result = target.materialize("A/A")
    assert_partition_run_ok(result, "A/A")

    raw = materialization_metadata(result, RAW_KEY)
    assert raw["dagster/partition_row_count"] == len(good) + len(bad)
    assert raw["not_song_files"] == len(not_songs)
    songs = materialization_metadata(result, SONGS_KEY)
    assert songs["tracks"] == len(good)
    assert songs["rows"]["msd_track"] == len(good)
    assert songs["rejected_files"] == len(bad)
    reasons = {item["name"]: item["reason"] for item in songs["rejected_list"]}
    assert sorted(reasons) == sorted(bad)
    for key, (_, fragments) in bad.items():
        for fragment in fragments:
            assert fragment in reasons[key], (key, reasons[key])
        assert key in songs["rejected"]  # the Markdown list shown in the UI
    stored = pd.read_parquet(Path(songs["path"]) / "rejected_files.parquet")
    assert dict(zip(stored["name"], stored["reason"], strict=True)) == reasons

    engine = target.engine()
    try:
        assert sorted(row["track_id"] for row in table_rows(engine, "msd_track")) == good
        assert row_counts(engine) == expected_row_counts(ds, good)
    finally:
        engine.dispose()


def test_a_check_fails_when_rows_vanish_and_passes_after_rematerializing(
    sqlite_loaded: LoadedSqlite, pipeline_dataset: GeneratedDataset
) -> None:
    """Deletes rows of the shared SQLite database, then restores them by re-materializing."""
    ds, engine, partition = pipeline_dataset, sqlite_loaded.engine, "A/B"
    tracks = partition_tracks(ds, partition)
    expected_bars = sum(ds.track_rows[t]["bars"] for t in tracks)
    victim = max(tracks, key=lambda t: ds.track_rows[t]["bars"])
    with engine.begin() as conn:
        bar = warehouse_table(conn, "msd_bar")
        deleted = conn.execute(
            sa.delete(bar).where(bar.c.track_id == victim, bar.c.track_bar_id <= 5)
        ).rowcount
    assert deleted == 5

    # The checks are the load's own (evaluated in each folder's load transaction): nothing
    # re-verifies a loaded folder on its own. The same verification, run on the folder's
    # stored frames, finds exactly the vanished rows.
    from msd_dagster.defs.tables import NORMALIZED_FRAMES, normalized_key
    from msd_dagster.frame_store import FrameStore
    from msd_dagster.warehouse.partition_load import prepare_frames
    from msd_dagster.warehouse.verify import verify_partition

    store = FrameStore(sqlite_loaded.target.parquet_dir)
    frames = {}
    for name, tables in NORMALIZED_FRAMES.items():
        frames.update(store.read(normalized_key(name).path, partition, tables))
    with engine.connect() as conn:
        verdicts = verify_partition(conn, partition, prepare_frames(frames, partition))
    [failed] = [v for v in verdicts if not v.passed]
    assert (failed.table, failed.database_rows, failed.frame_rows, failed.missing_keys) == (
        "msd_bar",
        expected_bars - 5,
        expected_bars,
        5,
    )

    result = sqlite_loaded.target.materialize(partition)
    assert_partition_run_ok(result, partition)
    assert_same_contents(dump_tables(engine), sqlite_loaded.baseline, "after re-materializing")


# --------------------------------------------------------------------------------------------
# The real song files, checked against an independent h5py read


def _text(value: Any) -> str | None:
    text = bytes(value).decode("utf-8")
    return text or None


def _float(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _unknown_if_zero(value: Any) -> float | None:
    number = _float(value)
    return None if number == 0 else number


def _int(value: Any) -> int:
    return int(value)


def _id(value: Any) -> int | None:
    number = int(value)
    return None if number <= 0 else number


def _texts(dataset: h5py.Dataset) -> list[str]:
    return [bytes(v).decode("utf-8") for v in dataset[:]]


def _first_occurrences(values: list[str]) -> list[tuple[str, int]]:
    """``(value, 1-based position)`` of each value's first occurrence."""
    seen: dict[str, int] = {}
    for position, value in enumerate(values, 1):
        seen.setdefault(value, position)
    return list(seen.items())


def assert_values_equal(actual: dict[str, Any], expected: dict[str, Any], label: str) -> None:
    assert sorted(actual) == sorted(expected), f"{label}: columns differ"
    wrong = {
        column: (actual[column], value)
        for column, value in expected.items()
        if exact(actual[column]) != exact(value)
    }
    assert not wrong, f"{label}: (database, file) differ: {wrong}"


def assert_bits_equal(column: list[Any], expected: np.ndarray, label: str) -> None:
    """Database floats (NULL = NaN) equal the file's float64 values bit for bit."""
    actual = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
    expected = np.ascontiguousarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, label
    same = (actual.view(np.uint64) == expected.view(np.uint64)) | (
        np.isnan(actual) & np.isnan(expected)
    )
    assert same.all(), f"{label}: {int((~same).sum())} value(s) differ"


def expected_track_row(path: Path, f: h5py.File) -> dict[str, Any]:
    a, m, mb = f["analysis/songs"][0], f["metadata/songs"][0], f["musicbrainz/songs"][0]
    mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).replace(tzinfo=None)
    return {
        "track_id": path.stem,
        "analysis_sample_rate": _int(a["analysis_sample_rate"]),
        "audio_md5": _text(a["audio_md5"]),
        "danceability": _unknown_if_zero(a["danceability"]),
        "duration": _float(a["duration"]),
        "end_of_fade_in": _float(a["end_of_fade_in"]),
        "energy": _unknown_if_zero(a["energy"]),
        "key": _int(a["key"]),
        "key_confidence": _float(a["key_confidence"]),
        "loudness": _float(a["loudness"]),
        "mode": _int(a["mode"]),
        "mode_confidence": _float(a["mode_confidence"]),
        "start_of_fade_out": _float(a["start_of_fade_out"]),
        "tempo": _float(a["tempo"]),
        "time_signature": _int(a["time_signature"]),
        "time_signature_confidence": _float(a["time_signature_confidence"]),
        "artist_id": _text(m["artist_id"]),
        "release": _text(m["release"]),
        "song_hotness": _float(m["song_hotttnesss"]),
        "title": _text(m["title"]),
        "track_7digitalid": _id(m["track_7digitalid"]),
        "year": int(mb["year"]) or None,
        "upload_timestamp": mtime,
        "song_id": _text(m["song_id"]),
        "release_7digitalid": _id(m["release_7digitalid"]),
        "analyzer_version": _text(m["analyzer_version"]),
        "genre": _text(m["genre"]),
    }


def expected_artist_row(track_id: str, f: h5py.File) -> dict[str, Any]:
    m = f["metadata/songs"][0]
    return {
        "artist_id": _text(m["artist_id"]),
        "artist_mbid": _text(m["artist_mbid"]),
        "artist_name": _text(m["artist_name"]),
        "artist_lat": _float(m["artist_latitude"]),
        "artist_long": _float(m["artist_longitude"]),
        "artist_location": _text(m["artist_location"]),
        "artist_familiarity": _float(m["artist_familiarity"]),
        "artist_hotttnesss": _float(m["artist_hotttnesss"]),
        "artist_7digitalid": _id(m["artist_7digitalid"]),
        "artist_playmeid": _id(m["artist_playmeid"]),
        "source_track_id": track_id,
    }


def analysis_rows(engine: sa.Engine, table: str) -> dict[str, list[dict[str, Any]]]:
    """Rows per track in position order, identity id dropped."""
    one = SINGULAR[table]
    by_track: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with engine.connect() as conn:
        t = warehouse_table(conn, table)
        columns = [c for c in t.columns if c.identity is None]
        statement = sa.select(*columns).order_by(t.c.track_id, t.c[f"track_{one}_id"])
        for row in conn.execute(statement):
            by_track[row.track_id].append(dict(row._mapping))
    return by_track


def test_real_folder_matches_an_independent_h5py_read(fast_tmp_path: Path) -> None:
    paths = real_song_paths()
    assert len(paths) == 13
    target = PipelineTarget.create(
        REAL_SUBSET, sqlite_url(fast_tmp_path / "msd.sqlite"), fast_tmp_path / "parquet", ["A/A"]
    )
    result = target.materialize("A/A")
    assert_partition_run_ok(result, "A/A")
    assert materialization_metadata(result, SONGS_KEY)["rejected_files"] == 0

    engine = target.engine()
    try:
        tracks = {row["track_id"]: row for row in table_rows(engine, "msd_track")}
        artists = {row["artist_id"]: row for row in table_rows(engine, "msd_artist")}
        terms = {
            (r["artist_id"], r["term_name"]): (r["term_freq"], r["term_weight"])
            for r in table_rows(engine, "msd_artist_term")
        }
        mbtags = {
            (r["artist_id"], r["mbtag_name"]): r["mbtag_count"]
            for r in table_rows(engine, "msd_artist_mbtag")
        }
        similar: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for r in sorted(
            table_rows(engine, "msd_artist_similarity"),
            key=lambda r: (r["artist_id_1"], r["similarity_rank"]),
        ):
            similar[r["artist_id_1"]].append((r["artist_id_2"], r["similarity_rank"]))
        r_terms = {r["term_name"] for r in table_rows(engine, "msd_r_term")}
        r_mbtags = {r["mbtag_name"] for r in table_rows(engine, "msd_r_mbtag")}
        analysis = {table: analysis_rows(engine, table) for table in ANALYSIS}
    finally:
        engine.dispose()

    assert sorted(tracks) == [p.stem for p in paths]
    expected_artists: dict[str, dict[str, Any]] = {}
    expected_terms: dict[tuple[str, str], tuple[float, float]] = {}
    expected_mbtags: dict[tuple[str, str], int] = {}
    expected_similar: dict[str, list[tuple[str, int]]] = {}
    all_terms: set[str] = set()
    all_mbtags: set[str] = set()
    for path in paths:  # sorted: an artist's first file has the smallest track id and wins
        track_id = path.stem
        with h5py.File(path, "r") as f:
            assert _text(f["analysis/songs"][0]["track_id"]) == track_id
            assert_values_equal(tracks[track_id], expected_track_row(path, f), track_id)

            for table, kind in ANALYSIS.items():
                one, rows = SINGULAR[table], analysis[table].get(track_id, [])
                starts = f[f"analysis/{kind}_start"][:]
                label = f"{track_id} {table}"
                assert [r[f"track_{one}_id"] for r in rows] == list(range(1, len(starts) + 1))
                assert_bits_equal([r[f"{one}_start"] for r in rows], starts, label)
                confidence = f[f"analysis/{kind}_confidence"][:]
                assert_bits_equal([r[f"{one}_confidence"] for r in rows], confidence, label)
                if table == "msd_segment":
                    for column in ("loudness_max", "loudness_max_time", "loudness_start"):
                        values = [r[f"segment_{column}"] for r in rows]
                        assert_bits_equal(values, f[f"analysis/segments_{column}"][:], label)
                    pitches, timbre = (
                        f["analysis/segments_pitches"][:],
                        f["analysis/segments_timbre"][:],
                    )
                    for i in range(12):
                        assert_bits_equal([r[f"p{i + 1}"] for r in rows], pitches[:, i], label)
                        assert_bits_equal([r[f"t{i + 1}"] for r in rows], timbre[:, i], label)

            artist = _text(f["metadata/songs"][0]["artist_id"])
            term_names = _texts(f["metadata/artist_terms"])
            tag_names = _texts(f["musicbrainz/artist_mbtags"])
            all_terms.update(term_names)
            all_mbtags.update(tag_names)
            if artist in expected_artists:
                continue
            expected_artists[artist] = expected_artist_row(track_id, f)
            freq, weight = f["metadata/artist_terms_freq"][:], f["metadata/artist_terms_weight"][:]
            for i, term in enumerate(term_names):
                expected_terms.setdefault((artist, term), (float(freq[i]), float(weight[i])))
            counts = f["musicbrainz/artist_mbtags_count"][:]
            for i, tag in enumerate(tag_names):
                expected_mbtags.setdefault((artist, tag), int(counts[i]))
            expected_similar[artist] = _first_occurrences(_texts(f["metadata/similar_artists"]))

    stubs = {s for pairs in expected_similar.values() for s, _ in pairs} - set(expected_artists)
    empty = dict.fromkeys(next(iter(expected_artists.values())), None)
    for stub in stubs:
        expected_artists[stub] = {**empty, "artist_id": stub}
    assert sorted(artists) == sorted(expected_artists)
    for artist_id, row in expected_artists.items():
        assert_values_equal(artists[artist_id], row, f"msd_artist {artist_id}")
    assert sorted(terms) == sorted(expected_terms)
    for key, (freq, weight) in expected_terms.items():
        assert [exact(v) for v in terms[key]] == [exact(freq), exact(weight)], key
    assert mbtags == expected_mbtags
    assert dict(similar) == {a: pairs for a, pairs in expected_similar.items() if pairs}
    assert r_terms == all_terms
    assert r_mbtags == all_mbtags
    # The documented edge case (its artist has no other file here): no MusicBrainz tags,
    # year 0 and NaN coordinates become NULL / no rows.
    edge = tracks["TRAAADZ128F9348C2E"]
    assert edge["year"] is None
    edge_artist = artists[edge["artist_id"]]
    assert edge_artist["source_track_id"] == "TRAAADZ128F9348C2E"
    assert edge_artist["artist_lat"] is None and edge_artist["artist_long"] is None
    assert not [key for key in mbtags if key[0] == edge["artist_id"]]


# --------------------------------------------------------------------------------------------
# The same graph on every backend


@pytest.mark.parametrize("backend", SERVERS)
def test_every_backend_holds_the_same_contents_as_sqlite(
    backend: str,
    server_database: Callable[[str], ServerDatabase],
    sqlite_loaded: LoadedSqlite,
    pipeline_dataset: GeneratedDataset,
    fast_tmp_path: Path,
) -> None:
    database = server_database(backend)  # skips, with the reason, without a server
    engine = database.engine
    empty_schema(engine)  # the session database may hold another test's rows
    target = PipelineTarget.create(pipeline_dataset.root, database.url, fast_tmp_path / "parquet")
    # PostgreSQL loads the partitions in the other order: contents must not depend on it.
    order = PIPELINE_FOLDERS if backend == "mariadb" else tuple(reversed(PIPELINE_FOLDERS))
    for partition in order:
        assert_partition_run_ok(target.materialize(partition), partition)
    dump = dump_tables(engine)
    # Bit for bit, except the sign of zero (see ``exact``) ...
    assert_same_contents(dump, sqlite_loaded.baseline, f"{backend} vs SQLite", zero_sign=False)
    if backend == "postgresql":  # ... which PostgreSQL keeps: every -0.0 of the files is there
        assert negative_zeros(dump) == source_negative_zeros(pipeline_dataset) > 0
    assert set(UNICODE_MBTAGS) <= {row[0] for row in dump["msd_r_mbtag"]}


# --------------------------------------------------------------------------------------------
# The discovery sensor


def test_discovery_sensor_adds_partitions_and_requests_new_and_changed_folders(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fast_tmp_path / "dataset"
    shutil.copytree(pipeline_dataset.root / "data", root / "data")
    # One known folder re-fingerprinted per tick: a change is seen within two ticks.
    monkeypatch.setattr(sensors, "FINGERPRINTS_PER_TICK", 1)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"msd_source": MsdSourceResource(location=str(root), s3=S3Resource())}

    def tick(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources
        ) as context:
            result = sensors.msd_discovery_sensor(context)
        for request in result.dynamic_partitions_requests or []:  # what the daemon does
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        return result

    # Files that no partition takes: a misnamed second-level folder and a file too high up.
    (root / "data/A/A B/C").mkdir(parents=True)
    for name in ("TRAAC128F4200001.h5", "Ünïcode copy.h5"):
        (root / "data/A/A B/C" / name).write_bytes(b"x")
    (root / "data/TRAAA128F4200002.h5").write_bytes(b"x")

    first = tick(None)
    assert [
        (r.partitions_def_name, list(r.partition_keys)) for r in first.dynamic_partitions_requests
    ] == [(msd_folders.name, list(PIPELINE_FOLDERS))]
    (observation,) = first.asset_events  # the first survey is recorded
    assert observation.asset_key == RAW_KEY and observation.partition is None
    metadata = {k: v.value for k, v in observation.metadata.items()}
    assert observation.description == "3 file(s) under data/ outside the layout, not loaded"
    assert metadata["files_outside_layout"] == 3 and metadata["entries_outside_layout"] == 2
    assert [(e["location"], e["files"]) for e in metadata["outside_layout_list"]] == [
        ("data/A/A B/", 2),
        ("data/TRAAA128F4200002.h5", 1),
    ]
    assert metadata["outside_layout_list"][0]["reason"].startswith(
        "'A B' is not a second-level folder name (one uppercase letter A-Z)"
    )
    assert metadata["outside_layout"].startswith("- `data/A/A B/` (2 file(s)): 'A B' is not")
    assert metadata["source"] == str(root)
    assert [r.partition_key for r in first.run_requests] == list(PIPELINE_FOLDERS)
    assert {r.tags["msd/reason"] for r in first.run_requests} == {"new"}
    first_keys = {r.partition_key: r.run_key for r in first.run_requests}
    assert len(set(first_keys.values())) == 2
    assert sorted(instance.get_dynamic_partitions(msd_folders.name)) == list(PIPELINE_FOLDERS)

    cursor = first.cursor
    for _ in range(2):  # every known folder re-checked once: nothing changed
        quiet = tick(cursor)
        assert quiet.run_requests == [] and not quiet.dynamic_partitions_requests
        assert quiet.asset_events == []  # the same files outside the layout: not again
        cursor = quiet.cursor

    changed_file = pipeline_dataset.track_path(partition_tracks(pipeline_dataset, "A/B")[0])
    changed_file = root / changed_file.relative_to(pipeline_dataset.root)
    stat = changed_file.stat()
    os.utime(changed_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 60 * 10**9))
    requested = []
    for _ in range(2):
        result = tick(cursor)
        assert not result.dynamic_partitions_requests
        requested.extend(result.run_requests)
        cursor = result.cursor
    assert [(r.partition_key, r.tags["msd/reason"]) for r in requested] == [("A/B", "changed")]
    assert requested[0].run_key != first_keys["A/B"]  # a new run, not deduplicated

    (root / "data" / "B" / "C" / "D").mkdir(parents=True)
    shutil.copy(changed_file, root / "data" / "B" / "C" / "D" / "TRBCDAA128F4200001.h5")
    (root / "data/TRAAA128F4200002.h5").unlink()
    result = tick(cursor)
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["B/C"]]
    (observation,) = result.asset_events  # the list changed: recorded again
    assert [e["location"] for e in observation.metadata["outside_layout_list"].value] == [
        "data/A/A B/"
    ]
    assert [(r.partition_key, r.tags["msd/reason"]) for r in result.run_requests] == [
        ("B/C", "new")
    ]
    for _ in range(3):
        result = tick(result.cursor)
        assert result.run_requests == []


# --------------------------------------------------------------------------------------------
# The command line


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("msd-dagster")
    return [str(script)] if script.exists() else [sys.executable, "-m", "msd_dagster.cli"]


def _cli_env(fast_tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_", "AWS_"))}
    home = fast_tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(DAGSTER_HOME=str(home), MSD_HOME=str(fast_tmp_path / "msd_home"))
    return env


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_cli(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _summary(stdout: str) -> dict[str, tuple[int, int]]:
    """``{table: (rows this load, rows in database)}`` from the printed summary."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("msd_"):
            rows[parts[0]] = (int(parts[1].replace(",", "")), int(parts[2].replace(",", "")))
    return rows


def test_cli_load_records_runs_and_fails_clearly_on_an_unusable_database(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path
) -> None:
    ds = pipeline_dataset
    source = fast_tmp_path / "dataset"  # song files only: no AdditionalFiles run
    shutil.copytree(ds.root / "data", source / "data")
    # Not loaded, and said so: a folder outside the layout, a file that is no song file.
    (source / "data/Ä/B/C").mkdir(parents=True)
    (source / "data/Ä/B/C/TRÄBC128F4200001.h5").write_bytes(b"x")
    (source / "data/A/A/notes.txt").write_bytes(b"x")
    env = _cli_env(fast_tmp_path)
    database = fast_tmp_path / "cli.sqlite"

    done = _run_cli(
        ["load", "--source", str(source), "--database-url", sqlite_url(database)]
        + ["--workers", "2"],
        env,
        fast_tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reason = (
        "'Ä' is not a first-level folder name (one uppercase letter A-Z), so it is no partition "
        "and its files are not loaded; song files are at data/<c3>/<c4>/<c5>/<TRACK_ID>.h5, "
        "folders named by one uppercase letter"
    )
    outside = f"data/Ä/ (1 file(s)): {reason}"
    assert f"not loaded: {outside}\n" in done.stdout
    assert re.search(
        r"^loaded 2 of 2 folder\(s\) in [\d.]+ s; 1 file\(s\) rejected; 1 file\(s\) under "
        r"data/ outside the layout, not loaded$",
        done.stdout,
        flags=re.MULTILINE,
    ), done.stdout
    assert (
        "\nrejected files (1):\n  data/A/A/notes.txt: not a song file (only <TRACK_ID>.h5 "
        "files are loaded); not read\n"
    ) in done.stdout
    assert f"\noutside the layout, not loaded (1 file(s) under data/):\n  {outside}\n" in (
        done.stdout
    )
    # Both partitions into an empty database: rows written == rows in the database, also for
    # the shared tables, which both partitions' frames contain in part. msd_artist adds the
    # updates: a row (or stub) one partition wrote that an artist's song in the other wins.
    expected = expected_row_counts(ds)
    summary = _summary(done.stdout)
    assert sorted(summary) == sorted(expected), done.stdout
    for table, rows in expected.items():
        this_load, in_database = summary[table]
        assert in_database == rows, (table, done.stdout)
        if table == "msd_artist":
            assert rows <= this_load <= rows + len(ds.artist_ids), done.stdout
        else:
            assert this_load == rows, (table, done.stdout)

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert sorted(instance.get_dynamic_partitions(msd_folders.name)) == list(PIPELINE_FOLDERS)
        assert len(runs) == 4  # one per partition, then the totals check and the profile
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        # The folder runs are runs of the implicit asset job, as the asset graph launches them.
        assert sorted(r.job_name for r in runs) == [
            "__ASSET_JOB",
            "__ASSET_JOB",
            "msd_profile_job",
            "msd_totals_job",
        ]
        partitions = [r.tags.get("dagster/partition") for r in runs if r.job_name == "__ASSET_JOB"]
        assert sorted(partitions) == list(PIPELINE_FOLDERS)
        # What the UI shows on raw/song_files: the files outside the layout, with the reason.
        (record,) = instance.fetch_observations(RAW_KEY, limit=5).records
        observed = record.asset_observation
        assert observed.description == "1 file(s) under data/ outside the layout, not loaded"
        assert observed.metadata["files_outside_layout"].value == 1
        assert observed.metadata["outside_layout"].value == f"- `data/Ä/` (1 file(s)): {reason}"
        assert observed.metadata["source"].value == str(source)
    # The last line: where the dataset profile's page is (MSD_HOME/profile).
    page = Path(env["MSD_HOME"]) / "profile" / "index.html"
    assert done.stdout.strip().splitlines()[-1] == f"dataset profile: {page}", done.stdout
    assert page.is_file()

    password = "hunter2"
    failed = _run_cli(
        ["load", "--source", str(source), "--workers", "1", "--database-url"]
        + [f"postgresql+psycopg://u:{password}@127.0.0.1:1/x"],
        env,
        fast_tmp_path,
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert password not in output
    assert "postgresql+psycopg://u:***@127.0.0.1:1/x" in output  # the password, masked
    assert "cannot connect" in output.lower(), output
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 4  # no run was started


def test_cli_load_writes_the_recommended_instance_configuration_once(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path
) -> None:
    """A user's own empty DAGSTER_HOME: one line says what was written, and Dagster's "No
    dagster instance configuration file" warnings never appear; an existing file is kept."""
    source = fast_tmp_path / "dataset"
    shutil.copytree(pipeline_dataset.root / "data" / "A", source / "data" / "A")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_", "AWS_"))}
    home = fast_tmp_path / "my_dagster_home"
    home.mkdir()
    env.update(DAGSTER_HOME=str(home), MSD_HOME=str(fast_tmp_path / "msd_home"))
    args = ["load", "--source", str(source), "--workers", "1"]
    args += ["--database-url", sqlite_url(fast_tmp_path / "cli.sqlite")]
    wrote = f"wrote the recommended Dagster instance configuration to {home / 'dagster.yaml'}"

    first = _run_cli(args, env, fast_tmp_path)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert output.count(wrote) == 1, output
    assert "No dagster instance configuration file" not in output
    assert (home / "dagster.yaml").read_text() == recommended_dagster_yaml(home)

    again = _run_cli(args, env, fast_tmp_path)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert "wrote the recommended" not in output and "note:" not in output
    assert "No dagster instance configuration file" not in output


@pytest.mark.parametrize(
    "warehouse",
    [
        WarehouseResource(url="postgresql+psycopg://u:hunter2@127.0.0.1:1/x"),
        WarehouseResource(url="postgresql+psycopg://u:hunter2@127.0.0.1:notaport/x"),
        WarehouseResource(
            azure_server="127.0.0.1,1", azure_database="x", azure_user="u", azure_password="hunter2"
        ),
    ],
    ids=["refused", "unparsable", "azure-parts"],
)
def test_cli_database_problem_says_why_without_the_password(warehouse: WarehouseResource) -> None:
    problem = database_problem(warehouse)
    assert problem is not None
    assert problem.startswith("cannot connect to the database ")
    assert "hunter2" not in problem
    assert "://u:***@127.0.0.1" in problem


def test_cli_database_problem_is_none_for_a_usable_database(fast_tmp_path: Path) -> None:
    assert database_problem(WarehouseResource(url=sqlite_url(fast_tmp_path / "ok.sqlite"))) is None


def test_cli_runs_are_the_code_location_s_own(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path
) -> None:
    """What the UI compares before "Re-execute": the run's repository origin (location and
    repository names of workspace.yaml) and its job snapshot, here the implicit asset job's
    subset of the load's assets and checks (test_dagster_compat.py compares it with the runs
    the UI launches)."""
    from msd_dagster.dagster_compat import job_subset_like_the_code_server
    from msd_dagster.definitions import CODE_LOCATION_NAME, asset_job, folder_load_selection
    from msd_dagster.runs.launch import job_origin

    source = fast_tmp_path / "dataset"
    shutil.copytree(pipeline_dataset.root / "data", source / "data")
    env = _cli_env(fast_tmp_path)
    done = _run_cli(
        ["load", "--source", str(source), "--database-url", sqlite_url(fast_tmp_path / "a.db")],
        env,
        fast_tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workspace = (REPO / "workspace.yaml").read_text()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assets, checks = folder_load_selection()
        origin = job_origin(CODE_LOCATION_NAME, asset_job().name)
        folder_runs = job_subset_like_the_code_server(asset_job(), assets, checks, origin)
        runs = [r for r in instance.get_runs() if r.job_name == asset_job().name]
        assert runs
        for run in runs:
            assert (run.asset_selection, run.asset_check_selection) == (assets, checks)
            origin = run.remote_job_origin.repository_origin
            assert origin.repository_name == "__repository__"
            location = origin.code_location_origin.location_name
            assert f"location_name: {location}" in workspace
            assert run.job_snapshot_id == folder_runs.get_job_snapshot_id()


def test_cli_reports_failed_folders_and_checks_with_their_numbers(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path
) -> None:
    ds = pipeline_dataset
    source = fast_tmp_path / "dataset"
    shutil.copytree(ds.root / "data", source / "data")
    env = _cli_env(fast_tmp_path)
    a, b = fast_tmp_path / "a.sqlite", fast_tmp_path / "b.sqlite"
    load = ["load", "--source", str(source), "--database-url"]
    assert _run_cli([*load, sqlite_url(a)], env, fast_tmp_path).returncode == 0
    # One folder into another database, same instance: the totals check of b counts only what
    # went to b (it once summed every folder's latest run, whatever the database).
    other = _run_cli([*load, sqlite_url(b), "--partition", "A/A"], env, fast_tmp_path)
    assert other.returncode == 0, other.stdout
    assert "check failed" not in other.stdout

    # A folder the database refuses: the line says why, the others load, exit 1.
    engine = sa.create_engine(sqlite_url(a))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON msd_bar WHEN NEW.track_id >= 'TRAB' "
            "BEGIN SELECT RAISE(ABORT, 'bars refused by the test'); END"
        )
    failed = _run_cli([*load, sqlite_url(a)], env, fast_tmp_path)
    assert failed.returncode == 1, failed.stdout
    assert "[2/2] A/B: FAILED" in failed.stdout or "A/B: FAILED" in failed.stdout
    assert "folder A/B FAILED: load: IntegrityError: bars refused by the test" in failed.stdout
    assert "rerun them with: msd-dagster load --partition A/B" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr

    # The whole-dataset check fails with its numbers when a track vanishes behind its back.
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
        victim = partition_tracks(ds, "A/B")[0]
        for table in ("msd_bar", "msd_beat", "msd_section", "msd_tatum", "msd_segment"):
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE track_id = '{victim}'")
        conn.exec_driver_sql(f"DELETE FROM msd_track WHERE track_id = '{victim}'")
    engine.dispose()
    totals = _run_cli([*load, sqlite_url(a), "--partition", "A/A"], env, fast_tmp_path)
    assert totals.returncode == 1, totals.stdout
    expected = len(ds.track_ids)
    assert (
        "check failed: total_tracks_match_partitions: database "
        f"{expected - 1:,} tracks, {expected:,} expected from 2 folder(s)"
    ) in totals.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition"], "expected at least one argument"),
        (["--workers", "0"], "must be at least 1, got 0"),
        (["--workers", "-1"], "must be at least 1, got -1"),
        (["--partition", "Z/Z"], "no such partition(s)"),
        (["--database-url", "oracle://u:pw@h/db"], "unsupported database 'oracle'"),
        (["--source", "/no/such/folder"], "/no/such/folder: the dataset folder does not exist"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line_and_creates_nothing(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path, args: list[str], message: str
) -> None:
    env = _cli_env(fast_tmp_path)
    database = fast_tmp_path / "never.sqlite"
    base = ["load", "--source", str(pipeline_dataset.root), "--database-url", sqlite_url(database)]
    done = _run_cli([*base, *args], env, fast_tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert message in output
    assert "Traceback" not in output and "pw@" not in output
    assert not database.exists()
