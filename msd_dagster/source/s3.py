"""A dataset root in S3 (or an S3-compatible store): ``s3://bucket/prefix/data/X/Y/Z/TR....h5``.

``S3Dataset`` offers the same interface as ``LocalDataset`` (describe, survey,
list_partitions, files_outside_layout, list_files, read, additional_file) plus ``read_many``
(concurrent, memory-bounded reads), ``partition_fingerprint`` (change detection for the
discovery sensor) and ``check``.
:mod:`msd_dagster.source.s3_staging` uploads a local dataset root to S3, resumably.

No Dagster imports here: the CLI and the tests use this module directly.
Credentials never come from this module's arguments: only from the environment / the standard
AWS chain, and no error message ever contains them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from msd_dagster.secrets import mask_text
from msd_dagster.source.layout import (
    ADDITIONAL_DIR,
    FIRST_LEVEL_PATTERN,
    MAX_SONG_FILE_BYTES,
    DatasetSurvey,
    OutsideLayout,
    SourceFile,
    SourceListingError,
    UnreadableSourceFile,
    count_up_to,
    outside_layout_entry,
    outside_layout_sorted,
    partition_prefix,
    too_large_reason,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:  # the stubs are optional; the client is duck-typed at run time
    S3Client = Any

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_READ_WORKERS",
    "S3Dataset",
    "S3ListingError",
    "S3ObjectNotFound",
    "S3SourceError",
    "make_s3_client",
    "parse_s3_url",
    "s3_client_config",
]

DEFAULT_READ_WORKERS = 8
# Streaming-body faults happen after botocore's retry layer has returned; retry them here.
BODY_READ_ATTEMPTS = 4

_THROTTLING_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalError",
    "503",
    "500",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "RequestExpired",
    "RequestTimeTooSkewed",
}
_REGION_CODES = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "301",
}
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_ACCESS_CODES = {"AccessDenied", "403", "AllAccessDisabled", "Forbidden"}
_MISSING_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError"}
# Faults that retrying cannot fix. Everything else (throttling, 5xx, connection faults, broken
# bodies) is transient: it survived botocore's retries, but the step's retry may still succeed.
_PERMANENT_CODES = (
    _CREDENTIAL_CODES
    | _REGION_CODES
    | NOT_FOUND_CODES
    | _ACCESS_CODES
    | _MISSING_CREDENTIALS
    | {"NoSuchBucket", "InvalidBucketName", "InvalidObjectState", "400"}
)
# GetObject faults that concern one object only (the listing just worked): the file is rejected
# by name and the others load. What each means for the user:
_OBJECT_PROBLEMS = {
    **dict.fromkeys(NOT_FOUND_CODES, "gone since the listing (deleted or renamed)"),
    **dict.fromkeys(
        _ACCESS_CODES,
        "access denied by S3: the credentials may list this object but not read it; check the "
        "bucket policy, the object's ACL or its KMS key",
    ),
    "InvalidObjectState": "archived (e.g. Glacier): restore the object to load it",
}
_STREAMING_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
    ConnectionError,  # builtin: resets surfacing from the socket while reading the body
)


class S3SourceError(RuntimeError):
    """S3 could not be used as an MSD source: the message says which bucket/prefix and what
    to check. Never contains credentials.

    ``code`` is the S3 error code (or botocore exception name) when there was one;
    ``permanent`` is False for faults that may pass (throttling, 5xx, network), which the
    step's retry policy should retry, and True for those it cannot fix (access, credentials,
    missing bucket, a prefix without ``data/``).
    """

    code: str = ""
    permanent: bool = True


class S3ListingError(SourceListingError, S3SourceError):
    """A listing that could not be completed (a page failed after botocore's retries, or S3
    said there was more without saying where): never a shorter listing. ``location`` is the
    ``s3://`` URL of what was being listed."""


class S3ObjectNotFound(S3SourceError, FileNotFoundError):
    """An object that should exist does not (also a ``FileNotFoundError``, like a local read)."""


class _TruncatedBody(Exception):
    pass


# --------------------------------------------------------------------------------------------
# URLs and clients


def parse_s3_url(url: str) -> tuple[str, str]:
    """``'s3://bucket/some/prefix'`` -> ``('bucket', 'some/prefix/')``; ``'s3://bucket'`` ->
    ``('bucket', '')``. The prefix has no leading slash and a trailing slash when non-empty."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ValueError(f"not an S3 URL: {url!r} (expected s3://bucket[/prefix])")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 URL without a bucket name: {url!r} (expected s3://bucket[/prefix])")
    # S3 naming rules (legacy us-east-1 names may also hold capitals and '_'); this also
    # rejects credentials pasted into the URL as user:secret@bucket.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]{1,254}", bucket):
        raise ValueError(
            f"invalid S3 bucket name in {mask_text(url)!r}: expected letters, digits, '.', '-' "
            "and '_' only (s3://bucket[/prefix])"
        )
    return bucket, normalize_prefix(prefix)


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"invalid S3 prefix {prefix!r}: empty, '.' or '..' path segments")
    return f"{prefix}/" if prefix else ""


def s3_client_config(
    max_attempts: int = 8,
    *,
    retry_mode: str = "standard",
    max_pool_connections: int = 32,
    connect_timeout: float = 10,
    read_timeout: float = 60,
) -> Config:
    """Client settings for reading many small objects from S3.

    ``max_attempts`` has botocore's meaning: *retries* after the first request, so a request
    is sent at most ``max_attempts + 1`` times.

    ``standard`` retries throttling (SlowDown, 503), 5xx and connection faults with jittered
    exponential backoff; ``adaptive`` additionally rate-limits the client after throttling
    (useful for very wide fan-outs, slower to recover). The connection pool must be at least
    as large as the number of threads sharing the client, otherwise urllib3 discards and
    re-opens connections.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    if retry_mode not in ("standard", "adaptive", "legacy"):
        raise ValueError(f"unknown retry mode {retry_mode!r}")
    return Config(
        retries={"mode": retry_mode, "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max(max_pool_connections, DEFAULT_READ_WORKERS),
        tcp_keepalive=True,
    )


def make_s3_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    unsigned: bool = False,
    max_attempts: int = 8,
    profile_name: str | None = None,
    max_pool_connections: int = 32,
    retry_mode: str = "standard",
    connect_timeout: float = 10,
    read_timeout: float = 60,
    use_ssl: bool = True,
    verify: bool | str | None = None,
    credentials: dict[str, str] | None = None,
) -> S3Client:
    """A new boto3 S3 client with :func:`s3_client_config`'s retries, timeouts and pool: the
    one factory (the Dagster resource maps its fields onto it).

    Credentials come from the environment / the standard AWS chain (env vars, ``AWS_PROFILE``
    or ``profile_name``, SSO, instance/container role) unless ``credentials`` gives explicit
    ``aws_access_key_id`` / ``aws_secret_access_key`` / ``aws_session_token``. ``unsigned=True``
    sends anonymous requests (public buckets) and needs no credentials at all.
    """
    session = boto3.session.Session(profile_name=profile_name, region_name=region_name)
    config = s3_client_config(
        max_attempts,
        retry_mode=retry_mode,
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    if unsigned:
        config = config.merge(Config(signature_version=botocore.UNSIGNED))
    return session.client(
        "s3",
        region_name=region_name,
        endpoint_url=endpoint_url,
        use_ssl=use_ssl,
        verify=verify,
        config=config,
        **(credentials or {}),
    )


# --------------------------------------------------------------------------------------------
# Error translation


def _endpoint_of(client: Any) -> str:
    try:
        return str(client.meta.endpoint_url)
    except AttributeError:  # pragma: no cover - duck-typed clients
        return "<unknown endpoint>"


def _hint_for(code: str) -> str:
    creds = (
        "the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, "
        "or AWS_PROFILE / the instance role)"
    )
    if code == "NoSuchBucket":
        return (
            "the bucket does not exist: check the bucket name, and that the endpoint "
            "(MSD_S3_ENDPOINT_URL / endpoint_url) and region point at the right service"
        )
    if code in _ACCESS_CODES:
        return (
            f"access denied: check that {creds} may s3:ListBucket and s3:GetObject "
            "(s3:PutObject to stage) on this bucket and prefix; for a public bucket use "
            "unsigned requests (MSD_S3_UNSIGNED=1)"
        )
    if code in _CREDENTIAL_CODES:
        return f"the credentials were rejected: check {creds}; temporary ones may have expired"
    if code in _REGION_CODES:
        return "the bucket is in another region: set AWS_REGION (region_name) to its region"
    if code in _THROTTLING_CODES:
        return (
            "S3 kept failing after all retries (throttling or a service fault): retry later "
            "or lower the read concurrency"
        )
    if code in NOT_FOUND_CODES:
        return "no such object: check the prefix (the dataset root must contain data/)"
    if code in _MISSING_CREDENTIALS:
        return (
            f"no usable AWS credentials were found: set {creds}; for a public bucket use "
            "unsigned requests (MSD_S3_UNSIGNED=1)"
        )
    if code in ("EndpointConnectionError", "ConnectTimeoutError"):
        return (
            "the endpoint cannot be reached: check the endpoint URL (MSD_S3_ENDPOINT_URL / "
            "AWS_ENDPOINT_URL), the region, the network and any proxy settings"
        )
    return f"check {creds}, the endpoint, the bucket name and the prefix"


def translate_error(
    exc: BaseException,
    *,
    client: Any,
    bucket: str,
    prefix: str,
    operation: str,
    key: str | None = None,
) -> S3SourceError:
    """A readable ``S3SourceError`` for a botocore fault; names bucket, prefix and endpoint."""
    if isinstance(exc, S3SourceError):
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(
            err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
        detail = f"{code}: {str(err.get('Message') or 'no message').rstrip('.')}"
    else:
        code = type(exc).__name__
        # BotoCoreError messages name the endpoint / operation, never the secret.
        detail = f"{code}: {str(exc).rstrip('.')}"
    where = f"bucket {bucket!r}, prefix {prefix!r}"
    if key is not None:
        where += f", key {key!r}"
    message = mask_text(
        f"S3 {operation} failed for {where} (s3://{bucket}/{prefix}) at {_endpoint_of(client)}: "
        f"{detail}. Check: {_hint_for(code)}"
    )
    cls = S3ObjectNotFound if code in NOT_FOUND_CODES and key is not None else S3SourceError
    error = cls(message)
    error.code = code
    error.permanent = code in _PERMANENT_CODES
    return error


BOTO_ERRORS = (ClientError, BotoCoreError)


# --------------------------------------------------------------------------------------------
# The dataset


class S3Dataset:
    """Lists and reads song files under ``s3://bucket/prefix/data``.

    ``client`` is a boto3 S3 client (thread-safe; shared by the reader threads). Keys given to
    and returned by this class are relative to the dataset root (``data/A/B/C/TRABC....h5``).
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        if not bucket:
            raise ValueError("S3Dataset needs a bucket name")
        self.client = client
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)

    @classmethod
    def from_url(cls, client: S3Client, url: str) -> S3Dataset:
        bucket, prefix = parse_s3_url(url)
        return cls(client, bucket, prefix)

    def __repr__(self) -> str:
        return f"S3Dataset({self.describe()!r})"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # -- errors

    def _error(self, exc: BaseException, operation: str, key: str | None = None) -> S3SourceError:
        return translate_error(
            exc,
            client=self.client,
            bucket=self.bucket,
            prefix=self.prefix,
            operation=operation,
            key=key,
        )

    def _no_data_error(self) -> S3SourceError:
        # Show what *is* at the prefix: a wrong prefix is usually one level off.
        try:
            resp = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/", MaxKeys=20
            )
            found = [p["Prefix"] for p in resp.get("CommonPrefixes", [])] + [
                o["Key"] for o in resp.get("Contents", [])
            ]
        except BOTO_ERRORS:
            found = []
        seen = ", ".join(found[:10]) if found else "nothing"
        return S3SourceError(
            f"no data/ folder under bucket {self.bucket!r}, prefix {self.prefix!r} "
            f"(s3://{self.bucket}/{self.prefix}data/ is empty; found {seen}) at "
            f"{_endpoint_of(self.client)}. Check: the prefix must be the dataset root that "
            "contains data/ (and AdditionalFiles/), and the bucket name and endpoint must be "
            "the ones the dataset was copied to"
        )

    # -- listing

    def _list_pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        """Every page of a listing, or ``S3ListingError``: never fewer pages than S3 has.

        Paginated by hand rather than with botocore's paginator, which ends a listing quietly
        when a page says it is truncated but carries no continuation token.
        """
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = delimiter
        pages = listed = 0
        tokens: set[str] = set()
        while True:
            try:
                page = self.client.list_objects_v2(**params)
            except BOTO_ERRORS as exc:
                error = self._error(exc, "ListObjectsV2")
                where = f"page {pages + 1} failed after {listed:,} entries: " if pages else ""
                raise self._listing_error(
                    prefix, f"{where}{error}", permanent=error.permanent, code=error.code
                ) from exc
            pages += 1
            listed += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
            yield page
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token or token in tokens:
                problem = "without a continuation token" if not token else "with a repeated token"
                raise self._listing_error(
                    prefix,
                    f"S3 ListObjectsV2 for bucket {self.bucket!r}, prefix {self.prefix!r} at "
                    f"{_endpoint_of(self.client)} returned page {pages} as truncated "
                    f"{problem} after {listed:,} entries, so the listing is incomplete. Check: "
                    "that the endpoint supports ListObjectsV2 pagination (a proxy or an "
                    "S3-compatible store may not); retry later",
                    permanent=False,
                )
            tokens.add(token)
            params["ContinuationToken"] = token

    def _listing_error(
        self, prefix: str, reason: str, *, permanent: bool, code: str = ""
    ) -> S3ListingError:
        error = S3ListingError(f"s3://{self.bucket}/{prefix}", reason, permanent=permanent)
        error.code = code
        return error

    def _iter_objects(self, prefix: str) -> Iterator[dict]:
        """The objects below ``prefix``, without folder markers (the empty ``name/`` objects
        that consoles create): they hold no file."""
        for page in self._list_pages(prefix):
            yield from (obj for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))

    def _children(self, prefix: str) -> tuple[list[str], list[str]]:
        """``(folder names, object names)`` directly below ``prefix`` (a Delimiter listing)."""
        folders, objects = [], []
        for page in self._list_pages(prefix, delimiter="/"):
            folders += [
                p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            ]
            objects += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
        return folders, objects

    def check(self) -> None:
        """Fail fast (``S3SourceError``) unless the bucket is reachable and holds ``data/``."""
        try:
            resp = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix + "data/", MaxKeys=1
            )
        except BOTO_ERRORS as exc:
            raise self._error(exc, "ListObjectsV2") from exc
        if not resp.get("KeyCount", len(resp.get("Contents", []))):
            raise self._no_data_error()

    def list_partitions(self) -> list[str]:
        return self.survey(count_outside=False).partitions

    def files_outside_layout(self) -> list[OutsideLayout]:
        return self.survey().outside

    def survey(self, *, count_outside: bool = True) -> DatasetSurvey:
        """The second-level folders ``"A/B"`` under ``data/`` and everything there that no
        partition takes (objects above the partition folders, "folders" whose names are not
        one uppercase letter), with the number of objects each holds.

        Cost: 1 + (first-level folders named by a letter, <= 26) Delimiter listings, whatever
        the number of objects, plus, when ``count_outside`` (else ``outside`` is empty), one
        listing of each folder outside the layout (at most ``OUTSIDE_COUNT_LIMIT`` objects
        counted). Raises ``S3SourceError`` when there is no ``data/`` at all (a wrong prefix
        must not look like an empty dataset).
        """
        data = self.prefix + "data/"
        names, objects = self._children(data)
        firsts = [name for name in names if FIRST_LEVEL_PATTERN.match(name)]
        if not firsts:
            self.check()  # raises with a helpful message when data/ is missing or unreadable
        files = [[name] for name in objects if name]
        folders = [[name] for name in names if name not in firsts]
        # The second-level listings are independent round trips: overlap them.
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(firsts)))) as pool:
            below = list(pool.map(lambda f: self._children(f"{data}{f}/"), firsts))
        partitions = []
        for first, (seconds, objects) in zip(firsts, below, strict=True):
            files += [[first, name] for name in objects if name]
            for second in seconds:
                if FIRST_LEVEL_PATTERN.match(second):
                    partitions.append(f"{first}/{second}")
                else:
                    folders.append([first, second])
        if not count_outside:
            return DatasetSurvey(sorted(partitions), [])
        outside = [outside_layout_entry(parts, False, 1) for parts in files] + [
            self._outside_folder(data, parts) for parts in folders
        ]
        return DatasetSurvey(sorted(partitions), outside_layout_sorted(outside))

    def _outside_folder(self, data: str, parts: list[str]) -> OutsideLayout:
        listed = self._iter_objects(data + "".join(f"{part}/" for part in parts))
        return outside_layout_entry(parts, True, *count_up_to(listed))

    def list_files(self, partition_key: str) -> list[SourceFile]:
        """Every object below the partition folder (paginated; also misplaced or misnamed song
        files and objects that are no song files, so that the normalizer can reject them with
        a reason)."""
        folder = self.prefix + partition_prefix(partition_key)
        files = [
            SourceFile(
                key=obj["Key"][len(self.prefix) :],
                size=int(obj["Size"]),
                modified=_naive_utc(obj.get("LastModified")),
                etag=clean_etag(obj.get("ETag")),
            )
            for obj in self._iter_objects(folder)
        ]
        if not files:
            # An empty partition is fine; an empty partition because the prefix is wrong is not.
            self.check()
        return sorted(files, key=lambda f: f.key)

    def partition_fingerprint(self, partition_key: str) -> str:
        """SHA-256 over the partition's sorted ``(key, size, etag)`` listing: changes when a
        file is added, removed or rewritten. Costs one listing (no reads)."""
        digest = hashlib.sha256()
        for f in self.list_files(partition_key):
            digest.update(f"{f.key}\t{f.size}\t{f.etag or ''}\n".encode())
        return digest.hexdigest()

    # -- reading

    def _object_key(self, key: str) -> str:
        if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"invalid dataset key {key!r}: expected e.g. 'data/A/B/C/TR....h5'")
        return self.prefix + key

    def _get(self, key: str, operation: str = "GetObject", max_bytes: int | None = None) -> bytes:
        object_key = self._object_key(key)
        for attempt in range(1, BODY_READ_ATTEMPTS + 1):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=object_key)
            except BOTO_ERRORS as exc:
                # botocore already retried transient faults (see s3_client_config).
                raise self._error(exc, operation, key) from exc
            body = resp["Body"]
            try:
                expected = resp.get("ContentLength")
                if max_bytes is not None and expected is not None and int(expected) > max_bytes:
                    raise UnreadableSourceFile(key, too_large_reason(int(expected)))
                data = body.read()
                if expected is not None and len(data) != int(expected):
                    raise _TruncatedBody(f"got {len(data)} of {expected} bytes")
                return data
            except (*_STREAMING_ERRORS, _TruncatedBody) as exc:
                # The connection broke while streaming the body, past botocore's retry layer.
                if attempt == BODY_READ_ATTEMPTS:
                    raise self._error(exc, operation, key) from exc
                log.warning("retrying %s after a broken body read (%s)", key, exc)
                time.sleep(min(2.0, 0.1 * 2**attempt))
            finally:
                body.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, key: str) -> bytes:
        """The bytes of one object (key relative to the dataset root).

        Raises ``S3ObjectNotFound`` (a ``FileNotFoundError``) when it does not exist and
        ``S3SourceError`` for other faults that survived the retries.
        """
        return self._get(key)

    def read_song_file(self, key: str) -> bytes | UnreadableSourceFile:
        """The bytes of one listed song file, or the reason it cannot be read when that
        concerns this object only (gone, access denied, archived, too large). Other faults
        raise ``S3SourceError``: transient ones after botocore's retries, or permanent ones
        that concern every object (credentials, bucket)."""
        try:
            return self._get(key, max_bytes=MAX_SONG_FILE_BYTES)
        except UnreadableSourceFile as problem:
            return problem
        except S3SourceError as exc:
            if exc.code not in _OBJECT_PROBLEMS:
                raise
            return UnreadableSourceFile(key, f"{_OBJECT_PROBLEMS[exc.code]} (S3 {exc.code})")

    def read_many(
        self,
        keys: Iterable[str],
        max_workers: int = DEFAULT_READ_WORKERS,
        *,
        max_in_flight: int | None = None,
    ) -> Iterator[tuple[str, bytes | UnreadableSourceFile]]:
        """``(key, bytes)`` for every key, **in the order of ``keys``**, read concurrently;
        ``(key, UnreadableSourceFile)`` for a song file that cannot be read for a reason of its
        own (see :meth:`read_song_file`).

        ``max_workers`` GetObject calls run at once (capped at the client's connection pool).
        At most ``max_in_flight`` bodies (default ``2 * max_workers``) are held at any time:
        downloading, or downloaded and waiting to be yielded. Reading stops when the consumer
        stops, so memory is bounded by ``max_in_flight`` objects, not by the number of keys.
        The first key with a fault that is not its own (throttling, network, credentials)
        raises ``S3SourceError`` when its turn to be yielded comes; pending reads are then
        cancelled.
        """
        workers = max(1, min(max_workers, _pool_size(self.client)))
        window = max(workers, max_in_flight if max_in_flight is not None else 2 * workers)
        key_iter = iter(keys)
        pending: deque[tuple[str, Future[bytes | UnreadableSourceFile]]] = deque()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-read")
        try:
            for key in islice(key_iter, window):
                pending.append((key, pool.submit(self.read_song_file, key)))
            while pending:
                key, future = pending.popleft()
                data = future.result()
                # Refill the window before handing the body over: downloads continue while
                # the consumer parses, and the window stays at most ``window`` bodies.
                for nxt in islice(key_iter, 1):
                    pending.append((nxt, pool.submit(self.read_song_file, nxt)))
                yield key, data
                del data
        finally:
            for _key, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def additional_file(self, name: str) -> bytes | None:
        """``AdditionalFiles/<name>``, or None when there is no such object."""
        try:
            return self._get(f"{ADDITIONAL_DIR}/{name}")
        except S3ObjectNotFound:
            return None


def _pool_size(client: Any) -> int:
    try:
        return int(client.meta.config.max_pool_connections)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - duck-typed clients
        return DEFAULT_READ_WORKERS


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def clean_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None
