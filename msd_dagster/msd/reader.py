"""Read one MSD song file (HDF5, written by PyTables) from a path, bytes or a file-like object.

The file is read into memory once and opened as an HDF5 *file image* (no temp file, no Python
I/O callbacks). Arrays are then decoded straight from the image: each chunk is located with
HDF5's chunk index, inflated with zlib and un-shuffled with numpy, which is about twice as fast
as h5py's filter pipeline for these small files. Any dataset stored differently (contiguous,
other filters) falls back to h5py's own read, so the fast path never changes a value.

Before anything is read, every dataset's declared size is checked against what a real song can
hold (the ``MAX_*`` bounds below), and a dataset that does not store all of its declared rows
(unwritten chunks, which HDF5 would read back as fill values) is rejected: a hostile or broken
file costs a bounded amount of memory and gets a reason, never a table of zeros.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple

import h5py
import numpy as np

from msd_dagster.msd.fields import ARRAYS, COMPOUND_TABLES, GROUPS, PARALLEL_ARRAYS
from msd_dagster.msd.nulls import apply_null_rules
from msd_dagster.source.layout import MAX_SONG_FILE_BYTES, too_large_reason

TRACK_ID_PATTERN = re.compile(r"^TR[A-Z0-9]{16}$")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_GZIP_FILTER = h5py.h5z.FILTER_DEFLATE
_SHUFFLE_FILTER = h5py.h5z.FILTER_SHUFFLE

# What one song file may declare. The largest counts across ~1,000 real files were 1,229 bars,
# 1,375 beats, 29 sections, 3,484 tatums, 3,303 segments, 64 terms and 100 similar artists; the
# bounds are ~100x that (MusicBrainz tags, a few per artist, get the similar artists' bound):
# generous for the stranger files of the full set, finite for a hostile one. Together they let
# a file's arrays declare at most ~91 MB.
MAX_ROWS: dict[str, int] = {
    "bars": 125_000,
    "beats": 140_000,
    "sections": 3_000,
    "tatums": 350_000,
    "segments": 330_000,
    "terms": 6_400,
    "similar_artists": 10_000,
    "mbtags": 10_000,
}
# Real songs have at most ~8 tatums and ~6.5 segments per second of duration: 100x that, plus
# MIN_ROWS_ALWAYS_PLAUSIBLE rows so that very short tracks are never judged by their density.
MAX_ROWS_PER_SECOND: dict[str, float] = {"tatums": 800.0, "segments": 650.0}
MIN_ROWS_ALWAYS_PLAUSIBLE = 1_000
# All datasets of one file together, as declared (rows x row size): also bounds odd item sizes,
# such as a compound table or text array declared with huge fields. Real files: < 1 MB.
MAX_DECLARED_BYTES = 128 * 1024 * 1024
# One chunk as declared (rows x row size); real files use 8-16 KB chunks. A chunk is the unit
# HDF5 (and the fast path) allocates and inflates, whatever the dataset's row count.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# A compressed chunk up to this size inflates to at most ~1,032x (deflate's limit), ~17 MB:
# safe for one-shot zlib.decompress. Larger ones are inflated with a bounded output instead.
_SAFE_DEFLATE_INPUT = 16 * 1024

_ROW_KIND: dict[str, str] = {
    path: kind for kind, members in PARALLEL_ARRAYS.items() for path in members
} | {"metadata/similar_artists": "similar_artists"}
# Every array is bounded: a KeyError here means a new array needs its MAX_ROWS entry.
_MAX_ROWS_BY_PATH: dict[str, int] = {path: MAX_ROWS[_ROW_KIND[path]] for path in ARRAYS}


class InvalidSongFile(Exception):
    """A file that is not a valid MSD song file; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Song:
    """Every field and array of one song file, strings decoded, null rules applied.

    ``metadata``, ``analysis`` and ``musicbrainz`` hold the compound tables' fields (unknown
    values are ``None``, see :mod:`msd_dagster.msd.nulls`); ``arrays`` maps each array dataset's
    path (e.g. ``"analysis/segments_pitches"``) to its numpy array, text arrays decoded to ``str``.
    """

    track_id: str
    metadata: dict[str, Any]
    analysis: dict[str, Any]
    musicbrainz: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    source: str = ""
    size_bytes: int = 0

    @property
    def artist_id(self) -> str:
        return self.metadata["artist_id"]


def track_id_from_name(name: str) -> str | None:
    """The track id that a file name such as ``.../TRAAABD128F429CF47.h5`` announces."""
    stem = PurePosixPath(str(name).replace("\\", "/")).name
    if stem.endswith(".h5"):
        stem = stem[:-3]
    return stem if TRACK_ID_PATTERN.match(stem) else None


def read_song(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes],
    *,
    name: str | None = None,
) -> Song:
    """Parse one song file.

    ``source`` is a path, the file's bytes (e.g. an S3 object body) or a binary file-like
    object. ``name`` is how errors refer to the file (defaults to the path); when it ends in a
    track id, the file's ``analysis/songs.track_id`` must agree with it.

    Raises :class:`InvalidSongFile` for anything that is not a readable MSD song file.
    """
    label = name if name is not None else _label_of(source)
    try:
        image = _read_bytes(source)
    except OSError as exc:
        raise InvalidSongFile(label, f"cannot read the file: {exc.strerror or exc}") from exc
    if not image:
        raise InvalidSongFile(label, "the file is empty (0 bytes)")
    if len(image) > MAX_SONG_FILE_BYTES:
        raise InvalidSongFile(label, too_large_reason(None))
    if not image.startswith(HDF5_SIGNATURE):
        raise InvalidSongFile(label, "not an HDF5 file (no HDF5 signature at offset 0)")
    try:
        return _parse(image, label)
    except InvalidSongFile:
        raise
    except UnicodeDecodeError as exc:
        raise InvalidSongFile(label, f"a text field is not valid UTF-8 ({exc.reason})") from exc
    except (OSError, KeyError, ValueError, IndexError, TypeError, RuntimeError, zlib.error) as exc:
        raise InvalidSongFile(
            label, f"unreadable HDF5 content ({type(exc).__name__}: {exc})"
        ) from exc


def _label_of(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return getattr(source, "name", None) or "<bytes>"


def _read_bytes(source: Any) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        with Path(source).open("rb") as handle:
            return _read_bounded(handle)
    return _read_bounded(source)


def _read_bounded(handle: IO[bytes]) -> bytes:
    # Never more than the limit + 1 byte: enough to tell that a file is too large.
    return handle.read(MAX_SONG_FILE_BYTES + 1)


def _open_image(image: bytes) -> h5py.h5f.FileID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fapl_core(backing_store=False)
    fapl.set_file_image(image)
    # Closing the file closes its datasets too. HDF5 knows open files by name: a dataset id
    # left alive (e.g. in a traceback) would keep this image open, and the next file, opened
    # under the same name, would be read through the old one's metadata.
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    return h5py.h5f.open(b"msd-song", h5py.h5f.ACC_RDONLY, fapl=fapl)


def _parse(image: bytes, label: str) -> Song:
    try:
        fid = _open_image(image)
    except OSError as exc:
        raise InvalidSongFile(
            label, "truncated or corrupt HDF5 file (HDF5 cannot open it)"
        ) from exc
    try:
        missing_groups = [g for g in GROUPS if not fid.links.exists(g.encode())]
        if missing_groups:
            raise InvalidSongFile(label, f"missing group(s) {', '.join(missing_groups)}")
        declared = {path: _declare(fid, path, label) for path in _DATASETS}
        # Everything a file declares is checked before anything is read or allocated.
        check_declared(declared, label)
        tables = {
            path: _read_compound_row(declared[path], image, label) for path in COMPOUND_TABLES
        }
        check_density(tables["analysis/songs"]["duration"], declared, label)
        arrays = {path: _read_array(declared[path], image, label) for path in ARRAYS}
    finally:
        fid.close()

    track_id = tables["analysis/songs"]["track_id"]
    if not TRACK_ID_PATTERN.match(track_id or ""):
        raise InvalidSongFile(label, f"analysis/songs.track_id {track_id!r} is not a track id")
    named = track_id_from_name(label)
    if named is not None and named != track_id:
        raise InvalidSongFile(
            label, f"the file name says {named} but analysis/songs.track_id is {track_id}"
        )
    if not tables["metadata/songs"]["artist_id"]:
        raise InvalidSongFile(label, "metadata/songs.artist_id is empty")
    _check_parallel_arrays(arrays, label)
    return Song(
        track_id=track_id,
        metadata=apply_null_rules(tables["metadata/songs"]),
        analysis=apply_null_rules(tables["analysis/songs"]),
        musicbrainz=apply_null_rules(tables["musicbrainz/songs"]),
        arrays=arrays,
        source=label,
        size_bytes=len(image),
    )


_DATASETS: tuple[str, ...] = (*COMPOUND_TABLES, *ARRAYS)


class Declared(NamedTuple):
    """A dataset as its file declares it (``dsid``: the open HDF5 dataset, when there is one)."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dsid: h5py.h5d.DatasetID | None = None


def _declare(fid: h5py.h5f.FileID, path: str, label: str) -> Declared:
    dsid = _open_dataset(fid, path, label)
    return Declared(path, dsid.shape, _dtype_of(dsid), dsid)


def check_declared(declared: Mapping[str, Declared], label: str) -> None:
    """Raise :class:`InvalidSongFile` unless every dataset's declared shape and dtype is one a
    song file can have: the fields of the compound tables, one row each; the arrays' kinds and
    trailing shapes; at most ``MAX_ROWS`` rows of each kind and ``MAX_DECLARED_BYTES`` in all.

    ``declared`` maps each dataset path to its declaration; nothing is read.
    """
    total = 0
    for path, (_, shape, dtype, _) in declared.items():
        if path in COMPOUND_TABLES:
            names = dtype.names or ()
            missing = [n for n, _ in COMPOUND_TABLES[path] if n not in names]
            if missing:
                raise InvalidSongFile(label, f"{path} lacks field(s) {', '.join(missing)}")
            if shape != (1,):
                raise InvalidSongFile(label, f"{path} has shape {shape}, expected one row (1,)")
        else:
            kind, trailing = ARRAYS[path]
            expected = np.dtype(kind)
            if dtype.kind != expected.kind or tuple(shape[1:]) != trailing or not shape:
                want = "(n,)" if not trailing else f"(n, {trailing[0]})"
                raise InvalidSongFile(
                    label,
                    f"{path} has dtype {dtype} and shape {shape}, expected {expected} {want}",
                )
            if shape[0] > _MAX_ROWS_BY_PATH[path]:
                raise InvalidSongFile(
                    label,
                    f"{path} declares {shape[0]:,} rows, more than a song can hold "
                    f"(at most {_MAX_ROWS_BY_PATH[path]:,} {_ROW_KIND[path]})",
                )
        total += math.prod(shape) * dtype.itemsize
    if total > MAX_DECLARED_BYTES:
        raise InvalidSongFile(
            label,
            f"its datasets declare {total:,} bytes, more than a song can hold "
            f"(at most {MAX_DECLARED_BYTES:,})",
        )


def check_density(duration: float, declared: Mapping[str, Declared], label: str) -> None:
    """Raise :class:`InvalidSongFile` when a song of ``duration`` seconds declares more tatums
    or segments than ``MAX_ROWS_PER_SECOND`` allows (unknown or zero durations are not judged).
    """
    if not (isinstance(duration, float) and math.isfinite(duration) and duration > 0):
        return
    for kind, per_second in MAX_ROWS_PER_SECOND.items():
        path = f"analysis/{kind}_start"
        rows = declared[path].shape[0]
        limit = max(MIN_ROWS_ALWAYS_PLAUSIBLE, math.ceil(per_second * duration))
        if rows > limit:
            raise InvalidSongFile(
                label,
                f"{path} declares {rows:,} {kind} for {duration:.1f} s of audio, more than "
                f"a song can hold (at most {limit:,}: {per_second:g} per second)",
            )


def _open_dataset(fid: h5py.h5f.FileID, path: str, label: str) -> h5py.h5d.DatasetID:
    # The group was checked already; a missing dataset is a missing link inside it. The link
    # is only looked up when opening fails (one HDF5 call less per dataset on the hot path).
    try:
        return h5py.h5d.open(fid, path.encode())
    except (KeyError, OSError, ValueError) as exc:
        if not fid.links.exists(path.encode()):
            raise InvalidSongFile(label, f"missing dataset {path}") from None
        raise InvalidSongFile(label, f"{path} is not a readable dataset") from exc


_DTYPES: dict[bytes, np.dtype] = {}


def _dtype_of(dsid: h5py.h5d.DatasetID) -> np.dtype:
    """The dataset's numpy dtype, cached by its serialized HDF5 datatype (``H5Tencode``).

    Building the numpy dtype of a compound type costs ~0.2 ms per dataset, a tenth of a
    file's parse time; every song file repeats the same few datatypes. The serialized type
    describes it completely (class, size, byte order, member names and offsets), so equal
    keys mean equal dtypes.
    """
    try:
        key = dsid.get_type().encode()
    except (TypeError, ValueError, RuntimeError):
        return dsid.dtype
    dtype = _DTYPES.get(key)
    if dtype is None:
        dtype = dsid.dtype
        if len(_DTYPES) >= 256:
            _DTYPES.clear()
        _DTYPES[key] = dtype
    return dtype


def _read_compound_row(ds: Declared, image: bytes, label: str) -> dict[str, Any]:
    values = _read_values(ds, image, label)
    # item(): the row as a tuple of Python values (bytes, int, float) in field order.
    row = dict(zip(ds.dtype.names or (), values[0].item(), strict=True))
    return {n: _python_value(row[n]) for n, _ in COMPOUND_TABLES[ds.path]}


def _python_value(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8")
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _read_array(ds: Declared, image: bytes, label: str) -> np.ndarray:
    values = _read_values(ds, image, label)
    if values.dtype.kind == "S":
        return np.array([v.decode("utf-8") for v in values.tolist()], dtype=object)
    return values


def _read_values(ds: Declared, image: bytes, label: str) -> np.ndarray:
    """The dataset's values, once its storage was checked (declared sizes are bounded already
    by :func:`check_declared`, so ``np.empty(shape)`` is bounded too)."""
    path, shape, dtype, dsid = ds
    if 0 in shape:
        return np.empty(shape, dtype=dtype)
    plist = dsid.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.CHUNKED:
        chunks = plist.get_chunk()
        needed, stored = _check_chunks(ds, chunks, label)
        values = _fast_read(ds, plist, chunks, needed, stored, image, label)
        if values is not None:
            return values
    elif layout == h5py.h5d.CONTIGUOUS:
        _check_contiguous(ds, plist, label)
    elif layout != h5py.h5d.COMPACT:
        raise InvalidSongFile(label, f"{path} is a virtual dataset (its data is in other files)")
    values = np.empty(shape, dtype=dtype)
    dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, values)
    return values


def _check_chunks(ds: Declared, chunks: tuple[int, ...], label: str) -> tuple[int, int]:
    """How many chunks the declared shape needs and how many are stored; raises unless all
    needed ones are stored (unwritten chunks would read back as fill values, i.e. zeros) and
    a chunk is of a bounded size."""
    path, shape, dtype, dsid = ds
    chunk_bytes = math.prod(chunks) * dtype.itemsize
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise InvalidSongFile(
            label,
            f"{path} declares chunks of {chunk_bytes:,} bytes, more than a song file uses "
            f"(at most {MAX_CHUNK_BYTES:,})",
        )
    needed = math.prod(-(-size // rows) for size, rows in zip(shape, chunks, strict=True))
    stored = dsid.get_num_chunks()
    if stored < needed:
        raise InvalidSongFile(
            label,
            f"{path} declares {shape[0]:,} rows but stores only {stored:,} of the "
            f"{needed:,} chunks they need (the rest was never written)",
        )
    return needed, stored


def _check_contiguous(ds: Declared, plist: h5py.h5p.PropDCID, label: str) -> None:
    path, shape, dtype, dsid = ds
    if plist.get_external_count():
        raise InvalidSongFile(label, f"{path} keeps its data in external files")
    declared = math.prod(shape) * dtype.itemsize
    stored = dsid.get_storage_size()
    if stored < declared:
        raise InvalidSongFile(
            label,
            f"{path} declares {shape[0]:,} rows ({declared:,} bytes) but stores only "
            f"{stored:,} bytes (the rest was never written)",
        )


class _FallBack(Exception):
    """A chunk the fast path does not handle; HDF5 reads the dataset instead."""


def _fast_read(
    ds: Declared,
    plist: h5py.h5p.PropDCID,
    chunks: tuple[int, ...],
    n_chunks: int,
    stored: int,
    image: bytes,
    label: str,
) -> np.ndarray | None:
    """Decode a gzip(+shuffle) chunked dataset straight from the file image (None: fall back).

    ``n_chunks`` chunks are needed, ``stored`` are stored (see :func:`_check_chunks`).
    """
    path, shape, dtype, dsid = ds
    filters = _filters_of(plist)
    if filters is None or tuple(chunks[1:]) != tuple(shape[1:]):
        return None
    if stored != n_chunks:
        return None  # chunks beyond the shape: HDF5 knows which ones count
    shuffled, deflated = filters
    itemsize = dtype.itemsize
    chunk_rows = chunks[0]
    chunk_bytes = math.prod(chunks) * itemsize
    out = np.empty(n_chunks * chunk_bytes, dtype=np.uint8)
    source = memoryview(image)
    seen = 0

    def take(info: Any) -> None:
        nonlocal seen
        if info.filter_mask != 0:
            raise _FallBack
        raw = source[info.byte_offset : info.byte_offset + info.size]
        if deflated:
            raw = _inflate(raw, chunk_bytes, label, path)
        if len(raw) != chunk_bytes:
            raise _FallBack
        start = (info.chunk_offset[0] // chunk_rows) * chunk_bytes
        target = out[start : start + chunk_bytes]
        buf = np.frombuffer(raw, dtype=np.uint8)
        if shuffled and itemsize > 1:
            # Byte planes -> items: one strided copy straight into the output.
            target.reshape(-1, itemsize)[...] = buf.reshape(itemsize, -1).T
        else:
            target[...] = buf
        seen += 1

    try:
        if n_chunks == 1:
            take(dsid.get_chunk_info(0))
        else:
            dsid.chunk_iter(take)
    except _FallBack:
        return None
    if seen != n_chunks:
        return None
    values = out.view(dtype).reshape((-1, *shape[1:]))[: shape[0]]
    # A mostly empty last chunk (e.g. 13 sections in a 1,024-row chunk): keep only the rows,
    # so a partition's parsed songs do not carry the chunks' padding.
    return (
        values.copy() if 8 * (n_chunks * chunk_rows - shape[0]) > n_chunks * chunk_rows else values
    )


def _inflate(raw: memoryview, chunk_bytes: int, label: str, path: str) -> bytes:
    """A chunk inflated, never to more than ``chunk_bytes`` (+1 to tell it is too long)."""
    if len(raw) <= _SAFE_DEFLATE_INPUT:
        data = zlib.decompress(raw, bufsize=chunk_bytes)
    else:
        data = zlib.decompressobj().decompress(raw, chunk_bytes + 1)
    if len(data) > chunk_bytes:
        # HDF5 would keep inflating it (a "zip bomb"): no fallback for this one.
        raise InvalidSongFile(label, f"{path} has a chunk that inflates beyond its declared size")
    return data


def _filters_of(plist: h5py.h5p.PropDCID) -> tuple[bool, bool] | None:
    """(shuffled, deflated) when only shuffle and/or deflate are applied, in that order."""
    ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if ids not in ([_SHUFFLE_FILTER, _GZIP_FILTER], [_GZIP_FILTER], [_SHUFFLE_FILTER], []):
        return None
    return _SHUFFLE_FILTER in ids, _GZIP_FILTER in ids


def _check_parallel_arrays(arrays: dict[str, np.ndarray], label: str) -> None:
    """Arrays that describe the same events (e.g. bars_start/bars_confidence) must align."""
    for members in PARALLEL_ARRAYS.values():
        lengths = {arrays[p].shape[0] for p in members}
        if len(lengths) > 1:
            detail = ", ".join(f"{p}={arrays[p].shape[0]}" for p in members)
            raise InvalidSongFile(label, f"arrays of different lengths: {detail}")
