"""A dataset root on a local (or mounted) file system."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from msd_dagster.source.layout import (
    ADDITIONAL_DIR,
    FIRST_LEVEL_PATTERN,
    MAX_SONG_FILE_BYTES,
    DatasetSurvey,
    OutsideLayout,
    SourceError,
    SourceFile,
    SourceListingError,
    UnreadableSourceFile,
    count_up_to,
    listing_fingerprint,
    outside_layout_entry,
    outside_layout_sorted,
    partition_prefix,
    too_large_reason,
)

log = logging.getLogger(__name__)

# Errors that retrying cannot fix: a folder with them fails its partition at once. Anything
# else (EIO, ESTALE, ETIMEDOUT, EMFILE ...) may pass (a network mount, a busy machine).
_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG}
)
# A file with one of these is broken on its own (permissions, a broken or looping symbolic
# link, gone since the listing, not a file): rejected by name, the other files load.
_FILE_PROBLEM_ERRNOS = _PERMANENT_ERRNOS | {
    errno.ENOENT,
    errno.EISDIR,
    errno.ENXIO,
    errno.ENODEV,
}


class LocalDataset:
    """Lists and reads song files under ``root/data``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def list_partitions(self) -> list[str]:
        return self.survey(count_outside=False).partitions

    def files_outside_layout(self) -> list[OutsideLayout]:
        return self.survey().outside

    def survey(self, *, count_outside: bool = True) -> DatasetSurvey:
        """The partitions (second-level folders named by one uppercase letter each) and
        everything under ``data/`` that no partition takes (files above the partition folders,
        folders with other names), with the number of files each holds. Only those folders
        are walked below the second level (the partitions' own files are not), and only when
        ``count_outside`` (else ``outside`` is empty)."""
        data = self.root / "data"
        if not self.root.exists():
            raise SourceError(str(self.root), "the dataset folder does not exist", permanent=True)
        if not self.root.is_dir():
            raise SourceError(str(self.root), "not a folder: give the dataset root", permanent=True)
        if not data.is_dir():
            return DatasetSurvey([], [])
        partitions, files, folders = [], [], []
        for first in self._entries(data):
            if not first.is_dir():
                files.append([first.name])
            elif not FIRST_LEVEL_PATTERN.match(first.name):
                folders.append(([first.name], first))
            else:
                for second in self._entries(Path(first.path)):
                    parts = [first.name, second.name]
                    if not second.is_dir():
                        files.append(parts)
                    elif FIRST_LEVEL_PATTERN.match(second.name):
                        partitions.append("/".join(parts))
                    else:
                        folders.append((parts, second))
        if not count_outside:
            return DatasetSurvey(sorted(partitions), [])
        outside = [outside_layout_entry(parts, False, 1) for parts in files] + [
            outside_layout_entry(parts, True, *_count_files(entry)) for parts, entry in folders
        ]
        return DatasetSurvey(sorted(partitions), outside_layout_sorted(outside))

    def list_files(self, partition_key: str) -> list[SourceFile]:
        """Every file below the partition folder (also misplaced or misnamed song files, files
        that are no song files, and broken ``*.h5`` ones such as dangling symbolic links), so
        that the normalizer can reject them with a reason instead of skipping them silently.

        Raises :class:`SourceListingError` naming the folder when any folder below it cannot
        be read: a partial listing would make the partition's replace delete what it missed.
        """
        folder = self.root / partition_prefix(partition_key)
        return sorted(self._walk(folder), key=lambda f: f.key)

    def _rel(self, path: Path | str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def _walk(self, folder: Path) -> Iterator[SourceFile]:
        try:
            top = folder.stat()
        except FileNotFoundError as exc:
            if folder.is_symlink():
                raise self._listing_error(folder, exc, permanent=True) from exc
            self._check_data_folder(folder)
            return  # a partition folder that is gone is an empty partition
        except OSError as exc:
            raise self._listing_error(folder, exc) from exc
        if not stat.S_ISDIR(top.st_mode):
            raise SourceListingError(
                self._rel(folder), "not a folder: move it away and load again", permanent=True
            )
        # Folders already listed, by identity: a symbolic link back to one of them (or to a
        # folder above the partition) would list files twice or loop forever.
        seen = _ancestor_ids(folder) | {(top.st_dev, top.st_ino)}
        folders, links = [folder], []
        while folders or links:
            # Real folders first, so that a file reachable both ways keeps its real key.
            if folders:
                directory = folders.pop()
            else:
                directory, identity = links.pop()
                if identity in seen:
                    log.warning(
                        "not following %s: it links to a folder already listed or above",
                        self._rel(directory),
                    )
                    continue
                seen.add(identity)
            for entry in self._entries(directory):
                path = Path(entry.path)
                try:
                    target = entry.stat()  # follows symbolic links
                except OSError as exc:
                    yield self._broken_entry(entry, exc)
                    continue
                if stat.S_ISDIR(target.st_mode):
                    identity = (target.st_dev, target.st_ino)
                    if entry.is_symlink():
                        links.append((path, identity))
                    elif identity not in seen:
                        seen.add(identity)
                        folders.append(path)
                else:
                    yield SourceFile(
                        key=self._rel(path), size=target.st_size, modified=_mtime(target)
                    )

    def _entries(self, directory: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as entries:
                return sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            raise self._listing_error(directory, exc) from exc

    def _broken_entry(self, entry: os.DirEntry[str], exc: OSError) -> SourceFile:
        """An entry whose target cannot be examined: a song file is listed (the read rejects
        it by name); anything else might be a folder of song files, so the listing fails."""
        path = Path(entry.path)
        try:
            own = entry.stat(follow_symlinks=False)
        except OSError as own_exc:  # even the entry itself: its folder is the problem
            raise self._listing_error(path.parent, own_exc) from own_exc
        if not (entry.name.endswith(".h5") and stat.S_ISLNK(own.st_mode)):
            raise self._listing_error(path, exc, permanent=stat.S_ISLNK(own.st_mode)) from exc
        return SourceFile(key=self._rel(path), size=own.st_size, modified=_mtime(own))

    def _check_data_folder(self, folder: Path) -> None:
        """A missing partition folder is an empty partition only when ``data/`` is there: a
        dataset root that is unmounted or moved must not look like a dataset without songs."""
        data = self.root / "data"
        try:
            if stat.S_ISDIR(data.stat().st_mode):
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._listing_error(data, exc) from exc
        raise SourceListingError(
            self._rel(folder),
            f"the dataset root {self.root} has no data/ folder: check that it is mounted and "
            "that the location names the folder that holds data/",
            permanent=True,
        )

    def _listing_error(
        self, path: Path, exc: OSError, *, permanent: bool | None = None
    ) -> SourceListingError:
        where = self._rel(path) if path != self.root else "."
        if permanent is None:
            permanent = exc.errno in _PERMANENT_ERRNOS
        return SourceListingError(where, _listing_reason(exc, permanent), permanent=permanent)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def read_song_file(self, key: str) -> bytes:
        """The bytes of one listed song file. Raises :class:`UnreadableSourceFile` when this
        file cannot be read for a reason of its own, and :class:`SourceError` (not permanent)
        for faults that may pass, such as I/O errors on a network mount."""
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
            fd = os.open(self.root / key, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise self._read_error(key, exc) from exc
        with os.fdopen(fd, "rb") as handle:
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise UnreadableSourceFile(
                        key, f"not a regular file ({_file_kind(info.st_mode)}): move it away"
                    )
                if info.st_size > MAX_SONG_FILE_BYTES:
                    raise UnreadableSourceFile(key, too_large_reason(info.st_size))
                return handle.read(MAX_SONG_FILE_BYTES + 1)
            except OSError as exc:
                raise self._read_error(key, exc) from exc

    def _read_error(self, key: str, exc: OSError) -> SourceError:
        if exc.errno in _FILE_PROBLEM_ERRNOS:
            return UnreadableSourceFile(key, self._file_problem(key, exc))
        return SourceError(
            key,
            f"read failed ({_errno_text(exc)}): check the disk or the mount; the step can be "
            "retried",
            permanent=False,
        )

    def _file_problem(self, key: str, exc: OSError) -> str:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return (
                "permission denied: the user running the load cannot read this file; fix its "
                "mode or owner (e.g. chmod a+r) and load again"
            )
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (too many levels of symbolic links): fix or remove it"
        if exc.errno == errno.ENOENT:
            if (self.root / key).is_symlink():
                return "a broken symbolic link (its target does not exist): fix or remove it"
            return "gone since the listing (deleted or renamed): load the partition again"
        if exc.errno == errno.EISDIR:
            return "a folder, not a file: move it away"
        return f"cannot be read ({_errno_text(exc)})"

    def read_many(
        self, keys: list[str], max_workers: int = 1
    ) -> Iterator[tuple[str, bytes | UnreadableSourceFile]]:
        """``(key, bytes)`` in key order, or ``(key, UnreadableSourceFile)`` for a file that
        cannot be read for a reason of its own; faults that may pass raise ``SourceError``.
        Local reads gain nothing from threads."""
        for key in keys:
            try:
                yield key, self.read_song_file(key)
            except UnreadableSourceFile as problem:
                yield key, problem

    def additional_file(self, name: str) -> bytes | None:
        path = self.root / ADDITIONAL_DIR / name
        return path.read_bytes() if path.is_file() else None

    def partition_fingerprint(self, partition_key: str) -> str:
        """A hash of the partition's (key, size, mtime) listing: changes when any file does."""
        return listing_fingerprint(
            (f.key, f.size, f.modified.isoformat() if f.modified else "")
            for f in self.list_files(partition_key)
        )


def _count_files(folder: os.DirEntry[str]) -> tuple[int, bool]:
    """Files below ``folder``, up to ``OUTSIDE_COUNT_LIMIT`` (see :func:`count_up_to`);
    symbolic links to folders are not followed."""
    return count_up_to(name for _dir, _subdirs, files in os.walk(folder.path) for name in files)


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, tz=UTC).replace(tzinfo=None)


def _ancestor_ids(folder: Path) -> set[tuple[int, int]]:
    """``(st_dev, st_ino)`` of every folder above ``folder``, up to ``/``: along its path and,
    when that goes through symbolic links, along its real path."""
    ids = set()
    for parent in {*folder.absolute().parents, *folder.resolve().parents}:
        try:
            info = parent.stat()
        except OSError:
            continue
        ids.add((info.st_dev, info.st_ino))
    return ids


def _errno_text(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text}, {name}" if name else text


def _listing_reason(exc: OSError, permanent: bool) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        advice = (
            "the user running the load cannot read this folder; give it read and execute "
            "permission (e.g. chmod a+rx) and load again"
        )
    elif exc.errno == errno.ELOOP:
        advice = "a symbolic link loop; fix or remove the link and load again"
    elif exc.errno == errno.ENOENT and permanent:
        advice = (
            "a broken symbolic link that may stand for a folder of song files; fix or remove "
            "it and load again"
        )
    elif permanent:
        advice = "fix it and load again"
    else:
        advice = "check the disk or the mount; the step can be retried"
    return f"{_errno_text(exc)}: {advice}"


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a plain file"
