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

import fcntl
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

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
        folder = self.folder(asset, partition)
        folder.mkdir(parents=True, exist_ok=True)
        version = f"v-{uuid.uuid4().hex[:12]}"
        target = folder / version
        with open(folder / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            target.mkdir()
            for name, frame in frames.items():
                write_parquet(frame, target / f"{name}.parquet")
            previous = _read_pointer(folder)
            pointer = folder / f".{CURRENT}.{version}.tmp"
            pointer.write_text(version + "\n")
            os.replace(pointer, folder / CURRENT)
            keep = {version, previous, CURRENT, LOCK}
            for entry in folder.iterdir():  # older versions and leftovers of crashed writes
                if entry.name not in keep:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        return target

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
                return {file.stem: pd.read_parquet(file) for file in files}
            except FileNotFoundError:
                # Two writes since CURRENT was read removed that version: read the new one.
                if self.current(asset, partition) == path:
                    raise


def _read_pointer(folder: Path) -> str | None:
    try:
        return (folder / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """LZ4, dictionary-encoded text only: numeric columns (most of the rows) are written as
    they are, which is ~2.5x faster than Parquet's default encodings for ~40% more bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    text = [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    pq.write_table(
        table, path, compression="lz4", use_dictionary=text or False, write_statistics=False
    )
