"""The additional_files assets and shared_load: real subset text files and generated datasets
(text + SQLite side files) materialized into SQL, song-file precedence, the fill rule,
disagreement counts, idempotent reruns and atomicity."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from msd_dagster.defs.assets.additional_files import (
    LOAD_KEY,
    additional_files_frames,
    additional_files_warehouse,
    additional_key,
    find_additional_files,
    read_additional_files,
)
from msd_dagster.defs.resources import FrameStoreResource, MsdSourceResource, WarehouseResource
from msd_dagster.generate import generate_dataset
from msd_dagster.msd.additional_files import additional_frames, compare_with_songs
from msd_dagster.msd.partition import normalize_partition
from msd_dagster.source.local import LocalDataset
from msd_dagster.warehouse.ddl import ensure_schema, warehouse_table
from msd_dagster.warehouse.partition_load import load_partition
from msd_dagster.warehouse.schema import NATURAL_KEYS, SHARED_TABLES, load_columns
from msd_dagster.warehouse.shared_load import load_shared_tables, song_artists
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster_tests.shared_data import (
    REAL_ADDITIONAL_FILES,
    REAL_TEXT_FILE_ROWS,
    REAL_TEXT_FILES,
)

pytest_plugins = ["msd_dagster_tests.db_fixtures"]

UNICODE_TAGS = ("ਪੰਜਾਬੀ", "ਭੰਗੜਾ", "香港歌手")
FOLDERS = ["A/A", "B/C"]


# --------------------------------------------------------------------------------------------
# Helpers (also used by test_s3_pipeline)


def copy_real_additional_files(root: Path, prefix: str = "subset_") -> Path:
    """The real subset text files, copied into ``root/AdditionalFiles`` (never into the repo)."""
    if not REAL_ADDITIONAL_FILES.is_dir():
        pytest.skip(f"the real AdditionalFiles are not at {REAL_ADDITIONAL_FILES}")
    target = root / "AdditionalFiles"
    target.mkdir(parents=True, exist_ok=True)
    for logical in REAL_TEXT_FILES:
        shutil.copyfile(
            REAL_ADDITIONAL_FILES / f"subset_{logical}.txt", target / f"{prefix}{logical}.txt"
        )
    return target


def resources(location: str, database: Path, parquet: Path, s3: Any = None) -> dict[str, Any]:
    return {
        "msd_source": MsdSourceResource(location=location, s3=s3),
        "warehouse": WarehouseResource(url=f"sqlite:///{database}"),
        "frame_store": FrameStoreResource(base_dir=str(parquet)),
    }


def materialize_additional(
    resource_defs: dict[str, Any],
    instance: dg.DagsterInstance | None = None,
    exclude: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    run_config = (
        {"ops": {"additional_files_frames": {"config": {"exclude": exclude}}}} if exclude else None
    )
    result = dg.materialize(
        [additional_files_frames, additional_files_warehouse],
        resources=resource_defs,
        instance=instance,
        run_config=run_config,
    )
    assert result.success
    return result


def materialization_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.step_materialization_data.materialization.asset_key == key
    ]
    return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}


def scalar(engine: sa.Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def column(engine: sa.Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql(sql)]


def shared_contents(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """Each shared table without its surrogate key, sorted by natural key."""
    out = {}
    with engine.connect() as conn:
        for table in SHARED_TABLES:
            columns = load_columns(table)
            rows = conn.execute(sa.select(*[warehouse_table(conn, table).c[c] for c in columns]))
            frame = pd.DataFrame(rows.all(), columns=columns)
            out[table.name] = frame.sort_values(list(NATURAL_KEYS[table.name]), ignore_index=True)
    return out


def assert_real_subset_loaded(engine: sa.Engine) -> None:
    """What the six real subset text files must give in the shared tables, on their own."""
    assert scalar(engine, "SELECT count(*) FROM msd_artist") == 3888
    assert scalar(engine, "SELECT count(*) FROM msd_artist WHERE source_track_id IS NULL") == 3888
    located = "SELECT count(*) FROM msd_artist WHERE artist_lat IS NOT NULL"
    assert scalar(engine, located + " AND artist_long IS NOT NULL") == 1402
    assert scalar(engine, "SELECT count(*) FROM msd_artist WHERE artist_mbid IS NULL") == 399
    assert scalar(engine, "SELECT count(*) FROM msd_r_term") == 3502
    assert scalar(engine, "SELECT count(*) FROM msd_r_mbtag") == 726
    tags = set(column(engine, "SELECT mbtag_name FROM msd_r_mbtag"))
    assert set(UNICODE_TAGS) <= tags
    assert any(t.startswith("1 13 165900 150") for t in tags)  # junk lines are kept
    # A known artist with its location (first lines of the published files).
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT artist_name, artist_mbid, artist_lat, artist_long FROM msd_artist "
            "WHERE artist_id = 'AR00A6H1187FB5402A'"
        ).one()
    assert row[0] == "The Meatmen" and row[1] == "312c14d9-7897-4608-944a-c5b1c76ae682"
    assert row[2] == pytest.approx(42.73383) and row[3] == pytest.approx(-84.59334)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 songs over two folders with every side file (text and SQLite), subset names."""
    root = tmp_path_factory.mktemp("generated") / "dataset"
    generate_dataset(root, 40, seed=11, folders=FOLDERS, additional_files=True)
    return root


def load_song_partitions(engine: sa.Engine, root: Path) -> None:
    dataset = LocalDataset(root)
    for key in dataset.list_partitions():
        files = dataset.list_files(key)
        batch, _ = normalize_partition(
            dataset, [f.key for f in files], {f.key: f.modified for f in files}
        )
        load_partition(engine, key, batch.frames)


# --------------------------------------------------------------------------------------------
# Real subset text files


@pytest.mark.parametrize("prefix", ["subset_", ""])
def test_real_subset_text_files_load_into_sqlite(tmp_path: Path, prefix: str) -> None:
    root = tmp_path / "dataset"
    copy_real_additional_files(root, prefix)
    db = tmp_path / "msd.sqlite"
    res = resources(str(root), db, tmp_path / "parquet")
    exclude = ["unique_tracks"] if not prefix else None
    result = materialize_additional(res, exclude=exclude)

    engine = create_engine_for_url(f"sqlite:///{db}")
    assert_real_subset_loaded(engine)

    parsed = materialization_metadata(result, additional_key("artists"))
    expected_files = [n for n in REAL_TEXT_FILES if n not in (exclude or [])]
    assert parsed["files"] == [f"AdditionalFiles/{prefix}{n}.txt" for n in expected_files]
    assert parsed["rows_per_file"] == {
        f"{prefix}{n}.txt": REAL_TEXT_FILE_ROWS[n] for n in expected_files
    }
    assert parsed["rows"] == {"msd_artist": 3888, "msd_artist_similarity": 0}
    assert parsed["excluded"] == (exclude or [])
    assert set(parsed["missing"]) == {"artist_term", "artist_similarity", "track_metadata"}
    genres = materialization_metadata(result, additional_key("genres"))
    assert genres["rows"] == {
        "msd_r_term": 3502,
        "msd_r_mbtag": 726,
        "msd_artist_term": 0,
        "msd_artist_mbtag": 0,
    }

    loaded = materialization_metadata(result, LOAD_KEY)
    assert loaded["rows_inserted"] == {
        "msd_r_term": 3502,
        "msd_r_mbtag": 726,
        "msd_artist": 3888,
        "msd_artist_term": 0,
        "msd_artist_mbtag": 0,
        "msd_artist_similarity": 0,
    }
    assert loaded["song_artists"] == 0 and loaded["disagreements"] == 0
    assert loaded["only_in_additional"] == 3888

    # Rerun: nothing new, nothing filled, same contents.
    before = shared_contents(engine)
    again = materialization_metadata(materialize_additional(res, exclude=exclude), LOAD_KEY)
    assert set(again["rows_inserted"].values()) == {0} and set(again["rows_filled"].values()) == {0}
    after = shared_contents(engine)
    for table in before:
        pd.testing.assert_frame_equal(before[table], after[table])


def test_missing_additional_files_give_an_empty_load(tmp_path: Path, generated: Path) -> None:
    root = tmp_path / "dataset"
    shutil.copytree(generated / "data", root / "data")
    assert find_additional_files(LocalDataset(root)) == {}
    db = tmp_path / "msd.sqlite"
    result = materialize_additional(resources(str(root), db, tmp_path / "parquet"))
    parsed = materialization_metadata(result, additional_key("artists"))
    assert parsed["files"] == [] and parsed["rows"]["msd_artist"] == 0
    assert len(parsed["missing"]) == 9
    assert scalar(create_engine_for_url(f"sqlite:///{db}"), "SELECT count(*) FROM msd_artist") == 0


# --------------------------------------------------------------------------------------------
# Generated dataset: side files together with song files


def test_song_files_win_fill_rule_and_disagreements(tmp_path: Path, generated: Path) -> None:
    root = tmp_path / "dataset"
    shutil.copytree(generated, root)
    db = tmp_path / "msd.sqlite"
    engine = create_engine_for_url(f"sqlite:///{db}")
    ensure_schema(engine)
    load_song_partitions(engine, root)
    songs_before = song_artists(engine).set_index("artist_id").sort_index()
    assert len(songs_before) > 5

    located = songs_before[songs_before["artist_lat"].notna()].index.tolist()
    named = songs_before.index.tolist()
    # 1. A song artist whose location the song file lacks: the side file fills it.
    filled_id = located[0]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE msd_artist SET artist_lat = NULL, artist_long = NULL "
            f"WHERE artist_id = '{filled_id}'"
        )
    # 2. Side files that disagree with the song files: one name, one latitude.
    extra = root / "AdditionalFiles"
    renamed_id = next(a for a in named if a != filled_id)
    moved_id = next(a for a in located if a not in (filled_id, renamed_id))
    artists_txt = (extra / "subset_unique_artists.txt").read_text("utf-8").splitlines()
    # (The artist whose location is filled disagrees on its name too: a fill must not touch
    # the columns the song file has.)
    artists_txt = [
        line.rsplit("<SEP>", 1)[0] + "<SEP>Not The Song Name"
        if line.startswith((renamed_id, filled_id))
        else line
        for line in artists_txt
    ]
    (extra / "subset_unique_artists.txt").write_text("\n".join(artists_txt) + "\n", "utf-8")
    location_txt = (extra / "subset_artist_location.txt").read_text("utf-8").splitlines()
    moved_lat = None
    for i, line in enumerate(location_txt):
        if line.startswith(moved_id):
            fields = line.split("<SEP>")
            moved_lat = float(fields[1])
            fields[1] = str(round(moved_lat + 10, 5))
            location_txt[i] = "<SEP>".join(fields)
    assert moved_lat is not None
    (extra / "subset_artist_location.txt").write_text("\n".join(location_txt) + "\n", "utf-8")
    names_before = dict(
        zip(
            column(engine, "SELECT artist_id FROM msd_artist ORDER BY artist_id"),
            column(engine, "SELECT artist_name FROM msd_artist ORDER BY artist_id"),
            strict=True,
        )
    )
    fill_value = (
        additional_frames(*read_additional_files(LocalDataset(root)))
        .msd_artist.set_index("artist_id")
        .loc[filled_id, "artist_lat"]
    )

    result = materialize_additional(resources(str(root), db, tmp_path / "parquet"))
    loaded = materialization_metadata(result, LOAD_KEY)

    # Disagreements are counted (song file wins); the emptied location counts as filled.
    assert loaded["artist_name_disagreements"] == 2
    assert loaded["artist_lat_disagreements"] == 1
    assert loaded["artist_long_disagreements"] == 0
    assert loaded["artist_mbid_disagreements"] == 0
    assert loaded["disagreements"] == 3
    assert loaded["artist_lat_filled"] == 1 and loaded["artist_long_filled"] == 1
    assert loaded["song_artists"] == len(songs_before)
    assert loaded["rows_filled"]["msd_artist"] >= 1

    songs_after = song_artists(engine).set_index("artist_id").sort_index()
    assert songs_after.loc[renamed_id, "artist_name"] == names_before[renamed_id]
    assert songs_after.loc[filled_id, "artist_name"] == names_before[filled_id]
    assert songs_after.loc[moved_id, "artist_lat"] == pytest.approx(moved_lat, abs=1e-4)
    assert songs_after.loc[filled_id, "artist_lat"] == pytest.approx(fill_value)
    # Apart from the filled location, every song-file value is unchanged.
    unchanged = songs_after.drop(index=filled_id)
    pd.testing.assert_frame_equal(unchanged, songs_before.drop(index=filled_id))

    # Every artist, term and tag of the side files is there, once.
    files = additional_frames(*read_additional_files(LocalDataset(root)))
    artist_ids = set(column(engine, "SELECT artist_id FROM msd_artist"))
    assert set(files.msd_artist["artist_id"]) <= artist_ids
    assert set(files.msd_r_term["term_name"]) <= set(
        column(engine, "SELECT term_name FROM msd_r_term")
    )
    assert set(files.msd_r_mbtag["mbtag_name"]) <= set(
        column(engine, "SELECT mbtag_name FROM msd_r_mbtag")
    )
    only_files = set(files.msd_artist["artist_id"]) - set(songs_before.index)
    assert loaded["only_in_additional"] == len(only_files) > 0
    # Artists without a song file got their names from the side files.
    no_song = sorted(only_files & set(files.msd_artist.dropna(subset=["artist_name"])["artist_id"]))
    assert no_song
    names = dict(
        zip(
            column(engine, "SELECT artist_id FROM msd_artist ORDER BY artist_id"),
            column(engine, "SELECT artist_name FROM msd_artist ORDER BY artist_id"),
            strict=True,
        )
    )
    expected = files.msd_artist.set_index("artist_id")["artist_name"]
    assert all(names[a] == expected[a] for a in no_song)
    # Pairs from artist_term.db / artist_similarity.db are all there; the song-file pairs keep
    # their frequencies and weights.
    pairs = "SELECT count(*) FROM msd_artist_term"
    assert scalar(engine, pairs) >= len(files.msd_artist_term) > 0
    song_ids = "', '".join(songs_before.index)
    assert scalar(engine, f"{pairs} WHERE artist_id IN ('{song_ids}') AND term_freq IS NULL") == 0
    assert (
        scalar(engine, "SELECT count(*) FROM msd_artist_similarity")
        >= len(files.msd_artist_similarity)
        > 0
    )
    for table in SHARED_TABLES:
        keys = ", ".join(NATURAL_KEYS[table.name])
        assert (
            scalar(
                engine,
                f"SELECT count(*) FROM (SELECT {keys} FROM {table.name} "
                f"GROUP BY {keys} HAVING count(*) > 1) AS d",
            )
            == 0
        )


def test_plain_names_and_sqlite_files_give_the_same_tables(tmp_path: Path, generated: Path) -> None:
    """Full-set names (no ``subset_``) load exactly what the subset names load."""
    contents = []
    for prefix in ("subset_", ""):
        root = tmp_path / f"dataset{prefix}"
        root.mkdir()
        shutil.copytree(generated / "AdditionalFiles", root / "AdditionalFiles")
        if not prefix:
            for path in (root / "AdditionalFiles").iterdir():
                path.rename(path.with_name(path.name.removeprefix("subset_")))
        found = find_additional_files(LocalDataset(root))
        assert len(found) == 9 and all(n.startswith(prefix) for n in found.values())
        db = tmp_path / f"msd{prefix}.sqlite"
        materialize_additional(resources(str(root), db, tmp_path / f"parquet{prefix}"))
        contents.append(shared_contents(create_engine_for_url(f"sqlite:///{db}")))
    for table in contents[0]:
        assert len(contents[0][table]) > 0, table
        pd.testing.assert_frame_equal(contents[0][table], contents[1][table])


# --------------------------------------------------------------------------------------------
# shared_load on every database


def _artist(artist_id: str, source: str | None = None, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(load_columns(SHARED_TABLES[2]))
    row.update(artist_id=artist_id, source_track_id=source, **values)
    return row


def _frames(artists: list[dict], terms: list[str] = (), artist_terms: list[tuple] = ()) -> dict:
    from msd_dagster.msd.frames import typed_columns

    def frame(table: sa.Table, rows: list[dict]) -> pd.DataFrame:
        columns = load_columns(table)
        return typed_columns(pd.DataFrame(rows, columns=columns))

    by_name = {t.name: t for t in SHARED_TABLES}
    return {
        "msd_r_term": frame(by_name["msd_r_term"], [{"term_name": t} for t in terms]),
        "msd_r_mbtag": frame(by_name["msd_r_mbtag"], []),
        "msd_artist": frame(by_name["msd_artist"], artists),
        "msd_artist_term": frame(
            by_name["msd_artist_term"],
            [{"artist_id": a, "term_name": t, "term_freq": f} for a, t, f in artist_terms],
        ),
        "msd_artist_mbtag": frame(by_name["msd_artist_mbtag"], []),
        "msd_artist_similarity": frame(by_name["msd_artist_similarity"], []),
    }


A1, A2, A3, A4 = (f"AR{c * 16}" for c in "ABCD")
SONG = "TRAAAAA12903CD0001"


def test_shared_load_fills_only_nulls_and_is_atomic(engine: sa.Engine) -> None:
    # Existing: a song-file artist (no location), a stub, a term with its song-file frequency.
    load_shared_tables(
        engine,
        _frames(
            [_artist(A1, SONG, artist_name="Song Name", artist_mbid="m-1"), _artist(A2)],
            terms=["rock"],
            artist_terms=[(A1, "rock", 0.5)],
        ),
    )
    incoming = _frames(
        [
            _artist(A1, artist_name="File Name", artist_lat=1.5, artist_long=2.5),
            _artist(A2, artist_name="Two", artist_lat=-3.25),
            _artist(A3, artist_name="ਪੰਜਾਬੀ"),
        ],
        terms=["rock", "ਭੰਗੜਾ"],
        artist_terms=[(A1, "rock", None), (A3, "ਭੰਗੜਾ", None)],
    )
    result = load_shared_tables(engine, incoming, compare=compare_with_songs)
    # Compared with the song-file artist as it was before anything was written: its location
    # was still NULL (the load fills it), its name differs.
    comparison = result.comparison
    assert comparison["song_artists"] == 1 and comparison["artists_in_both"] == 1
    assert comparison["artist_name_disagreements"] == 1
    assert comparison["artist_lat_filled"] == 1 and comparison["artist_lat_disagreements"] == 0
    assert result.inserted == {
        "msd_r_term": 1,
        "msd_r_mbtag": 0,
        "msd_artist": 1,
        "msd_artist_term": 1,
        "msd_artist_mbtag": 0,
        "msd_artist_similarity": 0,
    }
    assert result.filled["msd_artist"] == 2 and result.written["msd_artist"] == 3

    def artists() -> dict[str, tuple]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT artist_id, artist_name, artist_mbid, artist_lat, artist_long, "
                "source_track_id FROM msd_artist ORDER BY artist_id"
            ).all()
        return {r[0]: tuple(r[1:]) for r in rows}

    state = artists()
    assert state[A1] == ("Song Name", "m-1", 1.5, 2.5, SONG)  # kept, location filled
    assert state[A2] == ("Two", None, -3.25, None, None)
    assert state[A3] == ("ਪੰਜਾਬੀ", None, None, None, None)
    assert scalar(engine, f"SELECT term_freq FROM msd_artist_term WHERE artist_id = '{A1}'") == 0.5
    assert "ਭੰਗੜਾ" in column(engine, "SELECT term_name FROM msd_r_term")

    # Rerun: nothing changes.
    again = load_shared_tables(engine, incoming)
    assert set(again.inserted.values()) == {0} and set(again.filled.values()) == {0}
    assert artists() == state

    # A failure (unknown artist in msd_artist_term) rolls the whole load back.
    broken = _frames(
        [_artist(A4, artist_name="Four"), _artist(A2, artist_long=9.0)],
        terms=["jazz"],
        artist_terms=[("AR" + "Z" * 16, "jazz", None)],
    )
    with pytest.raises(sa.exc.IntegrityError):
        load_shared_tables(engine, broken)
    assert artists() == state
    assert "jazz" not in column(engine, "SELECT term_name FROM msd_r_term")


def test_shared_load_refuses_invalid_frames(engine: sa.Engine) -> None:
    frames = _frames([_artist(A1)])
    with pytest.raises(ValueError, match="missing"):
        load_shared_tables(engine, {k: v for k, v in frames.items() if k != "msd_r_term"})
    frames["msd_artist"] = frames["msd_artist"].drop(columns=["artist_lat"])
    with pytest.raises(ValueError, match="artist_lat"):
        load_shared_tables(engine, frames)
    assert scalar(engine, "SELECT count(*) FROM msd_artist") == 0


def test_partition_loaded_after_additional_files_keeps_song_values(
    tmp_path: Path, generated: Path
) -> None:
    engine = create_engine_for_url(f"sqlite:///{tmp_path / 'msd.sqlite'}")
    ensure_schema(engine)
    load_shared_tables(
        engine, additional_frames(*read_additional_files(LocalDataset(generated))).frames
    )
    load_song_partitions(engine, generated)
    songs = "', '".join(song_artists(engine)["artist_id"])
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM msd_artist_term "
            f"WHERE artist_id IN ('{songs}') AND term_freq IS NULL",
        )
        == 0
    )
