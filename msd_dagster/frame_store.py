"""Where the normalized frames of a partition are kept: one Parquet file per frame.

``<root>/<asset path>/<partition>/`` holds a ``CURRENT`` file naming the version folder that
holds the frames (``v-<id>/msd_track.parquet`` ...). A write goes to a new version folder and
then replaces ``CURRENT`` in one rename, so a reader sees the previous frames or the new ones,
never a mix, and a crash mid-write leaves the previous version in place (the half-written
folder is removed by the next write). Writers of one partition take turns (a lock file), and a
write keeps the version it replaced, so a reader that has just read ``CURRENT`` still finds it
(and reads ``CURRENT`` again should two writes have passed it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CURRENT = "CURRENT"
LOCK = ".lock"
UNPARTITIONED = "all"


class FramesNotStored(LookupError):
    """No frames were ever stored for that asset and partition."""


class FrameStore:
    """Frames by asset key path and partition under ``root`` (a local or mounted folder)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, asset: Sequence[str], partition: str | None) -> Path:
        """``<root>/normalized/songs/A/B``: the partition key's ``/`` makes sub-folders."""
        return self.root.joinpath(*asset, *(partition or UNPARTITIONED).split("/"))

    def write(
        self, asset: Sequence[str], partition: str | None, frames: Mapping[str, pd.DataFrame]
    ) -> Path:
        """Store ``frames`` (name -> frame) as the asset partition's current version."""
        writer = self.writer(asset, partition)
        try:
            for name, frame in frames.items():
                writer.append(name, frame)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def writer(self, asset: Sequence[str], partition: str | None) -> VersionWriter:
        """A new version of the asset partition, written frame by frame (a frame may come in
        parts); :meth:`VersionWriter.commit` makes it current."""
        return VersionWriter(self.folder(asset, partition))

    def current(self, asset: Sequence[str], partition: str | None) -> Path:
        folder = self.folder(asset, partition)
        version = _read_pointer(folder)
        if version is None:
            raise FramesNotStored(
                f"no stored frames for {'/'.join(asset)} partition {partition or '(none)'} "
                f"under {self.root}"
            )
        return folder / version

    def read(
        self, asset: Sequence[str], partition: str | None, names: Sequence[str] | None = None
    ) -> dict[str, pd.DataFrame]:
        """The stored frames (all, or ``names``); :class:`FramesNotStored` if there are none."""
        while True:
            path = self.current(asset, partition)
            files = (
                [path / f"{name}.parquet" for name in names]
                if names is not None
                else sorted(path.glob("*.parquet"))
            )
            try:
                got = {file.stem: pd.read_parquet(file) for file in files}
            except FileNotFoundError:
                if self.current(asset, partition) == path:
                    raise
                continue
            # Two writes since CURRENT was read may have removed that version while it was
            # listed or read (a partial listing, no error): only an unchanged CURRENT is whole.
            if self.current(asset, partition) == path:
                return got


class VersionWriter:
    """One new version folder of an asset partition: each frame a Parquet file, appended to
    one row group per part (the same columns and types in every part). The partition's lock is
    held from the first write to :meth:`commit` or :meth:`abort`, so writers take turns."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.version = f"v-{uuid.uuid4().hex[:12]}"
        self.rows: dict[str, int] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._lock: IO[str] | None = None

    @property
    def target(self) -> Path:
        return self.folder / self.version

    def _open(self) -> None:
        if self._lock is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.folder / LOCK, "a")  # noqa: SIM115 - held until commit
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            self.target.mkdir()

    def append(self, name: str, frame: pd.DataFrame) -> None:
        self._open()
        writer = self._writers.get(name)
        if writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = pq.ParquetWriter(
                self.target / f"{name}.parquet", table.schema, **_options(table)
            )
            self._writers[name] = writer
        else:
            table = pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False)
        writer.write_table(table)
        self.rows[name] = self.rows.get(name, 0) + len(frame)

    def commit(self) -> Path:
        """Make this version current; keep the one it replaces (a reader may be on it)."""
        self._open()
        try:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            previous = _read_pointer(self.folder)
            pointer = self.folder / f".{CURRENT}.{self.version}.tmp"
            pointer.write_text(self.version + "\n")
            os.replace(pointer, self.folder / CURRENT)
            keep = {self.version, previous, CURRENT, LOCK}
            for entry in self.folder.iterdir():  # older versions and leftovers of crashed writes
                if entry.name not in keep:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        finally:
            self._unlock()
        return self.target

    def abort(self) -> None:
        """Drop what was written; the current version stays."""
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._writers.clear()
        if self._lock is not None:
            shutil.rmtree(self.target, ignore_errors=True)
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


class GroupWriter:
    """New versions of several assets of one partition, each frame routed to its asset's
    writer by name (``groups``: asset path -> frame names); a :class:`FrameSink` for
    :class:`~msd_dagster.msd.partition.FolderStream`. :meth:`start` drops what an earlier pass
    wrote."""

    def __init__(
        self,
        store: FrameStore,
        partition: str | None,
        groups: Mapping[tuple[str, ...], Sequence[str]],
    ) -> None:
        self.store = store
        self.partition = partition
        self.asset_of = {name: asset for asset, names in groups.items() for name in names}
        self.writers: dict[tuple[str, ...], VersionWriter] = {}

    def start(self) -> None:
        self.abort()
        self.writers = {
            asset: self.store.writer(asset, self.partition) for asset in set(self.asset_of.values())
        }

    def append(self, frames: Mapping[str, pd.DataFrame]) -> None:
        for name, frame in frames.items():
            self.writers[self.asset_of[name]].append(name, frame)

    @property
    def rows(self) -> dict[str, int]:
        return {name: n for writer in self.writers.values() for name, n in writer.rows.items()}

    def commit(self) -> dict[tuple[str, ...], Path]:
        """Make every asset's new version current; return their folders."""
        return {asset: writer.commit() for asset, writer in self.writers.items()}

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers = {}


def _options(table: pa.Table) -> dict[str, object]:
    """LZ4, dictionary-encoded text only: numeric columns (most of the rows) are written as
    they are, which is ~2.5x faster than Parquet's default encodings for ~40% more bytes."""
    text = [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    return {"compression": "lz4", "use_dictionary": text or False, "write_statistics": False}


def _read_pointer(folder: Path) -> str | None:
    try:
        return (folder / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None
