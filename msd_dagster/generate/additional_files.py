"""The subset-style ``AdditionalFiles/`` of a generated dataset: the text lists and the SQLite
databases, written from the dataset's plan so that they agree with its song files."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..msd.additional_files import SEP
from ..source.layout import ADDITIONAL_DIR
from . import distributions as dist

if TYPE_CHECKING:  # the plan's types live with the plan; dataset.py imports this module
    from .dataset import _Plan


def stored_text(text: str, size: int = 1024) -> str:
    """The text as a song file stores it, so side files agree with the song files."""
    return dist.fit_utf8(text, size).decode("utf-8")


def _num(value: float) -> float:
    return -1.0 if math.isnan(value) else value  # track_metadata.db stores NaN as -1


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line + "\n")


def _fresh_db(path: Path) -> sqlite3.Connection:
    if path.exists():
        path.unlink()
    return sqlite3.connect(path)


def write_additional_files(root: Path, plan: _Plan, prefix: str = "subset_") -> Path:
    """Write the subset-style side files for ``plan`` under ``root/AdditionalFiles``."""
    out = root / ADDITIONAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    everyone = sorted(plan.artists + plan.extras, key=lambda a: a.artist_id)
    name_of = {a.artist_id: stored_text(a.name) for a in everyone}

    _write_lines(
        out / f"{prefix}unique_artists.txt",
        (SEP.join((a.artist_id, a.mbid, a.example_track, name_of[a.artist_id])) for a in everyone),
    )
    _write_lines(
        out / f"{prefix}artist_location.txt",
        (
            SEP.join(
                (
                    a.artist_id,
                    repr(a.latitude),
                    repr(a.longitude),
                    a.example_track,
                    name_of[a.artist_id],
                )
            )  # fmt: skip
            for a in everyone
            if not math.isnan(a.latitude)
        ),
    )
    terms = sorted({stored_text(t, 256) for a in everyone for t in a.terms})
    mbtags = sorted({stored_text(t, 256) for a in everyone for t in a.mbtags})
    _write_lines(out / f"{prefix}unique_terms.txt", terms)
    _write_lines(out / f"{prefix}unique_mbtags.txt", mbtags)

    tracks = sorted(plan.tracks, key=lambda t: t.track_id)
    artist_of = [plan.artists[t.artist] for t in tracks]
    _write_lines(
        out / f"{prefix}unique_tracks.txt",
        (
            SEP.join((t.track_id, t.song_id, name_of[a.artist_id], stored_text(t.title)))
            for t, a in zip(tracks, artist_of, strict=True)
        ),
    )
    # Real file: by year, then artist name (later ties in no documented order).
    dated = sorted(
        ((t, a) for t, a in zip(tracks, artist_of, strict=True) if t.year),
        key=lambda ta: (ta[0].year, name_of[ta[1].artist_id], ta[0].track_id),
    )
    _write_lines(
        out / f"{prefix}tracks_per_year.txt",
        (
            SEP.join((str(t.year), t.track_id, name_of[a.artist_id], stored_text(t.title)))
            for t, a in dated
        ),
    )

    # SQLite files, with the table layouts (and indexes) of the MSD's own creation scripts.
    ids = [(a.artist_id,) for a in everyone]
    with _fresh_db(out / f"{prefix}artist_term.db") as db:
        db.executescript(
            """
            CREATE TABLE artists (artist_id text PRIMARY KEY);
            CREATE TABLE terms (term text PRIMARY KEY);
            CREATE TABLE artist_term (artist_id text, term text,
                FOREIGN KEY(artist_id) REFERENCES artists(artist_id),
                FOREIGN KEY(term) REFERENCES terms(term));
            CREATE TABLE mbtags (mbtag text PRIMARY KEY);
            CREATE TABLE artist_mbtag (artist_id text, mbtag text,
                FOREIGN KEY(artist_id) REFERENCES artists(artist_id),
                FOREIGN KEY(mbtag) REFERENCES mbtags(mbtag));
            """
        )
        db.executemany("INSERT INTO artists VALUES (?)", ids)
        db.executemany("INSERT INTO terms VALUES (?)", [(t,) for t in terms])
        db.executemany("INSERT INTO mbtags VALUES (?)", [(t,) for t in mbtags])
        db.executemany(
            "INSERT INTO artist_term VALUES (?, ?)",
            [(a.artist_id, stored_text(t, 256)) for a in everyone for t in a.terms],
        )
        db.executemany(
            "INSERT INTO artist_mbtag VALUES (?, ?)",
            [(a.artist_id, stored_text(t, 256)) for a in everyone for t in a.mbtags],
        )
        db.executescript(
            """
            CREATE INDEX idx_artist_id_term ON artist_term ("artist_id","term");
            CREATE INDEX idx_term_artist_id ON artist_term ("term","artist_id");
            CREATE INDEX idx_artist_id_mbtag ON artist_mbtag ("artist_id","mbtag");
            CREATE INDEX idx_mbtag_artist_id ON artist_mbtag ("mbtag","artist_id");
            """
        )
    db.close()

    # Only pairs whose both ends are artists of this dataset, like the published file.
    known = {a.artist_id for a in everyone}
    with _fresh_db(out / f"{prefix}artist_similarity.db") as db:
        db.executescript(
            """
            CREATE TABLE artists (artist_id text PRIMARY KEY);
            CREATE TABLE similarity (target text, similar text,
                FOREIGN KEY(target) REFERENCES artists(artist_id),
                FOREIGN KEY(similar) REFERENCES artists(artist_id));
            """
        )
        db.executemany("INSERT INTO artists VALUES (?)", ids)
        db.executemany(
            "INSERT INTO similarity VALUES (?, ?)",
            [(a.artist_id, s) for a in everyone for s in a.similar if s in known],
        )
        db.executescript(
            """
            CREATE INDEX idx_target ON similarity ("target","similar");
            CREATE INDEX idx_similar ON similarity ("similar","target");
            """
        )
    db.close()

    with _fresh_db(out / f"{prefix}track_metadata.db") as db:
        db.execute(
            "CREATE TABLE songs (track_id text PRIMARY KEY, title text, song_id text, "
            "release text, artist_id text, artist_mbid text, artist_name text, duration real, "
            "artist_familiarity real, artist_hotttnesss real, year int, track_7digitalid int, "
            "shs_perf int, shs_work int)"
        )
        db.executemany(
            "INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    t.track_id,
                    stored_text(t.title),
                    t.song_id,
                    stored_text(t.release),
                    a.artist_id,
                    a.mbid,
                    name_of[a.artist_id],
                    _num(t.scalars.duration),
                    _num(a.familiarity),
                    _num(a.hotttnesss),
                    t.year,
                    t.track_7digitalid,
                    t.shs_perf,
                    t.shs_work,
                )  # fmt: skip
                for t, a in zip(tracks, artist_of, strict=True)
            ],
        )
        db.executescript(
            """
            CREATE INDEX idx_artist_id ON songs ("artist_id","release");
            CREATE INDEX idx_artist_mbid ON songs ("artist_mbid","release");
            CREATE INDEX idx_artist_name ON songs ("artist_name","title","release");
            CREATE INDEX idx_duration ON songs ("duration","artist_id");
            CREATE INDEX idx_year ON songs ("year","artist_id","title");
            """
        )
    db.close()
    return out
