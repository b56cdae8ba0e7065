"""Tests of the synthetic MSD generator: structure against real files, statistics, determinism,
Unicode, and AdditionalFiles consistency."""

from __future__ import annotations

import math
import re
import sqlite3
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from msd_dagster.generate import ROW_KINDS, GeneratedDataset, generate_dataset
from msd_dagster.generate.distributions import SPECIAL_MBTAGS, fit_utf8

SAMPLES = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "msd-samples" / "MillionSongSubset"
)
REAL_LEAF = SAMPLES / "data" / "A" / "A" / "A"
REAL_FILE = REAL_LEAF / "TRAAABD128F429CF47.h5"  # 1 mbtag, ordinary sizes
REAL_NO_TAGS = REAL_LEAF / "TRAAADZ128F9348C2E.h5"  # 0 mbtags: empty (0,) datasets

needs_real = pytest.mark.skipif(not REAL_FILE.exists(), reason="real MSD samples not available")

TRACK_RE = re.compile(r"^TR[A-Z]{5}12[0-9A-F]{4}[0-9A-F]{5}$")
SONG_RE = re.compile(r"^SO[A-Z]{5}12[0-9A-F]{4}[0-9A-F]{5}$")
ARTIST_RE = re.compile(r"^AR[A-Z0-9]{5}1[0-9A-F]{5}[0-9A-F]{5}$")


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_ds(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    root = tmp_path_factory.mktemp("stats")
    return generate_dataset(root, 300, seed=11, additional_files=True, workers=2)


@pytest.fixture(scope="module")
def stats_files(stats_ds: GeneratedDataset) -> dict[str, dict]:
    """Everything the statistics tests need, read once from the 300 files."""
    out = {}
    for tid in stats_ds.track_ids:
        with h5py.File(stats_ds.track_path(tid), "r") as f:
            out[tid] = {
                "meta": f["metadata/songs"][0],
                "analysis": f["analysis/songs"][0],
                "year": int(f["musicbrainz/songs"][0]["year"]),
                "terms": [t.decode("utf-8") for t in f["metadata/artist_terms"][:]],
                "mbtags": [t.decode("utf-8") for t in f["musicbrainz/artist_mbtags"][:]],
                "similar": [s.decode("ascii") for s in f["metadata/similar_artists"][:]],
                "lens": {k: len(f[f"analysis/{k}_start"]) for k in ROW_KINDS[:5]},
                "segments_start": f["analysis/segments_start"][:],
                "beats_start": f["analysis/beats_start"][:],
                "pitches": f["analysis/segments_pitches"][:],
                "timbre": f["analysis/segments_timbre"][:],
                "seg_conf": f["analysis/segments_confidence"][:],
                "loud_max": f["analysis/segments_loudness_max"][:],
            }
    return out


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def _type_info(t: h5py.h5t.TypeID) -> tuple:
    if isinstance(t, h5py.h5t.TypeStringID):
        return ("S", t.get_size(), t.get_strpad(), t.get_cset(), t.is_variable_str())
    if isinstance(t, h5py.h5t.TypeCompoundID):
        return (
            "C",
            t.get_size(),
            tuple(
                (t.get_member_name(i), t.get_member_offset(i), _type_info(t.get_member_type(i)))
                for i in range(t.get_nmembers())
            ),
        )
    return (type(t).__name__, t.get_size(), getattr(t, "get_order", lambda: None)())


def _attrs(obj) -> dict[str, tuple]:
    out = {}
    for name in obj.attrs:
        aid = h5py.h5a.open(obj.id, name.encode())
        value = obj.attrs[name]
        shown = None if name == "EXTDIM" else value.tobytes()  # EXTDIM varies per file
        out[name] = (type(value).__name__, value.dtype.str, _type_info(aid.get_type()), shown)
    return out


def _describe(path: Path) -> dict[str, dict]:
    """Every structural fact of a song file that a reader could observe, but not its sizes."""
    desc: dict[str, dict] = {}
    with h5py.File(path, "r") as f:
        desc["/"] = {"attrs": _attrs(f)}

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                desc[name] = {"attrs": _attrs(obj)}
                return
            dcpl = obj.id.get_create_plist()
            desc[name] = {
                "attrs": _attrs(obj),
                "dtype": obj.dtype.descr,
                "type": _type_info(obj.id.get_type()),
                "ndim": obj.ndim,
                "inner_shape": obj.shape[1:],
                "chunks": obj.chunks,
                "compression": (obj.compression, obj.compression_opts),
                "shuffle": obj.shuffle,
                "maxshape": obj.maxshape,
                "filters": [dcpl.get_filter(i)[:3] for i in range(dcpl.get_nfilters())],
                "fill": (dcpl.get_fill_time(), dcpl.get_alloc_time(), dcpl.fill_value_defined()),
                "has_mtime": h5py.h5o.get_info(obj.id).ctime != 0,
            }

        f.visititems(visit)
    return desc


def _assert_same_structure(real: dict, gen: dict) -> None:
    assert set(real) == set(gen)
    for path in real:
        assert real[path] == gen[path], path


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    return generate_dataset(tmp_path_factory.mktemp("small"), 60, seed=7)


@needs_real
def test_structure_matches_real_files(small_ds: GeneratedDataset) -> None:
    real = _describe(REAL_FILE)
    # Sanity: the description is rich enough to catch real differences.
    assert real["analysis/beats_confidence"]["attrs"]["TITLE"][3] == (
        b"array of confidence of sections"
    )
    assert real["metadata/songs"]["type"][2][6][2] == ("S", 1024, h5py.h5t.STR_NULLTERM, 0, False)
    assert real["/"]["attrs"]["TITLE"][3] == b"H5 Song File"
    assert len(real) == 1 + 3 + 3 + 21  # root, groups, tables, arrays

    for tid in small_ds.track_ids[:5]:
        _assert_same_structure(real, _describe(small_ds.track_path(tid)))


@needs_real
def test_empty_arrays_match_real_empty_arrays(small_ds: GeneratedDataset) -> None:
    real = _describe(REAL_NO_TAGS)
    with h5py.File(REAL_NO_TAGS, "r") as f:
        assert f["musicbrainz/artist_mbtags"].shape == (0,)
    no_tags = [t for t in small_ds.track_ids if small_ds.track_rows[t]["mbtags"] == 0]
    no_bars = [t for t in small_ds.track_ids if small_ds.track_rows[t]["bars"] == 0]
    assert no_tags and no_bars  # the generator guarantees both cases at this size
    for tid in (no_tags[0], no_bars[0]):
        gen = _describe(small_ds.track_path(tid))
        _assert_same_structure(real, gen)
    with h5py.File(small_ds.track_path(no_bars[0]), "r") as f:
        for kind in ("bars", "beats", "sections"):
            ds = f[f"analysis/{kind}_start"]
            assert ds.shape == (0,) and ds.maxshape == (None,) and ds.chunks == (1024,)


@needs_real
def test_chunk_shapes_are_fixed_per_dataset(small_ds: GeneratedDataset) -> None:
    def chunks(path: Path) -> dict[str, tuple]:
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda n, o: out.__setitem__(n, o.chunks) if hasattr(o, "chunks") else None
            )
        return out

    real = [chunks(p) for p in sorted(REAL_LEAF.glob("*.h5"))]
    assert len(real) == 13
    assert all(r == real[0] for r in real)  # independent of array lengths in real files
    assert real[0]["analysis/segments_pitches"] == (85, 12)
    for tid in small_ds.track_ids[:10]:
        assert chunks(small_ds.track_path(tid)) == real[0]


def test_table_values_and_attributes(small_ds: GeneratedDataset) -> None:
    tid = small_ds.track_ids[0]
    with h5py.File(small_ds.track_path(tid), "r") as f:
        assert f["analysis/songs"].attrs["NROWS"] == np.int64(1)
        assert f["metadata/songs"].attrs["FIELD_9_NAME"] == b"artist_name"
        assert f.attrs["FILTERS"] == np.int64(65793)
        a = f["analysis/songs"][0]
        assert a["track_id"].decode() == tid
        assert a["analysis_sample_rate"] == 22050
        assert a["danceability"] == 0.0 and a["energy"] == 0.0
        assert all(a[n] == 0 for n in a.dtype.names if n.startswith("idx_"))
        m = f["metadata/songs"][0]
        assert m["song_id"].decode() == small_ds.song_ids[tid]
        assert m["artist_id"].decode() == small_ds.track_artist[tid]
        # One modification time shared by all datasets, as in the real files (2010).
        times = set()
        f.visititems(
            lambda n, o: (
                times.add(h5py.h5o.get_info(o.id).ctime) if isinstance(o, h5py.Dataset) else None
            )
        )
        assert len(times) == 1 and 1_280_000_000 < times.pop() < 1_300_000_000


# ---------------------------------------------------------------------------------------------
# Determinism, ids, folders
# ---------------------------------------------------------------------------------------------


def _file_bytes(ds: GeneratedDataset) -> dict[str, bytes]:
    return {tid: ds.track_path(tid).read_bytes() for tid in ds.track_ids}


def test_deterministic_across_runs_and_workers(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 24, seed=5)
    b = generate_dataset(tmp_path / "b", 24, seed=5, workers=2)
    c = generate_dataset(tmp_path / "c", 24, seed=6)
    assert a.track_ids == b.track_ids and a.rows == b.rows and a.track_rows == b.track_rows
    assert _file_bytes(a) == _file_bytes(b)  # byte-identical, timestamps included
    assert not set(a.track_ids) & set(c.track_ids)
    assert a.rows != c.rows


def test_ids_unique_and_well_formed(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    tids = stats_ds.track_ids
    assert tids == sorted(tids) and len(set(tids)) == len(tids) == 300
    assert all(TRACK_RE.match(t) for t in tids)
    songs = list(stats_ds.song_ids.values())
    assert len(set(songs)) == 300 and all(SONG_RE.match(s) for s in songs)
    assert all(ARTIST_RE.match(a) for a in stats_ds.artist_ids)
    for tid, rec in stats_files.items():
        assert rec["meta"]["artist_id"].decode() == stats_ds.track_artist[tid]
        assert all(ARTIST_RE.match(s) and len(s) == 18 for s in rec["similar"])
    path = stats_ds.track_path(tids[0])
    assert path.parts[-4:-1] == (tids[0][2], tids[0][3], tids[0][4])


def test_default_folders_follow_subset(stats_ds: GeneratedDataset) -> None:
    assert len(stats_ds.folders) == 35
    assert stats_ds.folders[0] == "A/A" and stats_ds.folders[-1] == "B/I"
    firsts = Counter(t[2] for t in stats_ds.track_ids)
    assert set(firsts) <= {"A", "B"}
    assert 0.68 < firsts["A"] / 300 < 0.85  # 7,620 of 10,000 in the subset


def test_folders_honoured(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    ds = generate_dataset(
        tmp_path, 20, seed=3, folders=["B/C", "Z/Q"], progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(i, 20) for i in range(1, 21)]
    assert {t[:4] for t in ds.track_ids} == {"TRBC", "TRZQ"}
    on_disk = sorted(p.relative_to(tmp_path / "data") for p in tmp_path.glob("data/*/*/*/*.h5"))
    assert len(on_disk) == 20
    assert {p.parts[:2] for p in on_disk} == {("B", "C"), ("Z", "Q")}
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "bad", 2, folders=["AB"])
    # Regenerating over an existing root rewrites the same files, nothing left behind.
    before = {p: p.read_bytes() for p in tmp_path.glob("data/*/*/*/*.h5")}
    again = generate_dataset(tmp_path, 20, seed=3, folders=["B/C", "Z/Q"])
    assert again.track_ids == ds.track_ids
    assert {p: p.read_bytes() for p in tmp_path.glob("data/*/*/*/*")} == before
    empty = generate_dataset(tmp_path / "empty", 0)
    assert empty.track_ids == [] and empty.rows == dict.fromkeys(ROW_KINDS, 0)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_rows_match_files(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    for kind in ROW_KINDS[:5]:
        assert stats_ds.rows[kind] == sum(r["lens"][kind] for r in stats_files.values())
    assert stats_ds.rows["terms"] == sum(len(r["terms"]) for r in stats_files.values())
    assert stats_ds.rows["mbtags"] == sum(len(r["mbtags"]) for r in stats_files.values())
    assert stats_ds.rows["similar"] == sum(len(r["similar"]) for r in stats_files.values())
    for tid, rec in stats_files.items():
        assert stats_ds.track_rows[tid]["segments"] == rec["lens"]["segments"]


def test_value_statistics(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    recs = list(stats_files.values())
    n = len(recs)
    lens = {k: np.array([r["lens"][k] for r in recs]) for k in ROW_KINDS[:5]}
    # Real per-track means: ~165 bars, ~481 beats, ~10 sections, ~1,048 tatums, ~700 segments.
    assert 140 < lens["bars"].mean() < 190
    assert 420 < lens["beats"].mean() < 540
    assert 8 < lens["sections"].mean() < 12.5
    assert 900 < lens["tatums"].mean() < 1200
    assert 600 < lens["segments"].mean() < 850
    assert lens["segments"].min() >= 30 and lens["segments"].max() < 6000
    assert lens["bars"].std() > 30  # spread, not a constant
    assert 1 <= (lens["bars"] == 0).sum() <= 8  # rare empty bars/beats/sections

    durations = np.array([r["analysis"]["duration"] for r in recs])
    assert 210 < durations.mean() < 270
    tempo = np.array([r["analysis"]["tempo"] for r in recs])
    assert tempo.min() >= 0 and tempo.max() <= 260
    loud = np.array([r["analysis"]["loudness"] for r in recs])
    assert loud.max() <= 0 and loud.min() >= -60 and -14 < loud.mean() < -7
    keys = {int(r["analysis"]["key"]) for r in recs}
    assert keys <= set(range(12)) and len(keys) == 12
    assert {int(r["analysis"]["mode"]) for r in recs} == {0, 1}
    ts = Counter(int(r["analysis"]["time_signature"]) for r in recs)
    assert set(ts) <= set(range(1, 8)) and ts.most_common(1)[0][0] == 4
    assert all(r["analysis"]["danceability"] == 0.0 == r["analysis"]["energy"] for r in recs)

    year0 = sum(r["year"] == 0 for r in recs) / n
    assert 0.15 < year0 < 0.29
    years = [r["year"] for r in recs if r["year"]]
    assert min(years) >= 1920 and max(years) <= 2011
    hot_nan = sum(math.isnan(r["meta"]["song_hotttnesss"]) for r in recs) / n
    assert 0.39 < hot_nan < 0.57

    for r in recs:
        d = r["analysis"]["duration"]
        seg = r["segments_start"]
        assert seg[0] == 0.0 and np.all(np.diff(seg) > 0) and seg[-1] < d
        beats = r["beats_start"]
        assert len(beats) == 0 or (beats[0] >= 0 and np.all(np.diff(beats) > 0) and beats[-1] < d)
        assert r["pitches"].min() >= 0 and r["pitches"].max() <= 1
        assert np.allclose(r["pitches"].max(axis=1), 1.0)
        assert r["seg_conf"].min() >= 0 and r["seg_conf"].max() <= 1
        assert r["loud_max"].min() >= -60 and r["loud_max"].max() <= 0
    timbre = np.vstack([r["timbre"] for r in recs])
    assert 35 < timbre[:, 0].mean() < 50 and 40 < timbre[:, 1].std() < 80


def test_artist_level_statistics(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    by_artist: dict[str, list[dict]] = {}
    for tid, rec in stats_files.items():
        by_artist.setdefault(stats_ds.track_artist[tid], []).append(rec)
    assert sorted(by_artist) == stats_ds.artist_ids
    ratio = 300 / len(by_artist)
    assert 2.4 < ratio < 2.75  # 10,000 tracks / 3,888 artists in the subset
    assert max(len(v) for v in by_artist.values()) >= 4  # some artists have many tracks

    fields = ("artist_name", "artist_mbid", "artist_location", "artist_familiarity",
              "artist_latitude", "artist_longitude", "artist_7digitalid")  # fmt: skip
    for recs in by_artist.values():
        first = recs[0]
        for other in recs[1:]:
            for fname in fields:
                assert first["meta"][fname].tobytes() == other["meta"][fname].tobytes(), fname
            assert first["terms"] == other["terms"] and first["mbtags"] == other["mbtags"]
            assert first["similar"] == other["similar"]

    first = [v[0] for v in by_artist.values()]
    no_tags = sum(not r["mbtags"] for r in first) / len(first)
    assert 0.22 < no_tags < 0.52  # ~37% of artists have no MusicBrainz tag
    no_loc = sum(math.isnan(r["meta"]["artist_latitude"]) for r in first) / len(first)
    assert 0.48 < no_loc < 0.78  # ~63%
    n_terms = np.array([len(r["terms"]) for r in first])
    assert 15 < n_terms.mean() < 35 and n_terms.max() <= 80
    n_sim = np.array([len(r["similar"]) for r in first])
    assert np.median(n_sim) == 100
    inside = sum(s in by_artist for r in first for s in r["similar"]) / n_sim.sum()
    assert 0.01 < inside < 0.3  # mostly artists outside the generated set


# ---------------------------------------------------------------------------------------------
# Unicode
# ---------------------------------------------------------------------------------------------


def test_fit_utf8_never_splits_characters() -> None:
    text = "ਪੰਜਾਬੀ" * 100  # 3-byte characters
    for size in (2, 3, 4, 5, 256, 1024):
        data = fit_utf8(text, size)
        assert len(data) <= size - 1
        assert text.startswith(data.decode("utf-8"))
    assert fit_utf8("\U0001d11e" * 3, 8) == "\U0001d11e".encode()
    assert fit_utf8("abc", 32) == b"abc"


def test_unicode_round_trips(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    names, titles, tags = set(), set(), set()
    for rec in stats_files.values():
        m = rec["meta"]
        for field in ("artist_name", "title", "release", "artist_location"):
            m[field].decode("utf-8")  # never a broken multi-byte sequence
        names.add(m["artist_name"].decode("utf-8"))
        titles.add(m["title"].decode("utf-8"))
        tags.update(rec["mbtags"])
    text = "".join(names | titles)
    assert re.search("[\u0400-\u04ff]", text)  # Cyrillic
    assert re.search("[\u4e00-\u9fff]", text)  # CJK
    assert re.search("[àáâãäåçèéêëíîïñóôõöúûüýÿłøß]", text.lower())
    assert any(len(n) > 200 for n in names) and any(len(t) > 200 for t in titles)
    # The tags an earlier loader silently dropped must be there, byte-exact.
    assert set(SPECIAL_MBTAGS) <= tags
    assert "ਪੰਜਾਬੀ" in stats_ds.unique_mbtags and "香港歌手" in stats_ds.unique_mbtags


# ---------------------------------------------------------------------------------------------
# AdditionalFiles
# ---------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[list[str]]:
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n") and "\r" not in raw
    return [line.split("<SEP>") for line in raw.splitlines()]


def test_additional_text_files(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    add = stats_ds.additional_files
    assert add is not None and add == stats_ds.root / "AdditionalFiles"

    artists = _lines(add / "subset_unique_artists.txt")
    assert all(len(r) == 4 for r in artists)
    ids = [r[0] for r in artists]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert set(stats_ds.artist_ids) <= set(ids)
    extras = set(ids) - set(stats_ds.artist_ids)
    assert extras == set(stats_ds.extra_artist_ids) and len(extras) >= 3
    by_id = {r[0]: r for r in artists}
    for aid in extras:  # listed, but their example track has no song file
        assert not stats_ds.track_path(by_id[aid][2]).exists()
    no_mbid = sum(r[1] == "" for r in artists)
    assert 0 < no_mbid < len(artists) / 3
    for tid, rec in stats_files.items():
        row = by_id[stats_ds.track_artist[tid]]
        assert row[1] == rec["meta"]["artist_mbid"].decode()
        assert row[3] == rec["meta"]["artist_name"].decode("utf-8")
        assert stats_ds.track_artist[row[2]] == row[0]  # example track is one of the artist's

    locations = _lines(add / "subset_artist_location.txt")
    assert locations and all(len(r) == 5 for r in locations)
    assert [r[0] for r in locations] == sorted(r[0] for r in locations)
    for aid, lat, lon, track, name in locations:
        assert -90 <= float(lat) <= 90 and -180 <= float(lon) <= 180
        assert by_id[aid][2] == track and by_id[aid][3] == name
    located = {r[0] for r in locations}
    for tid, rec in stats_files.items():
        has = not math.isnan(rec["meta"]["artist_latitude"])
        assert has == (stats_ds.track_artist[tid] in located)

    terms = (add / "subset_unique_terms.txt").read_text(encoding="utf-8").splitlines()
    assert terms == sorted(set(terms)) and set(stats_ds.unique_terms) <= set(terms)
    mbtags = (add / "subset_unique_mbtags.txt").read_text(encoding="utf-8").splitlines()
    assert mbtags == sorted(set(mbtags)) and set(SPECIAL_MBTAGS) <= set(mbtags)

    tracks = _lines(add / "subset_unique_tracks.txt")
    assert [r[0] for r in tracks] == stats_ds.track_ids
    for tid, song_id, name, title in tracks:
        meta = stats_files[tid]["meta"]
        assert song_id == stats_ds.song_ids[tid]
        assert (name, title) == (meta["artist_name"].decode(), meta["title"].decode())

    per_year = _lines(add / "subset_tracks_per_year.txt")
    dated = {t for t, r in stats_files.items() if r["year"]}
    assert {r[1] for r in per_year} == dated and len(per_year) == len(dated)
    keys = [(int(r[0]), r[2]) for r in per_year]
    assert keys == sorted(keys)
    assert all(int(r[0]) == stats_files[r[1]]["year"] for r in per_year)


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_additional_sqlite_files(stats_ds: GeneratedDataset, stats_files: dict) -> None:
    add = stats_ds.additional_files
    assert add is not None
    all_artists = set(stats_ds.artist_ids) | set(stats_ds.extra_artist_ids)

    with sqlite3.connect(add / "subset_track_metadata.db") as db:
        assert _columns(db, "songs") == [
            "track_id", "title", "song_id", "release", "artist_id", "artist_mbid",
            "artist_name", "duration", "artist_familiarity", "artist_hotttnesss", "year",
            "track_7digitalid", "shs_perf", "shs_work",
        ]  # fmt: skip
        rows = db.execute(
            "SELECT track_id, duration, year, artist_familiarity FROM songs"
        ).fetchall()
        assert sorted(r[0] for r in rows) == stats_ds.track_ids
        for tid, duration, year, familiarity in rows:
            rec = stats_files[tid]
            assert duration == rec["analysis"]["duration"] and year == rec["year"]
            fam = rec["meta"]["artist_familiarity"]
            assert familiarity == (-1 if math.isnan(fam) else fam)  # NaN stored as -1
        for column in ("duration", "artist_familiarity", "artist_hotttnesss"):
            nulls = db.execute(f"SELECT count(*) FROM songs WHERE {column} IS NULL").fetchone()
            assert nulls == (0,)

    with sqlite3.connect(add / "subset_artist_term.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"artists", "terms", "artist_term", "mbtags", "artist_mbtag"}
        assert _columns(db, "artist_term") == ["artist_id", "term"]
        assert _columns(db, "artist_mbtag") == ["artist_id", "mbtag"]
        assert {r[0] for r in db.execute("SELECT artist_id FROM artists")} == all_artists
        pairs = set(db.execute("SELECT artist_id, term FROM artist_term"))
        for tid, rec in stats_files.items():
            aid = stats_ds.track_artist[tid]
            assert {(aid, t) for t in rec["terms"]} <= pairs
        assert db.execute(
            "SELECT count(*) FROM artist_term WHERE term NOT IN (SELECT term FROM terms)"
        ).fetchone() == (0,)
        tags = {r[0] for r in db.execute("SELECT mbtag FROM artist_mbtag")}
        assert set(SPECIAL_MBTAGS) <= tags

    with sqlite3.connect(add / "subset_artist_similarity.db") as db:
        assert _columns(db, "similarity") == ["target", "similar"]
        pairs = db.execute("SELECT target, similar FROM similarity").fetchall()
        assert pairs and all(t in all_artists and s in all_artists for t, s in pairs)
        expected = sum(
            s in all_artists
            for aid in stats_ds.artist_ids
            for s in next(
                r["similar"] for t, r in stats_files.items() if stats_ds.track_artist[t] == aid
            )
        )
        assert sum(t in set(stats_ds.artist_ids) for t, _ in pairs) == expected
