"""Normalized frames from the real song files: columns, dtypes, counts and values."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pandas as pd

from msd_dagster.msd.frames import ANALYSIS_KINDS, SINGULAR, normalize_songs, read_songs
from msd_dagster.msd.reader import read_song
from msd_dagster.warehouse.schema import TABLES_BY_NAME, load_columns
from msd_dagster_tests.shared_data import real_song_paths


def _batch():
    paths = real_song_paths()
    songs, rejected = read_songs([(str(p), p) for p in paths])
    assert not rejected
    return paths, normalize_songs(songs)


def test_every_frame_has_exactly_the_loader_columns() -> None:
    _, batch = _batch()
    assert set(batch.frames) == set(TABLES_BY_NAME)
    for table, frame in batch.frames.items():
        assert sorted(frame.columns) == sorted(load_columns(TABLES_BY_NAME[table])), table


def test_analysis_rows_positions_and_values_match_h5py() -> None:
    paths, batch = _batch()
    for table, kind in ANALYSIS_KINDS.items():
        frame = batch.frames[table]
        one = SINGULAR[table]
        expected_rows = 0
        for path in paths:
            with h5py.File(path, "r") as f:
                starts = f[f"analysis/{kind}_start"][()]
                confidence = f[f"analysis/{kind}_confidence"][()]
                rows = frame[frame["track_id"] == path.stem]
                expected_rows += len(starts)
                assert rows[f"track_{one}_id"].tolist() == list(range(1, len(starts) + 1))
                assert np.array_equal(rows[f"{one}_start"].to_numpy(), starts)
                assert np.array_equal(rows[f"{one}_confidence"].to_numpy(), confidence)
                if table == "msd_segment":
                    pitches = f["analysis/segments_pitches"][()]
                    timbre = f["analysis/segments_timbre"][()]
                    got_p = rows[[f"p{i}" for i in range(1, 13)]].to_numpy()
                    got_t = rows[[f"t{i}" for i in range(1, 13)]].to_numpy()
                    assert np.array_equal(got_p, pitches) and np.array_equal(got_t, timbre)
                    assert np.array_equal(
                        rows["segment_loudness_max"].to_numpy(),
                        f["analysis/segments_loudness_max"][()],
                    )
        assert len(frame) == expected_rows, table


def test_track_frame_applies_the_null_rules_and_keeps_types() -> None:
    _, batch = _batch()
    tracks = batch.frames["msd_track"].set_index("track_id")
    assert len(tracks) == 13
    edge = tracks.loc["TRAAADZ128F9348C2E"]
    assert pd.isna(edge["year"]) and pd.isna(edge["danceability"]) and pd.isna(edge["energy"])
    box_tops = tracks.loc["TRAAABD128F429CF47"]
    assert box_tops["year"] == 1969 and box_tops["title"] == "Soul Deep"
    assert box_tops["release"] == "Dimensions" and box_tops["artist_id"] == "ARMJAGH1187FB546F3"
    assert str(tracks["year"].dtype) == "Int32"
    assert tracks["song_hotness"].dtype == np.float64


def test_artist_level_frames_one_row_per_artist_and_stubs_for_similar_artists() -> None:
    paths, batch = _batch()
    artists = batch.frames["msd_artist"]
    assert artists["artist_id"].is_unique
    real = artists[artists["source_track_id"].notna()]
    with h5py.File(paths[1], "r") as f:
        meta = f["metadata/songs"][0]
        similar = [s.decode() for s in f["metadata/similar_artists"][()]]
        terms = [t.decode() for t in f["metadata/artist_terms"][()]]
    row = real.set_index("artist_id").loc[meta["artist_id"].decode()]
    assert row["artist_name"] == meta["artist_name"].decode()
    assert row["artist_lat"] == meta["artist_latitude"]
    # every similar artist resolves to an artist row (real or stub)
    assert set(similar) <= set(artists["artist_id"])
    pairs = batch.frames["msd_artist_similarity"]
    mine = pairs[pairs["artist_id_1"] == meta["artist_id"].decode()]
    assert mine.sort_values("similarity_rank")["artist_id_2"].tolist() == similar
    my_terms = batch.frames["msd_artist_term"]
    my_terms = my_terms[my_terms["artist_id"] == meta["artist_id"].decode()]
    assert my_terms["term_name"].tolist() == terms
    assert set(batch.frames["msd_r_term"]["term_name"]) == set(
        batch.frames["msd_artist_term"]["term_name"]
    )


def test_when_files_of_one_artist_disagree_the_smallest_track_id_wins() -> None:
    paths = real_song_paths()
    first, second = read_song(paths[0]), read_song(paths[1])
    # Make the second song claim the first song's artist, with another name.
    impostor = replace(
        second, metadata={**second.metadata, "artist_id": first.artist_id, "artist_name": "Other"}
    )
    for order in ([first, impostor], [impostor, first]):
        artists = normalize_songs(order).frames["msd_artist"].set_index("artist_id")
        winner = min(first.track_id, impostor.track_id)
        assert artists.loc[first.artist_id, "source_track_id"] == winner
        expected = first.metadata["artist_name"] if winner == first.track_id else "Other"
        assert artists.loc[first.artist_id, "artist_name"] == expected


def test_empty_batch_gives_empty_frames_with_the_right_columns() -> None:
    batch = normalize_songs([])
    for table, frame in batch.frames.items():
        assert len(frame) == 0
        assert sorted(frame.columns) == sorted(load_columns(TABLES_BY_NAME[table]))
