"""``msd-dagster stage``: upload a local dataset root to S3 (or an S3-compatible store),
resumably: an object already there with the same size and MD5 is skipped.

No Dagster imports here. Credentials come only from the environment / the standard AWS chain.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from msd_dagster.source.layout import ADDITIONAL_DIR
from msd_dagster.source.s3 import (
    BOTO_ERRORS,
    NOT_FOUND_CODES,
    S3Client,
    clean_etag,
    log,
    normalize_prefix,
    translate_error,
)

__all__ = ["StageResult", "stage_dataset"]

# Files up to this size are uploaded with one PutObject, so their ETag is their MD5.
# MSD song files are < ~1 MB; only the AdditionalFiles SQLite databases (hundreds of MB) go
# multipart, and for those the MD5 is kept in object metadata instead.
SINGLE_PUT_MAX_BYTES = 64 * 1024 * 1024
MD5_METADATA_KEY = "md5"  # stored as x-amz-meta-md5


@dataclass
class StageResult:
    """What ``stage_dataset`` did. ``failures`` lists ``(key, reason)`` for each failed file."""

    total: int = 0
    uploaded: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    aborted: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def not_attempted(self) -> int:
        """Files never tried because staging was aborted after too many failures."""
        return max(0, self.total - self.uploaded - self.skipped - self.failed)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.aborted and self.not_attempted == 0


@dataclass(frozen=True)
class _Group:
    """Local files whose remote counterparts are listed with one (paginated) listing."""

    rel_prefix: str  # relative to the dataset root, "" or ending with "/"
    directory: Path
    recursive: bool


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _stage_groups(root: Path) -> list[_Group]:
    """``data/X/Y/`` folders (one listing each, ~1,500 objects in the full set), the shallower
    data folders, ``AdditionalFiles/`` and the root's own files (README, LICENSE).
    Hidden files and other top-level folders are not part of the dataset and are skipped."""
    groups = [_Group("", root, recursive=False)]
    data = root / "data"
    if data.is_dir():
        groups.append(_Group("data/", data, recursive=False))
        for first in sorted(p for p in data.iterdir() if p.is_dir() and _visible(p.name)):
            groups.append(_Group(f"data/{first.name}/", first, recursive=False))
            for second in sorted(p for p in first.iterdir() if p.is_dir() and _visible(p.name)):
                groups.append(_Group(f"data/{first.name}/{second.name}/", second, recursive=True))
    extra = root / ADDITIONAL_DIR
    if extra.is_dir():
        groups.append(_Group(f"{ADDITIONAL_DIR}/", extra, recursive=True))
    return groups


def _group_files(group: _Group) -> Iterator[tuple[str, Path]]:
    """``(relative key, path)`` of each regular, non-hidden file of a group, sorted."""
    if not group.recursive:
        for path in sorted(group.directory.iterdir()):
            if path.is_file() and _visible(path.name):
                yield group.rel_prefix + path.name, path
        return
    for dirpath, dirs, files in os.walk(group.directory):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        base = Path(dirpath)
        for name in sorted(files):
            path = base / name
            if _visible(name) and path.is_file():
                yield group.rel_prefix + path.relative_to(group.directory).as_posix(), path


def _file_md5(path: Path, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stage_dataset(
    source_root: Path,
    client: S3Client,
    bucket: str,
    prefix: str = "",
    *,
    workers: int = 8,
    progress: Callable[[int, int, int], None] | None = None,
    max_failures: int | None = 1000,
) -> StageResult:
    """Upload a local dataset root (``data/**``, ``AdditionalFiles/**`` and the root's files
    such as README/LICENSE) to ``s3://bucket/prefix``, ``workers`` files at a time.

    Resumable: an object that already exists with the same size and MD5 is skipped. The MD5 is
    compared with the listed ETag (files <= 64 MiB are uploaded with one PutObject, so their
    ETag is their MD5) and, when the ETag cannot be an MD5 (multipart upload, SSE-KMS), with the
    ``x-amz-meta-md5`` every upload carries. Uploads send Content-MD5, so S3 rejects a
    corrupted body. ``progress(done, total, bytes_uploaded)`` is called from the calling thread
    after each file. A file that fails (after botocore's retries) is recorded in
    ``failures``; after ``max_failures`` failures no new uploads start (``aborted``).
    Raises ``S3SourceError`` only for faults that make staging impossible (missing bucket,
    rejected credentials, a listing that keeps failing).
    """
    started = time.monotonic()
    root = Path(source_root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    prefix = normalize_prefix(prefix)
    if not (root / "data").is_dir():
        raise FileNotFoundError(f"{root} has no data/ folder: is it an MSD dataset root?")
    stager = _Stager(client, bucket, prefix)
    stager.check_bucket()

    groups = _stage_groups(root)
    result = StageResult(total=sum(1 for g in groups for _ in _group_files(g)))
    done = 0
    outstanding: set[Future[tuple[str, int]]] = set()
    keys: dict[Future[tuple[str, int]], str] = {}

    # Futures are collected in this (the calling) thread: no locks, and ``progress`` need not
    # be thread-safe.
    def collect(finished: Iterable[Future[tuple[str, int]]]) -> None:
        nonlocal done
        for fut in finished:
            outstanding.discard(fut)
            key = keys.pop(fut)
            try:
                outcome, nbytes = fut.result()
            except Exception as exc:  # every failure is reported, with its reason
                reason = (
                    str(stager.error(exc, operation="PutObject", key=key))
                    if isinstance(exc, BOTO_ERRORS)
                    else f"{type(exc).__name__}: {exc}"
                )
                result.failures.append((key, reason))
            else:
                if outcome == "uploaded":
                    result.uploaded += 1
                    result.bytes_uploaded += nbytes
                else:
                    result.skipped += 1
            done += 1
            if progress:
                progress(done, result.total, result.bytes_uploaded)

    # Bounded submission: at most 4 * workers files queued, so memory does not grow with the
    # dataset (a full-set walk yields a million paths).
    limit = max(1, workers) * 4
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="s3-stage") as pool:
        try:
            for group in groups:
                local = list(_group_files(group))
                if not local:
                    continue
                remote = stager.list_remote(group)
                for rel_key, path in local:
                    if max_failures is not None and result.failed >= max_failures:
                        result.aborted = True
                        break
                    while len(outstanding) >= limit:
                        finished, _ = wait(outstanding, return_when=FIRST_COMPLETED)
                        collect(finished)
                    fut = pool.submit(stager.upload, path, rel_key, remote.get(rel_key))
                    keys[fut] = rel_key
                    outstanding.add(fut)
                if result.aborted:
                    break
            while outstanding:
                finished, _ = wait(outstanding, return_when=FIRST_COMPLETED)
                collect(finished)
        finally:
            for fut in outstanding:
                fut.cancel()
    result.seconds = time.monotonic() - started
    if result.aborted:
        log.error("staging aborted after %d failures", result.failed)
    return result


class _Stager:
    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.error = functools.partial(translate_error, client=client, bucket=bucket, prefix=prefix)

    def check_bucket(self) -> None:
        # One cheap call first: a missing bucket or bad credentials must not become a
        # million identical per-file failures.
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except BOTO_ERRORS as exc:
            raise self.error(exc, operation="ListObjectsV2") from exc

    def list_remote(self, group: _Group) -> dict[str, tuple[int, str | None]]:
        """``relative key -> (size, etag)`` of what is already uploaded for a group."""
        object_prefix = self.prefix + group.rel_prefix
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": object_prefix}
        if not group.recursive:
            kwargs["Delimiter"] = "/"
        remote: dict[str, tuple[int, str | None]] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    remote[rel] = (int(obj["Size"]), clean_etag(obj.get("ETag")))
        except BOTO_ERRORS as exc:
            raise self.error(exc, operation="ListObjectsV2") from exc
        return remote

    def _remote_md5(self, object_key: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
                return None
            raise
        return head.get("Metadata", {}).get(MD5_METADATA_KEY)

    def _same(self, object_key: str, size: int, md5: str, remote: tuple[int, str | None]) -> bool:
        remote_size, etag = remote
        if remote_size != size:
            return False
        if etag == md5:
            return True
        # ETag is not an MD5 for multipart uploads ("...-N") and SSE-KMS objects: ask the
        # metadata (one HEAD, only for same-size objects).
        return self._remote_md5(object_key) == md5

    def upload(
        self, path: Path, rel_key: str, remote: tuple[int, str | None] | None
    ) -> tuple[str, int]:
        object_key = self.prefix + rel_key
        size = path.stat().st_size
        if size <= SINGLE_PUT_MAX_BYTES:
            data = path.read_bytes()
            digest = hashlib.md5(data, usedforsecurity=False)
            md5 = digest.hexdigest()
            if remote is not None and self._same(object_key, len(data), md5, remote):
                return "skipped", 0
            self.client.put_object(
                Bucket=self.bucket,
                Key=object_key,
                Body=data,
                ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
                Metadata={MD5_METADATA_KEY: md5},
            )
            return "uploaded", len(data)
        # Large side files (SQLite databases): stream from disk with a managed multipart upload.
        from boto3.s3.transfer import TransferConfig

        md5 = _file_md5(path)
        if remote is not None and self._same(object_key, size, md5, remote):
            return "skipped", 0
        self.client.upload_file(
            str(path),
            self.bucket,
            object_key,
            ExtraArgs={"Metadata": {MD5_METADATA_KEY: md5}},
            Config=TransferConfig(
                multipart_threshold=SINGLE_PUT_MAX_BYTES,
                multipart_chunksize=SINGLE_PUT_MAX_BYTES,
                max_concurrency=4,
            ),
        )
        return "uploaded", size
