"""A dataset root on a local (or mounted) file system."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from msd_dagster.source.layout import (
    PARTITION_KEY_PATTERN,
    SourceFile,
    listing_fingerprint,
    partition_prefix,
)


class LocalDataset:
    """Lists and reads song files under ``root/data``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def list_partitions(self) -> list[str]:
        data = self.root / "data"
        if not data.is_dir():
            return []
        keys = [
            f"{first.name}/{second.name}"
            for first in data.iterdir()
            if first.is_dir()
            for second in first.iterdir()
            if second.is_dir()
        ]
        return sorted(k for k in keys if PARTITION_KEY_PATTERN.match(k))

    def list_files(self, partition_key: str) -> list[SourceFile]:
        """Every ``*.h5`` below the partition folder (also misplaced or misnamed ones, so that
        the normalizer can reject them with a reason instead of skipping them silently)."""
        folder = self.root / partition_prefix(partition_key)
        return sorted(self._walk(folder), key=lambda f: f.key)

    def _walk(self, folder: Path) -> Iterator[SourceFile]:
        if not folder.is_dir():
            return
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                if not name.endswith(".h5"):
                    continue
                path = Path(dirpath) / name
                stat = path.stat()
                yield SourceFile(
                    key=path.relative_to(self.root).as_posix(),
                    size=stat.st_size,
                    modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC).replace(tzinfo=None),
                )

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def additional_file(self, name: str) -> bytes | None:
        path = self.root / "AdditionalFiles" / name
        return path.read_bytes() if path.is_file() else None

    def read_many(self, keys: list[str], max_workers: int = 1) -> Iterator[tuple[str, bytes]]:
        """``(key, bytes)`` in key order; local reads gain nothing from threads."""
        for key in keys:
            yield key, self.read(key)

    def partition_fingerprint(self, partition_key: str) -> str:
        """A hash of the partition's (key, size, mtime) listing: changes when any file does."""
        return listing_fingerprint(
            (f.key, f.size, f.modified.isoformat() if f.modified else "")
            for f in self.list_files(partition_key)
        )
