"""Where the normalized frames of a partition are kept: one Parquet file per frame.

``<root>/<asset path>/<partition>/`` holds a ``CURRENT`` file naming the version folder that
holds the frames (``v-<id>/msd_track.parquet`` ...). A write goes to a new version folder and
then replaces ``CURRENT`` in one rename, so a reader sees the previous frames or the new ones,
never a mix, and a crash mid-write leaves the previous version in place (the half-written
folder is removed by the next write).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CURRENT = "CURRENT"
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
        version = f"v-{uuid.uuid4().hex[:12]}"
        target = folder / version
        target.mkdir(parents=True)
        for name, frame in frames.items():
            write_parquet(frame, target / f"{name}.parquet")
        pointer = folder / f".{CURRENT}.{version}.tmp"
        pointer.write_text(version + "\n")
        os.replace(pointer, folder / CURRENT)
        for entry in folder.iterdir():  # earlier versions and leftovers of crashed writes
            if entry.name != version and entry.name != CURRENT:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        return target

    def current(self, asset: Sequence[str], partition: str | None) -> Path:
        folder = self.folder(asset, partition)
        try:
            version = (folder / CURRENT).read_text().strip()
        except FileNotFoundError:
            raise FramesNotStored(
                f"no stored frames for {'/'.join(asset)} partition {partition or '(none)'} "
                f"under {self.root}"
            ) from None
        return folder / version

    def read(
        self, asset: Sequence[str], partition: str | None, names: Sequence[str] | None = None
    ) -> dict[str, pd.DataFrame]:
        """The stored frames (all, or ``names``); :class:`FramesNotStored` if there are none."""
        path = self.current(asset, partition)
        files = (
            [path / f"{name}.parquet" for name in names]
            if names is not None
            else sorted(path.glob("*.parquet"))
        )
        return {file.stem: pd.read_parquet(file) for file in files}


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
