"""Parse the MSD's AdditionalFiles and shape them like the loader's frames.

The dataset ships side files next to ``data/``: ``<SEP>``-separated text files and SQLite
databases (see the reference, section 4). They are optional inputs: any of them may be missing,
and subset names carry a ``subset_`` prefix. Everything here is pure (bytes in, frames out) so
the same code serves files read from S3 and from disk.

Rules that matter:

* Text is decoded as UTF-8, strictly: a byte sequence that is not UTF-8 is an error naming the
  file and the line, never a silently replaced character. Values are kept as published
  (trailing spaces, no-break spaces, control characters, junk tags like
  ``1 13 165900 150 ...``); only the line terminator (``\\n`` or ``\\r\\n``) is removed.
* A line with the wrong number of ``<SEP>`` fields, or an id / number that does not parse,
  raises :class:`AdditionalFileError` with the file name and the 1-based line number.
* Unknown values follow :mod:`msd_dagster.msd.nulls`: empty text, ``-1`` for NaN in
  ``track_metadata.db``, year 0 and non-positive 7digital ids become NULL.
* The frames built by :func:`additional_frames` have exactly the loader columns and dtypes of
  :mod:`msd_dagster.msd.frames`. Their ``msd_artist`` rows have ``source_track_id`` NULL: song
  files always win over these rows (:func:`compare_with_songs` reports where they disagree).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from msd_dagster.msd.frames import dictionary_frame, typed_columns
from msd_dagster.msd.nulls import null_if_unknown
from msd_dagster.warehouse import schema

SEP = "<SEP>"

TEXT_FILES: tuple[str, ...] = (
    "unique_artists",
    "artist_location",
    "unique_terms",
    "unique_mbtags",
    "unique_tracks",
    "tracks_per_year",
)
SQLITE_FILES: tuple[str, ...] = ("artist_term", "artist_similarity", "track_metadata")
ADDITIONAL_FILE_NAMES: tuple[str, ...] = TEXT_FILES + SQLITE_FILES

# Float columns of track_metadata.db where the MSD wrote -1 for NaN (none can be -1 for real:
# durations are positive, familiarity and hotttnesss lie in [0, 1]).
TRACK_METADATA_FLOATS: tuple[str, ...] = ("duration", "artist_familiarity", "artist_hotttnesss")
# Integer columns; year 0 and 7digital ids <= 0 are "unknown" (nulls.py), SecondHandSongs ids
# are -1 when the track is not in SecondHandSongs.
TRACK_METADATA_INTS: tuple[str, ...] = ("year", "track_7digitalid", "shs_perf", "shs_work")
TRACK_METADATA_REQUIRED: tuple[str, ...] = (
    "track_id",
    "title",
    "song_id",
    "release",
    "artist_id",
    "artist_mbid",
    "artist_name",
    "duration",
    "artist_familiarity",
    "artist_hotttnesss",
    "year",
)
TRACK_METADATA_OPTIONAL: tuple[str, ...] = ("track_7digitalid", "shs_perf", "shs_work")


class AdditionalFileError(ValueError):
    """An AdditionalFiles file that cannot be read as published; names the file and line."""

    def __init__(self, name: str, line_number: int | None, reason: str) -> None:
        self.name = name
        self.line_number = line_number
        self.reason = reason
        where = f"{name}, line {line_number}" if line_number is not None else name
        super().__init__(f"{where}: {reason}")


def _check_logical(logical: str) -> None:
    if logical not in ADDITIONAL_FILE_NAMES:
        raise ValueError(
            f"unknown AdditionalFiles name {logical!r}; expected one of {ADDITIONAL_FILE_NAMES}"
        )


def default_file_name(logical: str) -> str:
    """The full-dataset file name: ``unique_artists`` -> ``unique_artists.txt``."""
    _check_logical(logical)
    return f"{logical}.db" if logical in SQLITE_FILES else f"{logical}.txt"


def candidate_file_names(logical: str) -> list[str]:
    """File names a logical name may have: the subset name first, then the plain one."""
    plain = default_file_name(logical)
    return [f"subset_{plain}", plain]


def match_file_names(available: Iterable[str]) -> dict[str, str]:
    """Map each logical name to the first of its candidates among ``available`` file names.

    ``available`` may hold bare names or paths/keys (``AdditionalFiles/subset_x.txt``); the
    value returned is the entry as given. Logical names with no file are left out.
    """
    by_base: dict[str, str] = {}
    for entry in available:
        base = entry.replace("\\", "/").rsplit("/", 1)[-1]
        by_base.setdefault(base, entry)
    found: dict[str, str] = {}
    for logical in ADDITIONAL_FILE_NAMES:
        for candidate in candidate_file_names(logical):
            if candidate in by_base:
                found[logical] = by_base[candidate]
                break
    return found


# --------------------------------------------------------------------------------------------
# Text files
# --------------------------------------------------------------------------------------------


def _decode(data: bytes, name: str) -> str:
    try:
        # utf-8-sig: a leading byte-order mark is not part of the first value; still strict.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AdditionalFileError(
            name, line, f"not UTF-8 (byte {data[exc.start : exc.start + 1]!r})"
        ) from exc


def _lines(data: bytes, name: str) -> Iterable[tuple[int, str]]:
    """(1-based line number, line) for every non-empty line, terminator removed.

    Splits on ``\\n`` only: ``str.splitlines`` would also split on characters that occur inside
    published values (``\\x1c``, ``\\x85``, ``\\u2028`` ...).
    """
    for number, line in enumerate(_decode(data, name).split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if line:
            yield number, line


def _split_lines(
    data: bytes, name: str, columns: Iterable[str]
) -> tuple[list[int], list[list[str]]]:
    columns = list(columns)
    numbers: list[int] = []
    rows: list[list[str]] = []
    for number, line in _lines(data, name):
        fields = line.split(SEP)
        if len(fields) != len(columns):
            raise AdditionalFileError(
                name,
                number,
                f"expected {len(columns)} {SEP}-separated fields "
                f"({', '.join(columns)}), found {len(fields)}",
            )
        numbers.append(number)
        rows.append(fields)
    return numbers, rows


def _check_ids(values: list[str], numbers: list[int], name: str, column: str, prefix: str) -> None:
    # MSD ids are 18 ASCII characters with a fixed prefix; a mismatch means a shifted column or
    # the wrong file, which would otherwise load garbage into CHAR(18) keys.
    for number, value in zip(numbers, values, strict=True):
        if len(value) != 18 or not value.startswith(prefix) or not value.isascii():
            raise AdditionalFileError(name, number, f"{column} {value!r} is not an MSD id")


def _floats(values: list[str], numbers: list[int], name: str, column: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, (number, value) in enumerate(zip(numbers, values, strict=True)):
        if value.strip() == "":
            out[i] = np.nan
            continue
        try:
            out[i] = float(value)
        except ValueError:
            raise AdditionalFileError(name, number, f"{column} {value!r} is not a number") from None
    return out


def _ints(values: list[str], numbers: list[int], name: str, column: str) -> pd.arrays.IntegerArray:
    out: list[int] = []
    for number, value in zip(numbers, values, strict=True):
        try:
            out.append(int(value))
        except ValueError:
            raise AdditionalFileError(
                name, number, f"{column} {value!r} is not an integer"
            ) from None
    return pd.array(out, dtype="Int32")


def _text(values: list[str]) -> pd.arrays.StringArray:
    # Empty text means "unknown" in the MSD (nulls.py); everything else is kept verbatim.
    return pd.array([v if v else None for v in values], dtype="string")


@dataclass(frozen=True)
class _SepLayout:
    """The columns of a ``<SEP>`` file in order; which hold MSD ids (column -> prefix), floats
    and integers (the rest is text)."""

    columns: tuple[str, ...]
    ids: Mapping[str, str]
    floats: tuple[str, ...] = ()
    ints: tuple[str, ...] = ()


_UNIQUE_ARTISTS = _SepLayout(
    ("artist_id", "artist_mbid", "track_id", "artist_name"),
    ids={"artist_id": "AR", "track_id": "TR"},
)
_ARTIST_LOCATION = _SepLayout(
    ("artist_id", "latitude", "longitude", "track_id", "artist_name"),
    ids={"artist_id": "AR", "track_id": "TR"},
    floats=("latitude", "longitude"),
)
_UNIQUE_TRACKS = _SepLayout(
    ("track_id", "song_id", "artist_name", "title"), ids={"track_id": "TR", "song_id": "SO"}
)
_TRACKS_PER_YEAR = _SepLayout(
    ("year", "track_id", "artist_name", "title"), ids={"track_id": "TR"}, ints=("year",)
)


def _sep_frame(data: bytes, name: str, layout: _SepLayout) -> pd.DataFrame:
    columns = layout.columns
    numbers, rows = _split_lines(data, name, columns)
    values: dict[str, list[str]] = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
    out: dict[str, object] = {}
    for column in columns:
        if column in layout.ids:
            _check_ids(values[column], numbers, name, column, layout.ids[column])
        if column in layout.floats:
            out[column] = _floats(values[column], numbers, name, column)
        elif column in layout.ints:
            out[column] = _ints(values[column], numbers, name, column)
        else:
            out[column] = _text(values[column])
    return pd.DataFrame(out, columns=list(columns))


def parse_unique_artists(data: bytes, name: str = "unique_artists.txt") -> pd.DataFrame:
    """artist_id, artist_mbid (NULL when empty), track_id (one example track), artist_name."""
    return _sep_frame(data, name, _UNIQUE_ARTISTS)


def parse_artist_location(data: bytes, name: str = "artist_location.txt") -> pd.DataFrame:
    """artist_id, latitude, longitude (float64), track_id, artist_name."""
    return _sep_frame(data, name, _ARTIST_LOCATION)


def _one_per_line(data: bytes, name: str, column: str) -> pd.DataFrame:
    values = [line for _, line in _lines(data, name)]
    return pd.DataFrame({column: pd.array(values, dtype="string")})


def parse_unique_terms(data: bytes, name: str = "unique_terms.txt") -> pd.DataFrame:
    """One Echo Nest term a line, as published (column ``term``)."""
    return _one_per_line(data, name, "term")


def parse_unique_mbtags(data: bytes, name: str = "unique_mbtags.txt") -> pd.DataFrame:
    """One MusicBrainz tag a line, as published, junk lines included (column ``mbtag``)."""
    return _one_per_line(data, name, "mbtag")


def parse_unique_tracks(data: bytes, name: str = "unique_tracks.txt") -> pd.DataFrame:
    """track_id, song_id, artist_name, title."""
    return _sep_frame(data, name, _UNIQUE_TRACKS)


def parse_tracks_per_year(data: bytes, name: str = "tracks_per_year.txt") -> pd.DataFrame:
    """year (Int32), track_id, artist_name, title: only tracks with a known year."""
    return _sep_frame(data, name, _TRACKS_PER_YEAR)


# --------------------------------------------------------------------------------------------
# SQLite files
# --------------------------------------------------------------------------------------------


def _open_sqlite(data: bytes, name: str) -> sqlite3.Connection:
    # Connection.deserialize (Python 3.11+) opens the database in memory: no temp file to
    # write, clean up or leak on a read-only worker.
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise AdditionalFileError(name, None, f"not a SQLite database ({exc})") from exc
    return conn


def _table_columns(conn: sqlite3.Connection, name: str, table: str) -> list[str]:
    columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
    if not columns:
        raise AdditionalFileError(name, None, f"table {table!r} is missing")
    return columns


def _read_table(
    conn: sqlite3.Connection,
    name: str,
    table: str,
    columns: tuple[str, ...],
    optional: tuple[str, ...] = (),
    order_by: int | None = None,
) -> dict[str, list[object]]:
    """The listed columns of a table (optional ones only when present).

    Rows are ordered by the first ``order_by`` columns (default: all required ones), so the
    same file always gives the same frame.
    """
    existing = set(_table_columns(conn, name, table))
    missing = [c for c in columns if c not in existing]
    if missing:
        raise AdditionalFileError(name, None, f"table {table!r} has no column(s) {missing}")
    selected = [*columns, *(c for c in optional if c in existing)]
    quoted = ", ".join(f'"{c}"' for c in selected)
    order = ", ".join(str(i + 1) for i in range(order_by or len(columns)))
    try:
        rows = conn.execute(f'SELECT {quoted} FROM "{table}" ORDER BY {order}').fetchall()
    except sqlite3.Error as exc:  # e.g. "Could not decode to UTF-8 column ..."
        raise AdditionalFileError(name, None, f"table {table!r}: {exc}") from exc
    values: dict[str, list[object]] = {c: [] for c in selected}
    for row in rows:
        for column, value in zip(selected, row, strict=True):
            values[column].append(value)
    return values


def _db_text(values: list[object], name: str, table: str, column: str) -> list[str | None]:
    out: list[str | None] = []
    for value in values:
        if isinstance(value, bytes):  # TEXT stored as BLOB: decode strictly, like the text files
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AdditionalFileError(
                    name, None, f"table {table!r}, column {column!r}: not UTF-8"
                ) from exc
        out.append(None if value is None else str(value))
    return out


def _db_key_frame(
    conn: sqlite3.Connection, name: str, table: str, columns: tuple[str, ...]
) -> pd.DataFrame:
    values = _read_table(conn, name, table, columns)
    out: dict[str, object] = {}
    for column in columns:
        texts = _db_text(values[column], name, table, column)
        if any(v is None for v in texts):
            raise AdditionalFileError(name, None, f"table {table!r} has NULL {column!r} values")
        out[column] = pd.array(texts, dtype="string")
    return pd.DataFrame(out, columns=list(columns))


def parse_artist_term_db(data: bytes, name: str = "artist_term.db") -> dict[str, pd.DataFrame]:
    """Frames ``artists`` (artist_id), ``terms`` (term), ``artist_term`` (artist_id, term),
    ``mbtags`` (mbtag) and ``artist_mbtag`` (artist_id, mbtag), values as published."""
    conn = _open_sqlite(data, name)
    try:
        return {
            "artists": _db_key_frame(conn, name, "artists", ("artist_id",)),
            "terms": _db_key_frame(conn, name, "terms", ("term",)),
            "artist_term": _db_key_frame(conn, name, "artist_term", ("artist_id", "term")),
            "mbtags": _db_key_frame(conn, name, "mbtags", ("mbtag",)),
            "artist_mbtag": _db_key_frame(conn, name, "artist_mbtag", ("artist_id", "mbtag")),
        }
    finally:
        conn.close()


def parse_artist_similarity_db(
    data: bytes, name: str = "artist_similarity.db"
) -> dict[str, pd.DataFrame]:
    """Frames ``artists`` (artist_id) and ``similarity`` (target, similar); asymmetric."""
    conn = _open_sqlite(data, name)
    try:
        return {
            "artists": _db_key_frame(conn, name, "artists", ("artist_id",)),
            "similarity": _db_key_frame(conn, name, "similarity", ("target", "similar")),
        }
    finally:
        conn.close()


def _float_or_nan(value: object) -> float:
    if value is None:
        return math.nan
    number = float(value)  # type: ignore[arg-type]
    # The MSD wrote -1 where the song file had NaN.
    return math.nan if number == -1 else number


def parse_track_metadata_db(
    data: bytes, name: str = "track_metadata.db"
) -> dict[str, pd.DataFrame]:
    """Frame ``songs``: one row per track, ordered by track_id.

    -1 becomes NaN in duration, artist_familiarity and artist_hotttnesss (the MSD's NaN);
    year 0, track_7digitalid <= 0 and shs_perf / shs_work -1 become NULL; empty text NULL.
    track_7digitalid, shs_perf and shs_work are included when the table has them.
    """
    conn = _open_sqlite(data, name)
    try:
        values = _read_table(
            conn,
            name,
            "songs",
            TRACK_METADATA_REQUIRED,
            optional=TRACK_METADATA_OPTIONAL,
            order_by=1,
        )
    finally:
        conn.close()
    out: dict[str, object] = {}
    for column, column_values in values.items():
        try:
            if column in TRACK_METADATA_FLOATS:
                out[column] = np.array([_float_or_nan(v) for v in column_values], dtype=np.float64)
            elif column in TRACK_METADATA_INTS:
                ints = [None if v is None else int(v) for v in column_values]  # type: ignore[call-overload]
                if column in ("shs_perf", "shs_work"):
                    ints = [None if v == -1 else v for v in ints]
                else:
                    ints = [null_if_unknown(column, v) for v in ints]
                out[column] = pd.array(ints, dtype="Int32")
            else:
                texts = _db_text(column_values, name, "songs", column)
                out[column] = pd.array([t or None for t in texts], dtype="string")
        except (TypeError, ValueError) as exc:
            raise AdditionalFileError(
                name, None, f"table 'songs', column {column!r}: {exc}"
            ) from exc
    songs = pd.DataFrame(out, columns=list(values))
    if songs["track_id"].isna().any() or songs["artist_id"].isna().any():
        raise AdditionalFileError(name, None, "table 'songs' has NULL track_id or artist_id values")
    return {"songs": songs}


# --------------------------------------------------------------------------------------------
# Loader frames
# --------------------------------------------------------------------------------------------

PARSERS: dict[str, Callable[[bytes, str], object]] = {
    "unique_artists": parse_unique_artists,
    "artist_location": parse_artist_location,
    "unique_terms": parse_unique_terms,
    "unique_mbtags": parse_unique_mbtags,
    "unique_tracks": parse_unique_tracks,
    "tracks_per_year": parse_tracks_per_year,
    "artist_term": parse_artist_term_db,
    "artist_similarity": parse_artist_similarity_db,
    "track_metadata": parse_track_metadata_db,
}


@dataclass
class AdditionalFrames:
    """The msd_* frames AdditionalFiles provide, shaped like the loader frames of frames.py.

    ``counts`` holds rows read per text file (``unique_artists``) and per table of a SQLite
    file (``artist_term.artist_term``); ``present`` the logical names that were given.
    """

    msd_artist: pd.DataFrame
    msd_r_term: pd.DataFrame
    msd_r_mbtag: pd.DataFrame
    msd_artist_term: pd.DataFrame
    msd_artist_mbtag: pd.DataFrame
    msd_artist_similarity: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    present: list[str] = field(default_factory=list)

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """Table name -> frame, in load order (parents before children)."""
        return {t.name: getattr(self, t.name) for t in schema.SHARED_TABLES}


def _loader_frame(table: str, data: Mapping[str, object]) -> pd.DataFrame:
    """A frame with exactly the loader columns of ``table`` (missing ones NULL), typed like
    frames.py, deduplicated on the natural key (first wins) and sorted by it."""
    columns = schema.load_columns(schema.TABLES_BY_NAME[table])
    key = list(schema.NATURAL_KEYS[table])
    first = data[key[0]]
    length = len(first)  # type: ignore[arg-type]
    df = pd.DataFrame(
        {c: (data[c] if c in data else np.full(length, None, dtype=object)) for c in columns},
        columns=columns,
    )
    df = typed_columns(df)
    df = df.drop_duplicates(subset=key, ignore_index=True)
    return df.sort_values(key, ignore_index=True, kind="stable")


def _present(value: object) -> bool:
    return (
        value is not None
        and value is not pd.NA
        and not (isinstance(value, float) and math.isnan(value))
    )


def additional_frames(
    files: Mapping[str, bytes], file_names: Mapping[str, str] | None = None
) -> AdditionalFrames:
    """Parse the AdditionalFiles that are present and build the shared msd_* frames.

    ``files`` maps logical names (:data:`ADDITIONAL_FILE_NAMES`) to file contents; any may be
    missing. ``file_names`` optionally gives the real file names used in error messages.
    ``unique_tracks`` and ``tracks_per_year`` feed no table (tracks come from song files);
    they are parsed, so a broken file fails here, and counted.
    """
    for logical in files:
        _check_logical(logical)
    file_names = dict(file_names or {})
    present = [n for n in ADDITIONAL_FILE_NAMES if n in files]
    parsed: dict[str, object] = {}
    counts: dict[str, int] = {}
    for logical in present:
        result = PARSERS[logical](
            files[logical], file_names.get(logical) or default_file_name(logical)
        )
        parsed[logical] = result
        if isinstance(result, dict):
            counts.update({f"{logical}.{t}": len(f) for t, f in result.items()})
        else:
            counts[logical] = len(result)  # type: ignore[arg-type]

    term_db: dict[str, pd.DataFrame] = parsed.get("artist_term", {})  # type: ignore[assignment]
    similarity_db: dict[str, pd.DataFrame] = parsed.get("artist_similarity", {})  # type: ignore[assignment]
    metadata_db: dict[str, pd.DataFrame] = parsed.get("track_metadata", {})  # type: ignore[assignment]

    # --- Per label (Echo Nest term, MusicBrainz tag): its dictionary, from the text list and
    # the database tables together (empty names are not names), and the artist-label pairs
    # (artist_term.db only; no freq/weight/count there).
    def label_frames(label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        listed: pd.DataFrame | None = parsed.get(f"unique_{label}s")  # type: ignore[assignment]
        pairs = term_db.get(f"artist_{label}")
        sources = (listed, term_db.get(f"{label}s"), pairs)
        names = [
            v
            for frame in sources
            if frame is not None
            for v in frame[label].tolist()
            if _present(v) and v != ""
        ]
        if pairs is None:
            pairs = pd.DataFrame({"artist_id": [], label: []})
        pairs = pairs[pairs[label] != ""]
        return dictionary_frame(names, f"{label}_name"), _loader_frame(
            f"msd_artist_{label}", {"artist_id": pairs["artist_id"], f"{label}_name": pairs[label]}
        )

    r_term, artist_terms = label_frames("term")
    r_mbtag, artist_mbtags = label_frames("mbtag")

    similarity = similarity_db.get("similarity")
    if similarity is None:
        similarity = pd.DataFrame({"target": [], "similar": []})
    artist_similarity = _loader_frame(
        "msd_artist_similarity",
        {"artist_id_1": similarity["target"], "artist_id_2": similarity["similar"]},
    )

    # --- Artists: each source fills only what earlier ones left NULL, in this order.
    artists: dict[str, dict[str, object]] = {}

    def fill(artist_id: str, **values: object) -> None:
        row = artists.setdefault(artist_id, {})
        for column, value in values.items():
            if not _present(row.get(column)) and _present(value):
                row[column] = value

    unique_artists = parsed.get("unique_artists")
    if unique_artists is not None:
        for a in unique_artists.itertuples(index=False):  # type: ignore[attr-defined]
            fill(a.artist_id, artist_mbid=a.artist_mbid, artist_name=a.artist_name)
    locations = parsed.get("artist_location")
    if locations is not None:
        for a in locations.itertuples(index=False):  # type: ignore[attr-defined]
            fill(
                a.artist_id,
                artist_name=a.artist_name,
                artist_lat=a.latitude,
                artist_long=a.longitude,
            )
    songs = metadata_db.get("songs")
    if songs is not None:
        # One representative song per artist, the smallest track id, as frames.py does.
        representatives = songs.sort_values("track_id", kind="stable").drop_duplicates("artist_id")
        for a in representatives.itertuples(index=False):
            fill(
                a.artist_id,
                artist_mbid=a.artist_mbid,
                artist_name=a.artist_name,
                artist_familiarity=a.artist_familiarity,
                artist_hotttnesss=a.artist_hotttnesss,
            )
    # Stubs: every artist id referenced anywhere, so the foreign keys resolve.
    referenced: list[pd.Series] = [
        s
        for s in (
            term_db["artists"]["artist_id"] if "artists" in term_db else None,
            similarity_db["artists"]["artist_id"] if "artists" in similarity_db else None,
            artist_terms["artist_id"],
            artist_mbtags["artist_id"],
            artist_similarity["artist_id_1"],
            artist_similarity["artist_id_2"],
        )
        if s is not None
    ]
    for series in referenced:
        for artist_id in series.tolist():
            artists.setdefault(artist_id, {})

    ids = sorted(artists)
    artist_columns = schema.load_columns(schema.msd_artist)
    artist_data: dict[str, object] = {"artist_id": ids}
    for column in artist_columns[1:]:
        artist_data[column] = [artists[a].get(column) for a in ids]
    msd_artist = _loader_frame("msd_artist", artist_data)

    return AdditionalFrames(
        msd_artist=msd_artist,
        msd_r_term=r_term,
        msd_r_mbtag=r_mbtag,
        msd_artist_term=artist_terms,
        msd_artist_mbtag=artist_mbtags,
        msd_artist_similarity=artist_similarity,
        counts=counts,
        present=present,
    )


# --------------------------------------------------------------------------------------------
# Song files vs AdditionalFiles
# --------------------------------------------------------------------------------------------

COMPARED_TEXT: tuple[str, ...] = ("artist_name", "artist_mbid")
COMPARED_FLOATS: tuple[str, ...] = ("artist_lat", "artist_long")


def compare_with_songs(
    additional: pd.DataFrame, songs_artists: pd.DataFrame, tolerance: float = 1e-4
) -> dict[str, int]:
    """Where the AdditionalFiles' msd_artist rows and the song files' rows disagree.

    Only song rows with ``source_track_id`` set count (stubs are not song data). Returns
    ``additional_artists``, ``song_artists``, ``artists_in_both``, ``only_in_additional`` and,
    for artist_name, artist_mbid, artist_lat and artist_long, ``<field>_disagreements`` (both
    sides have a value and they differ; floats beyond ``tolerance``, the text files round to 5
    decimals) and ``<field>_filled`` (one side NULL, the other not: not a disagreement). The song
    file wins; these are reported, never applied.
    """
    songs = songs_artists[songs_artists["source_track_id"].notna()]
    songs = songs.drop_duplicates("artist_id")
    extra = additional.drop_duplicates("artist_id")
    fields = [*COMPARED_TEXT, *COMPARED_FLOATS]
    both = extra[["artist_id", *fields]].merge(
        songs[["artist_id", *fields]], on="artist_id", how="inner", suffixes=("_add", "_song")
    )
    result = {
        "additional_artists": len(extra),
        "song_artists": len(songs),
        "artists_in_both": len(both),
        "only_in_additional": len(extra) - len(both),
    }
    for column in fields:
        a = both[f"{column}_add"]
        s = both[f"{column}_song"]
        a_set = a.notna().to_numpy(dtype=bool)
        s_set = s.notna().to_numpy(dtype=bool)
        both_set = a_set & s_set
        if column in COMPARED_FLOATS:
            av = a.to_numpy(dtype=np.float64, na_value=np.nan)
            sv = s.to_numpy(dtype=np.float64, na_value=np.nan)
            differ = np.zeros(len(both), dtype=bool)
            differ[both_set] = np.abs(av[both_set] - sv[both_set]) > tolerance
        else:
            av = a.to_numpy(dtype=object)
            sv = s.to_numpy(dtype=object)
            differ = np.array(
                [ok and x != y for ok, x, y in zip(both_set, av, sv, strict=True)], dtype=bool
            )
        result[f"{column}_disagreements"] = int(differ.sum())
        result[f"{column}_filled"] = int((a_set ^ s_set).sum())
    return result
