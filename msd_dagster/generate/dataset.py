"""Generate a synthetic MSD dataset root: ``data/<c3>/<c4>/<c5>/<TRACK_ID>.h5`` and, optionally,
the subset-style ``AdditionalFiles/``.

Generation happens in two steps so that the result never depends on the number of workers:

1. A *plan* is drawn in the calling process from seeded generators: artists (ids, names,
   terms, tags, similar artists, location), the tracks' ids, artist, titles and song-level
   values. It is small (a few MB for 10,000 tracks).
2. Each track file is written from its plan entry plus its own generator, seeded with
   ``(seed, track index)``, which draws the analysis arrays. Workers only run step 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import distributions as dist
from .additional_files import stored_text, write_additional_files
from .song_file import SongData, write_song_file

ROW_KINDS: tuple[str, ...] = (
    "bars", "beats", "sections", "tatums", "segments", "terms", "mbtags", "similar",
)  # fmt: skip

# Independent random streams, so that e.g. adding extra artists never shifts track values.
_STREAM_ARTISTS, _STREAM_TRACKS, _STREAM_EXTRAS, _STREAM_SONG = 1, 2, 3, 4


@dataclass(frozen=True)
class GeneratedDataset:
    """What ``generate_dataset`` wrote, with the counts a loader should find.

    ``rows`` sums over all song files: analysis rows per kind (bars, beats, sections, tatums,
    segments) and the per-file artist arrays (terms, mbtags, similar: repeated in every file of
    the same artist). ``artist_rows`` counts terms/mbtags/similar once per artist with songs.
    ``track_rows`` has the same keys as ``rows`` for each track. ``unique_terms`` and
    ``unique_mbtags`` are those found in the song files; the AdditionalFiles lists also include
    the terms and tags of ``extra_artist_ids`` (artists listed there without any song file).
    """

    root: Path
    seed: int
    track_ids: list[str]
    artist_ids: list[str]
    folders: list[str]
    rows: dict[str, int]
    track_rows: dict[str, dict[str, int]]
    artist_rows: dict[str, int]
    track_artist: dict[str, str]
    song_ids: dict[str, str]
    unique_terms: list[str]
    unique_mbtags: list[str]
    extra_artist_ids: list[str] = field(default_factory=list)
    additional_files: Path | None = None

    def track_path(self, track_id: str) -> Path:
        return self.root / "data" / track_id[2] / track_id[3] / track_id[4] / f"{track_id}.h5"


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtistSpec:
    artist_id: str
    name: str
    mbid: str
    location: str
    latitude: float
    longitude: float
    familiarity: float
    hotttnesss: float
    digital_id: int
    playme_id: int
    terms: tuple[str, ...]
    terms_freq: tuple[float, ...]
    terms_weight: tuple[float, ...]
    mbtags: tuple[str, ...]
    mbtags_count: tuple[int, ...]
    similar: tuple[str, ...]
    script: str
    example_track: str = ""


@dataclass(frozen=True)
class TrackSpec:
    index: int
    track_id: str
    song_id: str
    artist: int
    title: str
    release: str
    release_7digitalid: int
    track_7digitalid: int
    song_hotttnesss: float
    year: int
    audio_md5: str
    scalars: dist.SongScalars
    shs_perf: int
    shs_work: int


@dataclass
class _Plan:
    artists: list[ArtistSpec]
    extras: list[ArtistSpec]
    tracks: list[TrackSpec]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _artist_core(rng: np.random.Generator, artist_id: str) -> dict:
    """Artist-level values except similar artists (drawn once all ids are known)."""
    script = dist.pick_script(rng)
    name = dist.long_artist_name(rng) if rng.random() < 0.003 else dist.artist_name(rng, script)
    mbid = "" if rng.random() < dist.MBID_EMPTY_RATE else dist.make_mbid(rng)
    lat = lon = math.nan
    if rng.random() >= dist.LOCATION_NAN_RATE:
        location, lat, lon = dist.LOCATIONS[int(rng.integers(0, len(dist.LOCATIONS)))]
    elif rng.random() < 0.45:
        # Real files often name a place without coordinates ("London, England", NaN, NaN).
        if rng.random() < 0.5:
            location = dist.LOCATIONS[int(rng.integers(0, len(dist.LOCATIONS)))][0]
        else:
            location = dist.VAGUE_LOCATIONS[int(rng.integers(0, len(dist.VAGUE_LOCATIONS)))]
    else:
        location = ""
    # ~25 terms per artist on average (97,500 pairs / 3,888 artists), a few with none.
    n_terms = (
        0 if rng.random() < 0.01 else int(dist.clip(round(float(rng.gamma(2.2, 11.5))), 1, 80))
    )
    idx = dist.weighted_sample(rng, dist._TERM_LOGW, n_terms)
    terms = tuple(dist.TERMS[i] for i in idx)
    weight = np.sort(rng.uniform(0.25, 1.0, len(terms)))[::-1]
    freq = rng.uniform(0.3, 1.0, len(terms))
    if len(terms):
        weight[0] = 1.0  # the top term's weight is always exactly 1 in real files
        freq[int(np.argmax(freq))] = 1.0
    if rng.random() < dist.MBTAGS_EMPTY_RATE:
        mbtags: tuple[str, ...] = ()
    else:
        n_tags = min(int(rng.geometric(0.6)), 25)
        mbtags = tuple(dist.MBTAGS[i] for i in dist.weighted_sample(rng, dist._MBTAG_LOGW, n_tags))
    familiarity = math.nan if rng.random() < 0.002 else float(rng.beta(6.0, 4.5))
    return dict(
        artist_id=artist_id,
        name=name,
        mbid=mbid,
        location=location,
        latitude=lat,
        longitude=lon,
        familiarity=familiarity,
        hotttnesss=0.0 if rng.random() < 0.01 else float(rng.beta(5.0, 7.0)),
        digital_id=-1 if rng.random() < 0.05 else int(rng.integers(1, 800_000)),
        playme_id=-1 if rng.random() < 0.55 else int(rng.integers(1, 70_000)),
        terms=terms,
        terms_freq=tuple(float(x) for x in freq),
        terms_weight=tuple(float(x) for x in weight),
        mbtags=mbtags,
        mbtags_count=tuple(int(c) for c in rng.geometric(0.7, len(mbtags))),
        script=script,
    )


def _distinct_draw(rng: np.random.Generator, n: int, k: int, exclude: int = -1) -> list[int]:
    """``k`` distinct integers in [0, n) other than ``exclude``, cheap for k << n."""
    k = min(k, n - (1 if 0 <= exclude < n else 0))
    out: list[int] = []
    seen = {exclude}
    while len(out) < k:
        for v in rng.integers(0, n, k - len(out) + 8).tolist():
            if v not in seen:
                seen.add(v)
                out.append(v)
                if len(out) == k:
                    break
    return out


def _similar_lists(
    rng: np.random.Generator, ids: list[str], pool: list[str]
) -> list[tuple[str, ...]]:
    # ~100 similar artists each; ~11% of them inside the dataset (43,000 in-subset pairs for
    # 3,888 artists), the rest from a shared pool of artists that have no song here.
    out = []
    for i in range(len(ids)):
        n = 100 if rng.random() < 0.9 else int(rng.integers(0, 100))
        n_in = min(int(rng.binomial(n, 0.11)), len(ids) - 1)
        chosen = [ids[j] for j in _distinct_draw(rng, len(ids), n_in, exclude=i)]
        chosen += [pool[j] for j in _distinct_draw(rng, len(pool), n - len(chosen))]
        order = rng.permutation(len(chosen))
        out.append(tuple(chosen[j] for j in order))
    return out


def _build_plan(songs: int, seed: int, folders: list[str], weights: np.ndarray) -> _Plan:
    ra = _rng(seed, _STREAM_ARTISTS)
    rt = _rng(seed, _STREAM_TRACKS)
    rx = _rng(seed, _STREAM_EXTRAS)

    n_art = min(songs, max(1, round(songs / dist.TRACKS_PER_ARTIST))) if songs else 0
    n_extra = max(3, n_art // 50) if songs else 0
    taken: set[str] = set()
    artist_ids = dist.unique_ids(lambda: dist.make_artist_id(ra), n_art, taken)
    extra_ids = dist.unique_ids(lambda: dist.make_artist_id(rx), n_extra, taken)
    pool = dist.unique_ids(lambda: dist.make_artist_id(ra), max(200, 10 * n_art), taken)
    cores = [_artist_core(ra, a) for a in artist_ids]
    extra_cores = [_artist_core(rx, a) for a in extra_ids]

    # Guaranteed edge cases (when the dataset is big enough to have room for them), so that
    # even small test datasets exercise them: the tags an earlier loader dropped, a name over
    # 200 characters, an artist with no mbid and one with no tags.
    if n_art >= 20:
        cores[n_art // 2]["name"] = dist.long_artist_name(ra)
        cores[n_art // 3]["mbid"] = ""
        cores[n_art // 4]["mbtags"], cores[n_art // 4]["mbtags_count"] = (), ()
    tagged = [c for c in cores if c["mbtags"]]
    if len(tagged) >= 3:
        for core, extra in zip(tagged[:3], (dist.SPECIAL_MBTAGS[:2], dist.SPECIAL_MBTAGS[2:3],
                                        dist.SPECIAL_MBTAGS[3:]), strict=True):  # fmt: skip
            new = tuple(t for t in extra if t not in core["mbtags"])
            core["mbtags"] += new
            core["mbtags_count"] += tuple(1 for _ in new)

    all_ids = artist_ids + extra_ids
    similar = _similar_lists(ra, all_ids, pool)

    # Track counts per artist: everyone has one, the rest go to a heavy-tailed few.
    counts = np.ones(n_art, dtype=np.int64)
    if n_art:
        w = ra.lognormal(0.0, 1.1, n_art)
        counts += ra.multinomial(songs - n_art, w / w.sum())
    artist_of = np.repeat(np.arange(n_art), counts)
    rt.shuffle(artist_of)

    folder_idx = rt.choice(len(folders), size=songs, p=weights)
    tids = set()
    track_ids = []
    for i in range(songs):
        tid = dist.make_track_id(rt, folders[int(folder_idx[i])])
        while tid in tids:
            tid = dist.make_track_id(rt, folders[int(folder_idx[i])])
        tids.add(tid)
        track_ids.append(tid)
    song_ids = dist.unique_ids(lambda: dist.make_song_id(rt), songs, set())
    # Sort tracks by id so that a track's index (and its array seed) is its rank.
    order = sorted(range(songs), key=track_ids.__getitem__)

    releases: dict[int, list[tuple[str, int]]] = {}
    empty_idx = int(rt.integers(0, songs)) if songs >= 50 else -1
    long_idx = int(rt.integers(0, songs)) if songs >= 20 else -1
    tracks: list[TrackSpec] = []
    for rank, i in enumerate(order):
        a = int(artist_of[i])
        script = cores[a]["script"]
        rel = releases.setdefault(a, [])
        if not rel or rt.random() < 0.35:
            rel.append((dist.title_text(rt, script, release=True), int(rt.integers(1, 900_000))))
        release, release_7d = rel[int(rt.integers(0, len(rel)))]
        if rank == long_idx or rt.random() < 0.002:
            title = dist.long_title(rt)
        else:
            title = dist.title_text(rt, script)
        empty = rank == empty_idx or rt.random() < dist.EMPTY_RHYTHM_RATE
        cover = rt.random() < 0.02
        tracks.append(
            TrackSpec(
                index=rank,
                track_id=track_ids[i],
                song_id=song_ids[i],
                artist=a,
                title=title,
                release=release,
                release_7digitalid=release_7d,
                track_7digitalid=int(rt.integers(1, 9_000_000)),
                song_hotttnesss=dist.song_hotttnesss(rt),
                year=dist.year_value(rt),
                audio_md5=dist.make_md5(rt),
                scalars=dist.song_scalars(rt, empty_rhythm=empty),
                shs_perf=int(rt.integers(1, 200_000)) if cover else -1,
                shs_work=int(rt.integers(1, 20_000)) if cover else 0,
            )
        )

    # Example track per artist (unique_artists.txt): one of its tracks, not necessarily the
    # first; extras point at a track id that has no file.
    by_artist: dict[int, list[str]] = {}
    for t in tracks:
        by_artist.setdefault(t.artist, []).append(t.track_id)
    artists = [
        ArtistSpec(
            **core,
            similar=similar[k],
            example_track=by_artist[k][int(ra.integers(0, len(by_artist[k])))],
        )
        for k, core in enumerate(cores)
    ]
    extras = []
    for k, core in enumerate(extra_cores):
        phantom = dist.make_track_id(rx, folders[int(rx.integers(0, len(folders)))])
        while phantom in tids:
            phantom = dist.make_track_id(rx, folders[int(rx.integers(0, len(folders)))])
        tids.add(phantom)
        extras.append(ArtistSpec(**core, similar=similar[n_art + k], example_track=phantom))
    return _Plan(artists=artists, extras=extras, tracks=tracks)


# ---------------------------------------------------------------------------------------------
# Song files
# ---------------------------------------------------------------------------------------------


def _song_data(track: TrackSpec, artist: ArtistSpec, seed: int) -> tuple[SongData, dict]:
    rng = _rng(seed, _STREAM_SONG, track.index)
    extdim_base = int(rng.integers(1820, 1940))
    # Real files were written around December 2010 (e.g. 1292729885 = 2010-12-19).
    timestamp = 1_291_000_000 + int(rng.integers(0, 3_000_000))
    s = track.scalars
    arrays: dict[str, object] = {
        f"analysis/{k}": v for k, v in dist.analysis_arrays(rng, s).items()
    }
    arrays["metadata/similar_artists"] = artist.similar
    arrays["metadata/artist_terms"] = artist.terms
    arrays["metadata/artist_terms_freq"] = np.array(artist.terms_freq, dtype=float)
    arrays["metadata/artist_terms_weight"] = np.array(artist.terms_weight, dtype=float)
    arrays["musicbrainz/artist_mbtags"] = artist.mbtags
    arrays["musicbrainz/artist_mbtags_count"] = np.array(artist.mbtags_count, dtype=np.int32)
    metadata = {
        "analyzer_version": "",
        "artist_7digitalid": artist.digital_id,
        "artist_familiarity": artist.familiarity,
        "artist_hotttnesss": artist.hotttnesss,
        "artist_id": artist.artist_id,
        "artist_latitude": artist.latitude,
        "artist_location": artist.location,
        "artist_longitude": artist.longitude,
        "artist_mbid": artist.mbid,
        "artist_name": artist.name,
        "artist_playmeid": artist.playme_id,
        "genre": "",
        "release": track.release,
        "release_7digitalid": track.release_7digitalid,
        "song_hotttnesss": track.song_hotttnesss,
        "song_id": track.song_id,
        "title": track.title,
        "track_7digitalid": track.track_7digitalid,
    }
    analysis = {
        "analysis_sample_rate": 22050,
        "audio_md5": track.audio_md5,
        "danceability": 0.0,  # never computed in the MSD
        "duration": s.duration,
        "end_of_fade_in": s.end_of_fade_in,
        "energy": 0.0,  # never computed in the MSD
        "key": s.key,
        "key_confidence": s.key_confidence,
        "loudness": s.loudness,
        "mode": s.mode,
        "mode_confidence": s.mode_confidence,
        "start_of_fade_out": s.start_of_fade_out,
        "tempo": s.tempo,
        "time_signature": s.time_signature,
        "time_signature_confidence": s.time_signature_confidence,
        "track_id": track.track_id,
    }
    counts = {k: len(arrays[f"analysis/{k}_start"]) for k in ROW_KINDS[:5]}  # type: ignore[arg-type]
    counts.update(terms=len(artist.terms), mbtags=len(artist.mbtags), similar=len(artist.similar))
    song = SongData(
        metadata=metadata, analysis=analysis, year=track.year, arrays=arrays,
        extdim_base=extdim_base, timestamp=timestamp,
    )  # fmt: skip
    return song, counts


def _write_track(job: tuple[str, int, TrackSpec, ArtistSpec]) -> tuple[str, dict[str, int]]:
    root, seed, track, artist = job
    song, counts = _song_data(track, artist, seed)
    tid = track.track_id
    folder = Path(root) / "data" / tid[2] / tid[3] / tid[4]
    folder.mkdir(parents=True, exist_ok=True)
    write_song_file(folder / f"{tid}.h5", song)
    return tid, counts


def _write_tracks(
    root: Path,
    seed: int,
    plan: _Plan,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, dict[str, int]]:
    jobs: Iterable = ((str(root), seed, t, plan.artists[t.artist]) for t in plan.tracks)
    total = len(plan.tracks)
    results: dict[str, dict[str, int]] = {}
    if workers <= 1 or total < 2:
        results_iter: Iterable = map(_write_track, jobs)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=workers)
        chunk = max(1, min(64, total // (workers * 8)))
        results_iter = executor.map(_write_track, jobs, chunksize=chunk)
    try:
        for done, (tid, counts) in enumerate(results_iter, start=1):
            results[tid] = counts
            if progress is not None:
                progress(done, total)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return results


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _resolve_folders(folders: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    if folders is None:
        names = [f for f, _ in dist.SUBSET_FOLDER_COUNTS]
        w = np.array([c for _, c in dist.SUBSET_FOLDER_COUNTS], dtype=float)
    else:
        if isinstance(folders, str):
            raise TypeError("folders must be a sequence of keys like ['A/B'], not a string")
        names = list(dict.fromkeys(folders))  # de-duplicated, order kept
        if not names:
            raise ValueError("folders must not be empty")
        for f in names:
            dist.parse_folder(f)
        w = np.ones(len(names))
    return names, w / w.sum()


def generate_dataset(
    out: str | Path,
    songs: int,
    *,
    seed: int = 0,
    folders: Sequence[str] | None = None,
    additional_files: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> GeneratedDataset:
    """Write a synthetic MSD dataset of ``songs`` tracks under ``out``.

    Files go to ``out/data/<c3>/<c4>/<c5>/<TRACK_ID>.h5``. ``folders`` lists second-level
    folder keys ("A/B" means track ids start with "TRAB"), evenly weighted; by default the
    subset's 35 folders weighted like the subset. The same arguments always give the same
    content (and the same bytes), whatever ``workers`` is; ``workers > 1`` writes the files in a
    process pool. ``progress(done, total)`` is called after each file.
    """
    if songs < 0:
        raise ValueError("songs must be >= 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")  # numpy's SeedSequence takes non-negative ints
    if workers < 1:
        raise ValueError("workers must be >= 1")
    root = Path(out)
    names, weights = _resolve_folders(folders)
    plan = _build_plan(songs, seed, names, weights)
    (root / "data").mkdir(parents=True, exist_ok=True)
    track_rows = _write_tracks(root, seed, plan, workers, progress)

    extra_dir = write_additional_files(root, plan) if additional_files else None

    track_ids = sorted(track_rows)
    rows = {k: sum(r[k] for r in track_rows.values()) for k in ROW_KINDS}
    used = sorted({t.artist for t in plan.tracks})
    artist_rows = {
        "terms": sum(len(plan.artists[a].terms) for a in used),
        "mbtags": sum(len(plan.artists[a].mbtags) for a in used),
        "similar": sum(len(plan.artists[a].similar) for a in used),
    }
    return GeneratedDataset(
        root=root,
        seed=seed,
        track_ids=track_ids,
        artist_ids=sorted(plan.artists[a].artist_id for a in used),
        folders=names,
        rows=rows,
        track_rows={tid: track_rows[tid] for tid in track_ids},
        artist_rows=artist_rows,
        track_artist={t.track_id: plan.artists[t.artist].artist_id for t in plan.tracks},
        song_ids={t.track_id: t.song_id for t in plan.tracks},
        unique_terms=sorted({stored_text(t, 256) for a in used for t in plan.artists[a].terms}),
        unique_mbtags=sorted({stored_text(t, 256) for a in used for t in plan.artists[a].mbtags}),
        extra_artist_ids=sorted(a.artist_id for a in plan.extras) if additional_files else [],
        additional_files=extra_dir,
    )


__all__ = ["GeneratedDataset", "generate_dataset", "write_additional_files", "ROW_KINDS"]
