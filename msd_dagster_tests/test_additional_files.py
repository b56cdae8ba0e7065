"""AdditionalFiles: parsers on the real subset text files, SQLite parsers on small databases
built here, the loader frames, and the comparison with song-file artists."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msd_dagster.msd.additional_files import (
    ADDITIONAL_FILE_NAMES,
    AdditionalFileError,
    additional_frames,
    candidate_file_names,
    compare_with_songs,
    match_file_names,
    parse_artist_location,
    parse_artist_similarity_db,
    parse_artist_term_db,
    parse_track_metadata_db,
    parse_tracks_per_year,
    parse_unique_artists,
    parse_unique_mbtags,
    parse_unique_terms,
    parse_unique_tracks,
)
from msd_dagster.msd.frames import (
    artist_mbtags_frame,
    artist_similarity_frame,
    artist_terms_frame,
    artists_frame,
    dictionary_frame,
)
from msd_dagster.warehouse.schema import NATURAL_KEYS, TABLES_BY_NAME, load_columns
from msd_dagster_tests.shared_data import (
    REAL_ADDITIONAL_FILES,
    REAL_TEXT_FILE_ROWS,
    REAL_TEXT_FILES,
)


@pytest.fixture(scope="module")
def real() -> dict[str, bytes]:
    """The subset's six text files, by logical name (read in place, never copied)."""
    if not REAL_ADDITIONAL_FILES.is_dir():
        pytest.skip(f"the real AdditionalFiles are not at {REAL_ADDITIONAL_FILES}")
    return {n: (REAL_ADDITIONAL_FILES / f"subset_{n}.txt").read_bytes() for n in REAL_TEXT_FILES}


def _lines(data: bytes) -> list[bytes]:
    """Independent line split for cross-checks: plain bytes, no parser code."""
    return [line for line in data.split(b"\n") if line]


def _fields(data: bytes) -> list[list[str]]:
    return [line.decode("utf-8").split("<SEP>") for line in _lines(data)]


# --- file names --------------------------------------------------------------------------------


def test_candidate_file_names_put_the_subset_name_first() -> None:
    assert len(ADDITIONAL_FILE_NAMES) == 9
    assert candidate_file_names("unique_artists") == [
        "subset_unique_artists.txt",
        "unique_artists.txt",
    ]
    assert candidate_file_names("artist_term") == ["subset_artist_term.db", "artist_term.db"]
    assert candidate_file_names("track_metadata") == [
        "subset_track_metadata.db",
        "track_metadata.db",
    ]
    with pytest.raises(ValueError, match="unknown AdditionalFiles name"):
        candidate_file_names("unique_artist")


def test_subset_and_plain_names_are_both_found() -> None:
    if not REAL_ADDITIONAL_FILES.is_dir():
        pytest.skip(f"the real AdditionalFiles are not at {REAL_ADDITIONAL_FILES}")
    real_names = sorted(p.name for p in REAL_ADDITIONAL_FILES.iterdir())
    assert match_file_names(real_names) == {n: f"subset_{n}.txt" for n in REAL_TEXT_FILES}

    # Full-set names, given as S3 keys: the key comes back as given.
    keys = [f"AdditionalFiles/{n}" for n in ("unique_artists.txt", "artist_term.db", "README")]
    assert match_file_names(keys) == {
        "unique_artists": "AdditionalFiles/unique_artists.txt",
        "artist_term": "AdditionalFiles/artist_term.db",
    }
    # Both spellings present: the subset one wins, as candidate_file_names orders them.
    both = ["unique_terms.txt", "subset_unique_terms.txt"]
    assert match_file_names(both) == {"unique_terms": "subset_unique_terms.txt"}


# --- the real subset text files -----------------------------------------------------------------


def test_real_counts_match_the_published_sizes_and_an_independent_count(
    real: dict[str, bytes],
) -> None:
    artists = parse_unique_artists(real["unique_artists"])
    locations = parse_artist_location(real["artist_location"])
    terms = parse_unique_terms(real["unique_terms"])
    mbtags = parse_unique_mbtags(real["unique_mbtags"])
    tracks = parse_unique_tracks(real["unique_tracks"])
    per_year = parse_tracks_per_year(real["tracks_per_year"])

    published = {
        "unique_artists": (artists, 3888),
        "artist_location": (locations, 1402),
        "unique_terms": (terms, 3502),
        "unique_mbtags": (mbtags, 726),
        "unique_tracks": (tracks, 10000),
        "tracks_per_year": (per_year, 4680),
    }
    for logical, (frame, size) in published.items():
        assert len(_lines(real[logical])) == size, logical
        assert len(frame) == size, logical

    no_mbid = sum(1 for f in _fields(real["unique_artists"]) if f[1] == "")
    assert no_mbid == 399
    assert int(artists["artist_mbid"].isna().sum()) == 399
    assert artists["artist_id"].is_unique and tracks["track_id"].is_unique
    assert locations["latitude"].notna().all() and locations["longitude"].notna().all()

    # Values, not only counts: first and last rows as published.
    first = artists.iloc[0]
    assert (first["artist_id"], first["artist_mbid"], first["track_id"], first["artist_name"]) == (
        "AR009211187B989185",
        "9dfe78a6-6d91-454e-9b95-9d7722cbc476",
        "TRAWSCW12903CD6C7E",
        "Carroll Thompson",
    )
    meatmen = locations[locations["artist_id"] == "AR00A6H1187FB5402A"].iloc[0]
    assert meatmen["latitude"] == 42.73383 and meatmen["longitude"] == -84.59334
    assert meatmen["artist_name"] == "The Meatmen"
    assert per_year["year"].dtype == "Int32"
    assert (int(per_year["year"].min()), int(per_year["year"].max())) == (1926, 2010)
    assert per_year.iloc[0].tolist() == [
        1926,
        "TRBHUOU128F423625E",
        "Blind Lemon Jefferson",
        "Long Lonesome Blues",
    ]
    assert tracks.iloc[-1].tolist() == [
        "TRBIJYB128F14AE326",
        "SOFAOMI12A6D4FA2D8",
        "Seventh Day Slumber",
        "Shattered Life",
    ]


def test_real_unicode_and_odd_characters_are_kept_verbatim(real: dict[str, bytes]) -> None:
    artists = parse_unique_artists(real["unique_artists"]).set_index("artist_id")
    locations = parse_artist_location(real["artist_location"]).set_index("artist_id")
    tracks = parse_unique_tracks(real["unique_tracks"]).set_index("track_id")
    mbtags = parse_unique_mbtags(real["unique_mbtags"])["mbtag"].tolist()

    assert artists.loc["AR0B5HI1187B9B9DB9", "artist_name"] == "Silvério Pessoa"
    assert locations.loc["AR8UA7Z1187B9AD9C9", "artist_name"] == "Étienne Daho"
    # A no-break space inside a name stays a no-break space.
    assert locations.loc["ARCLJQZ11E2835CE37", "artist_name"] == "Alvin Youngblood\xa0Hart"
    # Trailing spaces / no-break spaces and control characters in titles are data.
    assert tracks.loc["TRALBFX12903D00703", "title"] == "Soldiers Of Doomsday\xa0"
    assert tracks.loc["TRANQNS128F42739D1", "title"] == "You Make Me Feel Good "
    assert tracks.loc["TRABHWW128F424E9D2", "title"] == "I\x19m Moving On"
    assert tracks.loc["TRAACZK128F4243829", "title"] == "¿Dónde va Chichi?"

    # The tags the earlier pipeline dropped, at the end of the file as published.
    assert mbtags[-4:] == ["éire", "ਪੰਜਾਬੀ", "ਭੰਗੜਾ", "香港歌手"]
    assert {"yé-yé", "düsseldorf", "rock en español"} <= set(mbtags)
    non_ascii = [t for t in mbtags if not t.isascii()]
    assert len(non_ascii) == 14


def test_real_junk_mbtag_lines_are_kept(real: dict[str, bytes]) -> None:
    mbtags = parse_unique_mbtags(real["unique_mbtags"])["mbtag"].tolist()
    assert mbtags[1] == (
        "1 13 165900 150 7672 22647 34612 48720 59280 74602 87545 95495 107182 131087 141522 153710"
    )
    assert mbtags[2] == "1 7 186240 183 23558 41608 89158 111733 150833 169883"
    frames = additional_frames({"unique_mbtags": real["unique_mbtags"]})
    assert mbtags[1] in set(frames.msd_r_mbtag["mbtag_name"])
    assert len(frames.msd_r_mbtag) == 726


def test_real_text_files_give_the_artist_frame(real: dict[str, bytes]) -> None:
    frames = additional_frames(real)
    assert frames.present == list(REAL_TEXT_FILES)
    assert frames.counts == REAL_TEXT_FILE_ROWS
    artist = frames.msd_artist
    assert len(artist) == 3888
    assert int(artist["artist_mbid"].isna().sum()) == 399
    assert int(artist["artist_lat"].notna().sum()) == 1402
    assert int(artist["artist_long"].notna().sum()) == 1402
    assert artist["artist_location"].isna().all() and artist["source_track_id"].isna().all()
    assert artist["artist_id"].tolist() == sorted(artist["artist_id"])
    row = artist.set_index("artist_id").loc["AR00A6H1187FB5402A"]
    assert row["artist_name"] == "The Meatmen"
    assert row["artist_mbid"] == "312c14d9-7897-4608-944a-c5b1c76ae682"
    assert (row["artist_lat"], row["artist_long"]) == (42.73383, -84.59334)
    assert len(frames.msd_r_term) == 3502 and len(frames.msd_r_mbtag) == 726
    assert "香港歌手" in set(frames.msd_r_mbtag["mbtag_name"])
    for table in ("msd_artist_term", "msd_artist_mbtag", "msd_artist_similarity"):
        assert len(getattr(frames, table)) == 0


# --- malformed text ----------------------------------------------------------------------------


def test_wrong_field_count_names_the_file_and_line() -> None:
    data = (
        b"AR009211187B989185<SEP><SEP>TRAWSCW12903CD6C7E<SEP>Carroll Thompson\r\n"
        b"\r\n"
        b"AR00A6H1187FB5402A<SEP>TRAKWGL12903CB8529<SEP>The Meatmen\r\n"
    )
    with pytest.raises(AdditionalFileError) as info:
        parse_unique_artists(data, "subset_unique_artists.txt")
    error = info.value
    assert (error.name, error.line_number) == ("subset_unique_artists.txt", 3)
    assert "expected 4" in error.reason and "found 3" in error.reason
    assert str(error).startswith("subset_unique_artists.txt, line 3:")

    # Too many fields is as wrong as too few.
    with pytest.raises(AdditionalFileError) as info:
        parse_tracks_per_year(b"2001<SEP>TRAAAAW128F429D538<SEP>Casual<SEP>A<SEP>B\n")
    assert (info.value.name, info.value.line_number) == ("tracks_per_year.txt", 1)


def test_crlf_and_blank_lines_are_handled_and_values_are_checked() -> None:
    crlf = (
        b"AR00A6H1187FB5402A<SEP>42.73383<SEP>-84.59334<SEP>TRAKWGL12903CB8529<SEP>The Meatmen\r\n"
        b"\r\n"
        b"AR8UA7Z1187B9AD9C9<SEP>48.10751<SEP>-1.68447<SEP>TRARXJJ128F1452983<SEP>\xc3\x89tienne\r\n"
    )
    frame = parse_artist_location(crlf)
    assert frame["artist_name"].tolist() == ["The Meatmen", "Étienne"]
    assert frame["longitude"].tolist() == [-84.59334, -1.68447]
    # Only the terminator goes: a line of one space is a (junk) value, as published.
    terms = parse_unique_terms(b"rock\r\n\r\n \r\nhip hop \r\n")["term"].tolist()
    assert terms == ["rock", " ", "hip hop "]
    # Characters str.splitlines() would break on are inside values, not line ends.
    title = "A\x1cB\x85C\u2028D\x0cE"
    line = f"TRAAAAW128F429D538<SEP>SOMZWCG12A8C13C480<SEP>Casual<SEP>{title}\n"
    assert parse_unique_tracks(line.encode("utf-8"))["title"].tolist() == [title]

    # The blank line still counts: errors point at the line an editor shows.
    with pytest.raises(AdditionalFileError, match=r"artist_location.txt, line 3: latitude 'north'"):
        parse_artist_location(crlf.replace(b"48.10751", b"north"))
    with pytest.raises(AdditionalFileError, match=r"line 1: year '19x9'"):
        parse_tracks_per_year(b"19x9<SEP>TRAAAAW128F429D538<SEP>Casual<SEP>Title\n")
    # Columns shifted / wrong file: ids are checked.
    with pytest.raises(AdditionalFileError, match=r"unique_artists.txt, line 1: artist_id"):
        parse_unique_artists(b"TRAAAAW128F429D538<SEP>SOMZWCG12A8C13C480<SEP>Casual<SEP>X\n")


def test_invalid_utf8_names_the_line() -> None:
    data = b"rock\npop\ncaf\xe9\n"  # Latin-1, not UTF-8
    with pytest.raises(AdditionalFileError) as info:
        parse_unique_mbtags(data, "unique_mbtags.txt")
    assert (info.value.name, info.value.line_number) == ("unique_mbtags.txt", 3)
    assert "not UTF-8" in info.value.reason


# --- SQLite files --------------------------------------------------------------------------------


def _db(path: Path, statements: list[str], rows: dict[str, list[tuple]]) -> bytes:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    for table, values in rows.items():
        marks = ", ".join("?" * len(values[0]))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
    conn.commit()
    conn.close()
    return path.read_bytes()


A1, A2, A3, A4 = (
    "AR00A6H1187FB5402A",
    "AR009211187B989185",
    "ARZZZZZ1187B9AAAAA",
    "ARYYYYY1187B9BBBBB",
)


def _artist_term_db(tmp_path: Path) -> bytes:
    return _db(
        tmp_path / "artist_term.db",
        [
            "CREATE TABLE artists (artist_id text PRIMARY KEY)",
            "CREATE TABLE terms (term TEXT PRIMARY KEY)",
            "CREATE TABLE artist_term (artist_id text, term text)",
            "CREATE TABLE mbtags (mbtag TEXT PRIMARY KEY)",
            "CREATE TABLE artist_mbtag (artist_id text, mbtag text)",
        ],
        {
            "artists": [(A1,), (A2,), (A3,)],
            "terms": [("punk",), ("rock",), ("not in the subset list",)],
            # A duplicate pair and a term absent from the terms table.
            "artist_term": [(A1, "rock"), (A1, "punk"), (A1, "rock"), (A3, "only in a pair")],
            "mbtags": [("香港歌手",), ("rock",), ("new tag ✓",)],
            "artist_mbtag": [(A2, "香港歌手"), (A1, "rock")],
        },
    )


def _similarity_db(tmp_path: Path) -> bytes:
    return _db(
        tmp_path / "artist_similarity.db",
        [
            "CREATE TABLE artists (artist_id text PRIMARY KEY)",
            "CREATE TABLE similarity (target text, similar text)",
        ],
        {
            "artists": [(A1,), (A2,)],
            # Asymmetric; A4 appears nowhere else.
            "similarity": [(A1, A2), (A2, A4), (A1, A2), (A2, A1)],
        },
    )


def _track_metadata_db(tmp_path: Path) -> bytes:
    return _db(
        tmp_path / "track_metadata.db",
        [
            "CREATE TABLE songs (track_id text PRIMARY KEY, title text, song_id text, "
            "release text, artist_id text, artist_mbid text, artist_name text, duration real, "
            "artist_familiarity real, artist_hotttnesss real, year int, track_7digitalid int, "
            "shs_perf int, shs_work int)"
        ],
        {
            "songs": [
                # A2 has no mbid in unique_artists: the smallest track of A2 fills it.
                ("TRBBBBB128F429CF47", "Later", "SOBBBBB12A8C13D406", "R2", A2,
                 "mbid-of-later-track", "Carroll T.", 120.0, 0.4, 0.3, 1999, 55, 12, 34),
                ("TRAAABD128F429CF47", "Soul Deep", "SOCIWDW12A8C13D406", "Dimensions", A2,
                 "c0b8eb52-1cf5-4a5c-8c19-4ebf3aa8bd61", "The Box Tops", 148.03546, -1.0, -1.0,
                 0, 0, -1, -1),
                ("TRAAAAW128F429D538", "I Didn't Mean To", "SOMZWCG12A8C13C480", "", A3,
                 "", "Casual", 218.93179, 0.581793766, 0.401997543, 2007, 7032331, -1, 0),
            ]
        },
    )  # fmt: skip


def test_artist_term_db_tables(tmp_path: Path) -> None:
    tables = parse_artist_term_db(_artist_term_db(tmp_path))
    assert sorted(tables) == ["artist_mbtag", "artist_term", "artists", "mbtags", "terms"]
    assert tables["terms"]["term"].tolist() == ["not in the subset list", "punk", "rock"]
    assert tables["artist_term"].values.tolist() == [
        [A1, "punk"],
        [A1, "rock"],
        [A1, "rock"],
        [A3, "only in a pair"],
    ]
    # Ordered by key: A2 ("AR0092...") sorts before A1 ("AR00A6...").
    assert tables["artist_mbtag"].values.tolist() == [[A2, "香港歌手"], [A1, "rock"]]
    assert tables["mbtags"]["mbtag"].tolist() == ["new tag ✓", "rock", "香港歌手"]
    assert tables["mbtags"]["mbtag"].dtype == "string"


def test_artist_similarity_db_tables(tmp_path: Path) -> None:
    tables = parse_artist_similarity_db(_similarity_db(tmp_path))
    assert tables["artists"]["artist_id"].tolist() == [A2, A1]
    # As published (duplicates included), ordered by (target, similar).
    assert tables["similarity"].values.tolist() == [[A2, A1], [A2, A4], [A1, A2], [A1, A2]]


def test_track_metadata_minus_one_becomes_null(tmp_path: Path) -> None:
    songs = parse_track_metadata_db(_track_metadata_db(tmp_path))["songs"]
    assert songs["track_id"].tolist() == [
        "TRAAAAW128F429D538",
        "TRAAABD128F429CF47",
        "TRBBBBB128F429CF47",
    ]
    box = songs.set_index("track_id").loc["TRAAABD128F429CF47"]
    # -1 was NaN in the song file.
    assert math.isnan(box["artist_familiarity"]) and math.isnan(box["artist_hotttnesss"])
    assert box["duration"] == 148.03546
    assert pd.isna(box["year"]) and pd.isna(box["track_7digitalid"])
    assert pd.isna(box["shs_perf"]) and pd.isna(box["shs_work"])
    casual = songs.set_index("track_id").loc["TRAAAAW128F429D538"]
    assert casual["artist_familiarity"] == 0.581793766
    assert casual["year"] == 2007 and casual["track_7digitalid"] == 7032331
    assert pd.isna(casual["release"]) and pd.isna(casual["artist_mbid"])  # empty text
    assert pd.isna(casual["shs_perf"]) and casual["shs_work"] == 0
    assert songs["year"].dtype == "Int32" and songs["duration"].dtype == np.float64


def test_track_metadata_without_the_optional_columns(tmp_path: Path) -> None:
    data = _db(
        tmp_path / "old.db",
        [
            "CREATE TABLE songs (track_id text PRIMARY KEY, title text, song_id text, "
            "release text, artist_id text, artist_mbid text, artist_name text, duration real, "
            "artist_familiarity real, artist_hotttnesss real, year int)"
        ],
        {"songs": [("TRAAAAW128F429D538", "T", "SOMZWCG12A8C13C480", "R", A3, "", "C",
                    1.0, 0.5, -1, 2007)]},
    )  # fmt: skip
    songs = parse_track_metadata_db(data)["songs"]
    assert "shs_perf" not in songs.columns and len(songs) == 1
    assert math.isnan(songs["artist_hotttnesss"].iloc[0])


def test_bad_sqlite_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AdditionalFileError, match="artist_term.db: not a SQLite database"):
        parse_artist_term_db(b"this is not a database, just text\n" * 10)
    data = _db(
        tmp_path / "partial.db",
        ["CREATE TABLE artists (artist_id text PRIMARY KEY)"],
        {"artists": [(A1,)]},
    )
    with pytest.raises(AdditionalFileError, match="table 'similarity' is missing") as info:
        parse_artist_similarity_db(data, "subset_artist_similarity.db")
    assert info.value.name == "subset_artist_similarity.db" and info.value.line_number is None
    # Text that is not UTF-8 inside the database is an error too, not a replaced character.
    _db(
        tmp_path / "bad_utf8.db",
        [
            "CREATE TABLE artists (artist_id text PRIMARY KEY)",
            "CREATE TABLE similarity (target text, similar text)",
        ],
        {"artists": [(A1,)], "similarity": [(A1, A2)]},
    )
    conn = sqlite3.connect(tmp_path / "bad_utf8.db")
    conn.execute("INSERT INTO artists VALUES (CAST(x'41ff' AS TEXT))")
    conn.commit()
    conn.close()
    bad = (tmp_path / "bad_utf8.db").read_bytes()
    with pytest.raises(AdditionalFileError, match="table 'artists'"):
        parse_artist_similarity_db(bad)


# --- loader frames -----------------------------------------------------------------------------


def _all_files(tmp_path: Path, real: dict[str, bytes]) -> dict[str, bytes]:
    return {
        **real,
        "artist_term": _artist_term_db(tmp_path),
        "artist_similarity": _similarity_db(tmp_path),
        "track_metadata": _track_metadata_db(tmp_path),
    }


def test_frames_have_the_loader_columns_dtypes_and_unique_keys(
    tmp_path: Path, real: dict[str, bytes]
) -> None:
    frames = additional_frames(_all_files(tmp_path, real))
    assert frames.present == list(ADDITIONAL_FILE_NAMES)
    # Same dtypes as frames.py produces for the same tables, in the order the frames come in
    # (the dictionaries and msd_artist before the tables that refer to them).
    reference = {
        "msd_r_term": dictionary_frame([], "term_name"),
        "msd_r_mbtag": dictionary_frame([], "mbtag_name"),
        "msd_artist": artists_frame([]),
        "msd_artist_term": artist_terms_frame([]),
        "msd_artist_mbtag": artist_mbtags_frame([]),
        "msd_artist_similarity": artist_similarity_frame([]),
    }
    assert list(frames.frames) == list(reference)
    for table, frame in frames.frames.items():
        assert list(frame.columns) == load_columns(TABLES_BY_NAME[table]), table
        assert dict(frame.dtypes) == dict(reference[table].dtypes), table
        key = list(NATURAL_KEYS[table])
        assert not frame.duplicated(subset=key).any(), table
        assert frame[key].notna().all().all(), table
        assert frame[key].values.tolist() == sorted(frame[key].values.tolist()), table
    # Rerun gives the same frames.
    again = additional_frames(_all_files(tmp_path, real))
    for table, frame in frames.frames.items():
        pd.testing.assert_frame_equal(frame, again.frames[table])


def test_frames_merge_the_databases_into_the_tables(tmp_path: Path, real: dict[str, bytes]) -> None:
    frames = additional_frames(_all_files(tmp_path, real))
    assert frames.counts["artist_term.artist_term"] == 4
    assert frames.counts["artist_similarity.similarity"] == 4
    assert frames.counts["track_metadata.songs"] == 3

    # Terms: text list ∪ terms table ∪ terms used in pairs ("punk", "rock" are in the list).
    term_names = set(frames.msd_r_term["term_name"])
    assert len(frames.msd_r_term) == 3502 + 2
    assert {"not in the subset list", "only in a pair", "punk"} <= term_names
    assert frames.msd_artist_term[["artist_id", "term_name"]].values.tolist() == [
        [A1, "punk"],
        [A1, "rock"],
        [A3, "only in a pair"],
    ]
    assert frames.msd_artist_term[["term_freq", "term_weight"]].isna().all().all()
    assert frames.msd_artist_mbtag["mbtag_count"].isna().all()
    assert len(frames.msd_r_mbtag) == 726 + 1  # "rock" and 香港歌手 are listed, "new tag ✓" not
    assert frames.msd_artist_mbtag.values.tolist() == [[A2, "香港歌手", pd.NA], [A1, "rock", pd.NA]]
    assert frames.msd_artist_similarity.values.tolist() == [
        [A2, A1, pd.NA],
        [A2, A4, pd.NA],
        [A1, A2, pd.NA],
    ]

    artist = frames.msd_artist.set_index("artist_id")
    # Every id referenced by a pair table has a row (stubs for the unknown ones).
    referenced = set(frames.msd_artist_term["artist_id"]) | set(
        frames.msd_artist_mbtag["artist_id"]
    )
    referenced |= set(frames.msd_artist_similarity["artist_id_1"])
    referenced |= set(frames.msd_artist_similarity["artist_id_2"])
    assert referenced <= set(artist.index)
    assert len(artist) == 3888 + 2  # A3 (track_metadata) and A4 (stub)
    stub = artist.loc[A4]
    assert stub.isna().all()
    # unique_artists wins over track_metadata for name and mbid.
    a2 = artist.loc[A2]
    assert a2["artist_name"] == "Carroll Thompson"
    assert a2["artist_mbid"] == "9dfe78a6-6d91-454e-9b95-9d7722cbc476"
    # Familiarity from the representative song (TRAAABD..., -1 -> NaN), not the later one.
    assert math.isnan(a2["artist_familiarity"])
    a3 = artist.loc[A3]
    assert a3["artist_name"] == "Casual" and pd.isna(a3["artist_mbid"])
    assert a3["artist_familiarity"] == 0.581793766 and a3["artist_hotttnesss"] == 0.401997543
    assert artist["source_track_id"].isna().all()


def test_track_metadata_fills_a_missing_mbid(tmp_path: Path) -> None:
    unique = b"AR009211187B989185<SEP><SEP>TRAWSCW12903CD6C7E<SEP>Carroll Thompson\n"
    frames = additional_frames(
        {"unique_artists": unique, "track_metadata": _track_metadata_db(tmp_path)}
    )
    a2 = frames.msd_artist.set_index("artist_id").loc[A2]
    # The smallest track id of A2 is TRAAABD..., so its mbid, not the later track's.
    assert a2["artist_mbid"] == "c0b8eb52-1cf5-4a5c-8c19-4ebf3aa8bd61"
    assert a2["artist_name"] == "Carroll Thompson"


def test_no_files_give_empty_frames_and_unknown_names_are_refused() -> None:
    frames = additional_frames({})
    assert frames.present == [] and frames.counts == {}
    for table, frame in frames.frames.items():
        assert len(frame) == 0
        assert list(frame.columns) == load_columns(TABLES_BY_NAME[table])
    with pytest.raises(ValueError, match="unknown AdditionalFiles name"):
        additional_frames({"subset_unique_artists.txt": b""})


def test_errors_use_the_given_file_name() -> None:
    with pytest.raises(AdditionalFileError, match=r"^subset_unique_tracks.txt, line 2:"):
        additional_frames(
            {"unique_tracks": b"TRAAAAW128F429D538<SEP>SOMZWCG12A8C13C480<SEP>Casual<SEP>T\nx\n"},
            {"unique_tracks": "subset_unique_tracks.txt"},
        )


# --- comparison with song files ------------------------------------------------------------------


def _artists(rows: list[dict[str, object]]) -> pd.DataFrame:
    columns = load_columns(TABLES_BY_NAME["msd_artist"])
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    for c in ("artist_lat", "artist_long"):
        frame[c] = pd.to_numeric(frame[c]).astype("float64")
    for c in ("artist_id", "artist_mbid", "artist_name", "source_track_id"):
        frame[c] = frame[c].astype("string")
    return frame


def test_compare_with_songs_counts_disagreements() -> None:
    additional = _artists(
        [
            # same name, lat within tolerance (text files round to 5 decimals)
            {"artist_id": "AR1", "artist_name": "Same", "artist_lat": 42.73383,
             "artist_long": -84.59334, "artist_mbid": "m1"},
            # name and mbid disagree; longitude far off
            {"artist_id": "AR2", "artist_name": "Other", "artist_mbid": "m2",
             "artist_lat": 10.0, "artist_long": 20.0},
            # song has no location / no mbid: filled, not a disagreement
            {"artist_id": "AR3", "artist_name": "Three", "artist_mbid": "m3",
             "artist_lat": 1.0, "artist_long": 2.0},
            # additional has no name: filled the other way
            {"artist_id": "AR4"},
            # only in the additional files
            {"artist_id": "AR5", "artist_name": "Five"},
        ]
    )  # fmt: skip
    songs = _artists(
        [
            {"artist_id": "AR1", "artist_name": "Same", "artist_lat": 42.733834,
             "artist_long": -84.593341, "artist_mbid": "m1", "source_track_id": "TR1"},
            {"artist_id": "AR2", "artist_name": "Name", "artist_mbid": "m2x",
             "artist_lat": 10.0, "artist_long": 20.5, "source_track_id": "TR2"},
            {"artist_id": "AR3", "artist_name": "Three", "source_track_id": "TR3"},
            {"artist_id": "AR4", "artist_name": "Four", "source_track_id": "TR4"},
            # a stub from a similar-artists list: not song data, not compared
            {"artist_id": "AR5", "artist_name": "Stub name"},
            {"artist_id": "AR6", "artist_name": "Six", "source_track_id": "TR6"},
        ]
    )  # fmt: skip
    assert compare_with_songs(additional, songs) == {
        "additional_artists": 5,
        "song_artists": 5,
        "artists_in_both": 4,
        "only_in_additional": 1,
        "artist_name_disagreements": 1,
        "artist_name_filled": 1,
        "artist_mbid_disagreements": 1,
        "artist_mbid_filled": 1,
        "artist_lat_disagreements": 0,
        "artist_lat_filled": 1,
        "artist_long_disagreements": 1,
        "artist_long_filled": 1,
    }
    # A tighter tolerance turns the rounding difference into disagreements.
    tight = compare_with_songs(additional, songs, tolerance=1e-9)
    assert tight["artist_lat_disagreements"] == 1
    assert tight["artist_long_disagreements"] == 2


def test_compare_on_real_artists_finds_no_disagreement_with_itself(real: dict[str, bytes]) -> None:
    frames = additional_frames(real)
    songs = frames.msd_artist.copy()
    songs["source_track_id"] = pd.array(["TRAAAAW128F429D538"] * len(songs), dtype="string")
    result = compare_with_songs(frames.msd_artist, songs)
    assert result["artists_in_both"] == 3888
    assert all(result[f"{c}_disagreements"] == 0 for c in ("artist_name", "artist_mbid"))
    assert result["artist_lat_disagreements"] == 0 and result["artist_lat_filled"] == 0


def test_text_stored_as_blob_is_decoded_strictly(tmp_path: Path) -> None:
    path = tmp_path / "blob.db"
    _db(
        path,
        [
            "CREATE TABLE artists (artist_id text PRIMARY KEY)",
            "CREATE TABLE similarity (target text, similar text)",
        ],
        {"artists": [(A1,)], "similarity": [(A1, A2)]},
    )
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO similarity VALUES (?, ?)", ("é".encode(), A1))
    conn.commit()
    tables = parse_artist_similarity_db(path.read_bytes())
    assert tables["similarity"].values.tolist() == [[A1, A2], ["é", A1]]
    conn.execute("INSERT INTO similarity VALUES (?, ?)", (b"\xff", A1))
    conn.commit()
    conn.close()
    with pytest.raises(AdditionalFileError, match="column 'target': not UTF-8"):
        parse_artist_similarity_db(path.read_bytes())
