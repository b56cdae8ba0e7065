"""S3Dataset and stage_dataset against a live moto endpoint over HTTP (no boto3 mocks)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore
import pytest

from msd_dagster.msd.partition import normalize_partition
from msd_dagster.source import layout, s3_staging
from msd_dagster.source import s3 as s3_module
from msd_dagster.source.layout import SourceError, SourceListingError, UnreadableSourceFile
from msd_dagster.source.s3 import (
    S3Dataset,
    S3ListingError,
    S3ObjectNotFound,
    S3SourceError,
    make_s3_client,
    parse_s3_url,
    s3_client_config,
)
from msd_dagster.source.s3_staging import stage_dataset
from msd_dagster_tests.shared_data import real_song_paths

# Harmless when conftest.py registers the plugin too (pytest loads a plugin once).
pytest_plugins = ["msd_dagster_tests.s3_fixtures"]

REGION = "us-east-1"
SECRET = "testing-secret-never-shown"  # s3_fixtures.FAKE_SECRET_ACCESS_KEY


def song_key(track_suffix: str, first: str = "A", second: str = "B", third: str = "C") -> str:
    """A layout-valid key ``data/A/B/C/TRABC<13 chars>.h5``."""
    track = f"TR{first}{second}{third}{track_suffix:0>13}"
    return f"data/{first}/{second}/{third}/{track}.h5"


def put_all(client: Any, bucket: str, objects: dict[str, bytes], workers: int = 16) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(
            pool.map(
                lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()
            )
        )


def count_calls(client: Any, operation: str) -> list[dict]:
    """Records the API parameters of every ``operation`` call made by ``client``."""
    calls: list[dict] = []
    client.meta.events.register(
        f"before-parameter-build.s3.{operation}", lambda params, **_: calls.append(dict(params))
    )
    return calls


# --------------------------------------------------------------------------------------------
# URLs and client settings


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://my-bucket") == ("my-bucket", "")
    assert parse_s3_url("s3://my-bucket/") == ("my-bucket", "")
    assert parse_s3_url("s3://my-bucket/msd/MillionSongSubset") == (
        "my-bucket",
        "msd/MillionSongSubset/",
    )
    assert parse_s3_url("s3://my-bucket//msd/") == ("my-bucket", "msd/")
    for bad in ["my-bucket/x", "http://my-bucket/x", "s3://", "s3:///x", "s3://b/a/../c"]:
        with pytest.raises(ValueError):
            parse_s3_url(bad)
    with pytest.raises(ValueError) as info:
        parse_s3_url("s3://FAKEACCESSKEYID00000:secret@bucket/x")
    assert "secret" not in str(info.value) and "FAKEACCESSKEYID00000" not in str(info.value)


def test_client_config_and_unsigned_client(s3_endpoint: Any, s3_bucket: tuple[Any, str]) -> None:
    config = s3_client_config(5)
    assert config.retries == {"mode": "standard", "max_attempts": 5}
    assert config.max_pool_connections >= s3_module.DEFAULT_READ_WORKERS
    assert config.connect_timeout and config.read_timeout

    client, bucket = s3_bucket
    # moto, like S3, serves anonymous requests only for public objects
    client.put_object(Bucket=bucket, Key="pub/data/A/B/C/x.h5", Body=b"public", ACL="public-read")
    anonymous = make_s3_client(endpoint_url=s3_endpoint.url, region_name=REGION, unsigned=True)
    assert anonymous.meta.config.signature_version is botocore.UNSIGNED
    seen: list[str | None] = []
    anonymous.meta.events.register(
        "before-send.s3", lambda request, **_: seen.append(request.headers.get("Authorization"))
    )
    assert S3Dataset(anonymous, bucket, "pub").read("data/A/B/C/x.h5") == b"public"
    assert seen == [None]  # really sent without a signature


# --------------------------------------------------------------------------------------------
# Listing


def test_list_files_paginates_over_a_thousand_objects(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    objects = {
        f"root/{song_key(str(i), third='CDEFGHIJ'[i % 8])}": f"song {i}".encode() * (1 + i % 5)
        for i in range(1010)
    }
    started = time.perf_counter()
    put_all(client, bucket, objects)
    put_seconds = time.perf_counter() - started
    # Around the partition: not part of it. Inside it but no song file: listed, to be rejected.
    client.put_object(Bucket=bucket, Key="root/data/A/B/notes.txt", Body=b"x")
    client.put_object(Bucket=bucket, Key="root/data/A/B/C/", Body=b"")  # a folder marker
    client.put_object(Bucket=bucket, Key=f"root/{song_key('1', second='C')}", Body=b"other")
    client.put_object(Bucket=bucket, Key=f"elsewhere/{song_key('2')}", Body=b"other root")

    dataset = S3Dataset(client, bucket, "root")
    calls = count_calls(client, "ListObjectsV2")
    files = dataset.list_files("A/B")

    assert len(calls) >= 2, "1,010 objects need at least two ListObjectsV2 pages"
    listed = sorted([*(k.removeprefix("root/") for k in objects), "data/A/B/notes.txt"])
    assert [f.key for f in files] == listed
    files = [f for f in files if f.key.endswith(".h5")]
    by_key = {f.key: f for f in files}
    sample = "data/A/B/D/TRABD0000000000001.h5"
    assert by_key[sample].size == len(objects[f"root/{sample}"])
    assert by_key[sample].etag == hashlib.md5(objects[f"root/{sample}"]).hexdigest()
    assert isinstance(by_key[sample].modified, datetime)
    assert by_key[sample].modified.tzinfo is None
    assert by_key[sample].track_id == "TRABD0000000000001"

    # read/read_many are covered below; a sample keeps this test fast (moto: ~150 req/s).
    sample_keys = [f.key for f in files[::10]]
    started = time.perf_counter()
    got = dict(dataset.read_many(sample_keys, max_workers=8))
    read_seconds = time.perf_counter() - started
    assert got == {k: objects[f"root/{k}"] for k in sample_keys}
    print(
        f"moto over HTTP: PutObject {len(objects) / put_seconds:.0f} obj/s (16 threads), "
        f"read_many {len(got) / read_seconds:.0f} obj/s (8 threads)"
    )


def test_list_partitions_uses_delimiter_listings_only(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    keys = [
        song_key("1", "A", "A", "A"),
        song_key("2", "A", "A", "B"),
        song_key("3", "A", "B", "C"),
        song_key("4", "B", "C", "D"),
        song_key("5", "Z", "Z", "Z"),
        "data/README.txt",  # not a folder
        "data/A/notes.txt",
        "data/a/b/c/lowercase.h5",  # not a partition key
        "AdditionalFiles/subset_unique_terms.txt",
    ]
    put_all(client, bucket, {f"some/root/{k}": b"x" for k in keys})
    put_all(client, bucket, {f"other/{song_key('9', 'Q', 'Q', 'Q')}": b"x"})

    dataset = S3Dataset(client, bucket, "/some/root/")
    calls = count_calls(client, "ListObjectsV2")
    assert dataset.describe() == f"s3://{bucket}/some/root/"
    assert dataset.list_partitions() == ["A/A", "A/B", "B/C", "Z/Z"]
    # one call for data/, one per first-level folder (A, B, Z): never an object listing
    assert len(calls) == 4
    assert all(c.get("Delimiter") == "/" for c in calls)
    assert sorted(c["Prefix"] for c in calls) == [
        "some/root/data/",
        "some/root/data/A/",
        "some/root/data/B/",
        "some/root/data/Z/",
    ]
    assert dataset.list_files("C/C") == []  # an empty partition of a valid dataset

    # The survey lists the same folders, plus each folder outside the layout (to count it).
    calls.clear()
    survey = dataset.survey()
    assert survey.partitions == ["A/A", "A/B", "B/C", "Z/Z"]
    assert [(e.location, e.files) for e in survey.outside] == [
        ("data/A/notes.txt", 1),
        ("data/README.txt", 1),
        ("data/a/", 1),
    ]
    assert sorted((c["Prefix"], c.get("Delimiter")) for c in calls) == [
        ("some/root/data/", "/"),
        ("some/root/data/A/", "/"),
        ("some/root/data/B/", "/"),
        ("some/root/data/Z/", "/"),
        ("some/root/data/a/", None),
    ]


# Folder names a copy or a hand-made folder can have, none of them one uppercase letter.
OUTSIDE_FOLDERS = ["B/A B", "B/A'B", "B/A,B", "B/Ä", "B/" + "X" * 200, "C,D", "Ä", "a", "A B"]


def test_survey_names_keys_outside_the_layout_with_spaces_and_non_ascii(
    s3_bucket: tuple[Any, str],
) -> None:
    client, bucket = s3_bucket
    objects = {f"msd/{song_key('1')}": b"song", f"msd/{song_key('2', 'B', 'A', 'C')}": b"song"}
    for folder in OUTSIDE_FOLDERS:
        for name in ("Z/TRBAZ000000000001.h5", "Z/Ünïcode name.h5"):
            objects[f"msd/data/{folder}/{name}"] = b"x"
    objects["msd/data/Über.h5"] = b"x"  # a file directly under data/
    objects["msd/data/B/TRBAA000000000001 copy.h5"] = b"x"  # wrong depth, with a space
    objects["msd/data/A/B/C/read me.txt"] = b"x"  # inside a partition: listed, not outside
    objects["msd/data/a/"] = b""  # a folder marker holds no file
    put_all(client, bucket, objects)

    dataset = S3Dataset(client, bucket, "msd")
    survey = dataset.survey()
    assert survey.partitions == ["A/B", "B/A"]
    found = {e.location: e for e in survey.outside}
    assert found.keys() == {
        "data/A B/",
        "data/B/A B/",
        "data/B/A'B/",
        "data/B/A,B/",
        "data/B/TRBAA000000000001 copy.h5",
        f"data/B/{'X' * 200}/",
        "data/B/Ä/",
        "data/C,D/",
        "data/a/",
        "data/Ä/",
        "data/Über.h5",
    }
    assert [e.files for e in survey.outside if e.location.endswith("/")] == [2] * 9
    assert survey.outside_text() == "20 file(s) under data/"
    assert found["data/B/Ä/"].reason.startswith(
        "'Ä' is not a second-level folder name (one uppercase letter A-Z), so it is no "
        "partition and its files are not loaded; "
    )
    assert found["data/A B/"].reason.startswith("'A B' is not a first-level folder name")
    assert found["data/B/TRBAA000000000001 copy.h5"].reason.startswith(
        "a file directly under data/B/, above any partition"
    )
    assert found["data/Über.h5"].reason.startswith("a file directly under data/, above any")
    assert dataset.list_files("A/B")[-1].key == "data/A/B/C/read me.txt"


def test_survey_counts_a_large_folder_outside_the_layout_up_to_a_limit(
    s3_bucket: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_bucket
    put_all(client, bucket, {f"data/lower/{i}.h5": b"x" for i in range(7)})
    monkeypatch.setattr(layout, "OUTSIDE_COUNT_LIMIT", 5)
    calls = count_calls(client, "ListObjectsV2")
    (entry,) = S3Dataset(client, bucket).files_outside_layout()
    assert (entry.location, entry.files, entry.at_least) == ("data/lower/", 5, True)
    assert entry.describe().startswith("data/lower/ (at least 5 file(s)): 'lower' is not")
    # data/, the check that data/ is not empty (no letter folder), one page of data/lower/
    assert [c["Prefix"] for c in calls] == ["data/", "data/", "data/lower/"]


# --------------------------------------------------------------------------------------------
# Reading


def test_read_and_additional_file_return_exact_bytes(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    binary = bytes(range(256)) * 300 + b"\x89HDF\r\n\x1a\n"
    client.put_object(Bucket=bucket, Key=f"msd/{song_key('1')}", Body=binary)
    client.put_object(Bucket=bucket, Key=f"msd/{song_key('2')}", Body=b"")
    terms = "rock<SEP>ਪੰਜਾਬੀ<SEP>香港歌手\n".encode()
    client.put_object(Bucket=bucket, Key="msd/AdditionalFiles/subset_unique_terms.txt", Body=terms)

    dataset = S3Dataset(client, bucket, "msd")
    assert dataset.read(song_key("1")) == binary
    assert dataset.read(song_key("2")) == b""
    assert dataset.additional_file("subset_unique_terms.txt") == terms
    assert dataset.additional_file("unique_terms.txt") is None
    with pytest.raises(S3ObjectNotFound) as info:
        dataset.read(song_key("3"))
    assert isinstance(info.value, FileNotFoundError)
    assert bucket in str(info.value) and "msd/" in str(info.value)
    with pytest.raises(ValueError):
        dataset.read("../outside.h5")


def test_read_many_is_ordered_concurrent_and_bounded(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    objects = {
        song_key(str(i)): hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(40)
    }
    put_all(client, bucket, objects)
    keys = sorted(objects, reverse=True)  # not the listing order: the input order must win

    lock = threading.Lock()
    state = {"running": 0, "max_running": 0, "held": 0, "max_held": 0, "calls": 0}

    def before(**_: Any) -> None:
        with lock:
            state["calls"] += 1
            state["running"] += 1
            state["max_running"] = max(state["max_running"], state["running"])

    def after(**_: Any) -> None:
        with lock:
            state["running"] -= 1
            state["held"] += 1  # a body now exists that the consumer has not received yet
            state["max_held"] = max(state["max_held"], state["held"])

    client.meta.events.register("before-call.s3.GetObject", before)
    client.meta.events.register("after-call.s3.GetObject", after)

    dataset = S3Dataset(client, bucket, "")
    received = []
    for key, data in dataset.read_many(keys, max_workers=4, max_in_flight=6):
        with lock:
            state["held"] -= 1
        received.append((key, data))
        time.sleep(0.01)  # a slow consumer (parsing): reads must not run ahead unboundedly
    assert [k for k, _ in received] == keys
    assert all(data == objects[key] for key, data in received)
    assert 2 <= state["max_running"] <= 4
    assert state["max_held"] <= 6

    # Stopping early stops the reads: no more than the window beyond what was consumed.
    state["calls"] = 0
    reader = dataset.read_many(keys, max_workers=4, max_in_flight=6)
    first = [next(reader) for _ in range(3)]
    reader.close()
    assert [k for k, _ in first] == keys[:3]
    assert state["calls"] <= 3 + 6

    # A key gone since the listing concerns that object only: it comes back as its reason.
    got = list(dataset.read_many([keys[0], song_key("999"), keys[1]], max_workers=2))
    assert [k for k, _ in got] == [keys[0], song_key("999"), keys[1]]
    assert got[0][1] == objects[keys[0]] and got[2][1] == objects[keys[1]]
    assert isinstance(got[1][1], UnreadableSourceFile)
    assert got[1][1].location == song_key("999")
    assert got[1][1].reason == "gone since the listing (deleted or renamed) (S3 NoSuchKey)"
    with pytest.raises(S3ObjectNotFound):
        dataset.read(song_key("999"))  # a single read still raises


def test_partition_fingerprint_tracks_changes(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    put_all(client, bucket, {f"r/{song_key(str(i))}": b"v1-%d" % i for i in range(5)})
    put_all(client, bucket, {f"r/{song_key('1', second='C')}": b"other partition"})
    dataset = S3Dataset(client, bucket, "r")

    original = dataset.partition_fingerprint("A/B")
    other = dataset.partition_fingerprint("A/C")
    assert original == dataset.partition_fingerprint("A/B")  # stable
    assert len(original) == 64 and original != other

    client.put_object(Bucket=bucket, Key=f"r/{song_key('3')}", Body=b"v2-3")  # same size
    rewritten = dataset.partition_fingerprint("A/B")
    assert rewritten != original
    client.put_object(Bucket=bucket, Key=f"r/{song_key('9')}", Body=b"new")
    added = dataset.partition_fingerprint("A/B")
    assert added not in (original, rewritten)
    client.delete_object(Bucket=bucket, Key=f"r/{song_key('9')}")
    assert dataset.partition_fingerprint("A/B") == rewritten
    assert dataset.partition_fingerprint("A/C") == other  # untouched partition


# --------------------------------------------------------------------------------------------
# Errors


def assert_names_bucket_and_prefix(exc: BaseException, bucket: str, prefix: str) -> str:
    message = str(exc)
    assert f"bucket {bucket!r}" in message and f"prefix {prefix!r}" in message, message
    assert "Check:" in message
    assert SECRET not in message
    return message


def test_missing_bucket_fails_fast(s3_endpoint: Any) -> None:
    dataset = S3Dataset(s3_endpoint.client(), "msd-no-such-bucket", "msd/subset")
    for call in (dataset.list_partitions, lambda: dataset.list_files("A/A"), dataset.check):
        with pytest.raises(S3SourceError) as info:
            call()
        message = assert_names_bucket_and_prefix(info.value, "msd-no-such-bucket", "msd/subset/")
        assert "NoSuchBucket" in message and "bucket name" in message


def test_wrong_prefix_fails_fast_and_shows_what_is_there(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key=f"msd/MillionSongSubset/{song_key('1')}", Body=b"x")
    dataset = S3Dataset(client, bucket, "msd")  # one level too high
    for call in (dataset.list_partitions, lambda: dataset.list_files("A/B"), dataset.check):
        with pytest.raises(S3SourceError) as info:
            call()
        message = assert_names_bucket_and_prefix(info.value, bucket, "msd/")
        assert "no data/" in message and "msd/MillionSongSubset/" in message
    right = S3Dataset(client, bucket, "msd/MillionSongSubset")
    right.check()
    assert right.list_partitions() == ["A/B"]


def test_rejected_and_insufficient_credentials(
    s3_endpoint: Any, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key=f"msd/{song_key('1')}", Body=b"x")
    iam = client_for(s3_endpoint, "iam")
    user = f"reader-{bucket[-8:]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]  # no policy: may do nothing

    unknown = make_client(s3_endpoint, "FAKEUNKNOWNKEYID0000", "wrong-secret-value")
    powerless = make_client(s3_endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    with s3_endpoint.enforce_auth():
        with pytest.raises(S3SourceError) as info:
            S3Dataset(unknown, bucket, "msd").list_partitions()
        message = assert_names_bucket_and_prefix(info.value, bucket, "msd/")
        assert "InvalidAccessKeyId" in message and "AWS_ACCESS_KEY_ID" in message
        assert "wrong-secret-value" not in message and "FAKEUNKNOWNKEYID0000" not in message

        with pytest.raises(S3SourceError) as info:
            S3Dataset(powerless, bucket, "msd").read(song_key("1"))
        message = assert_names_bucket_and_prefix(info.value, bucket, "msd/")
        assert "AccessDenied" in message and "s3:GetObject" in message
        assert key["SecretAccessKey"] not in message
    # auth enforcement is off again for the other tests
    assert S3Dataset(unknown, bucket, "msd").list_partitions() == ["A/B"]


def test_unreachable_endpoint_and_missing_credentials(
    s3_endpoint: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    offline = make_s3_client(
        endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION, max_attempts=1
    )
    with pytest.raises(S3SourceError) as info:
        S3Dataset(offline, "msd-bucket", "p").list_partitions()
    message = assert_names_bucket_and_prefix(info.value, "msd-bucket", "p/")
    assert "EndpointConnectionError" in message and "endpoint URL" in message

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    anonymous = s3_endpoint.client()
    with pytest.raises(S3SourceError) as info:
        S3Dataset(anonymous, "msd-bucket", "p").check()
    message = assert_names_bucket_and_prefix(info.value, "msd-bucket", "p/")
    assert "NoCredentialsError" in message and "MSD_S3_UNSIGNED" in message


def client_for(endpoint: Any, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint.url, region_name=REGION)


def make_client(endpoint: Any, access_key: str, secret: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=None,
        config=s3_client_config(1),
    )


# --------------------------------------------------------------------------------------------
# Transient faults


def test_read_survives_throttling(flaky_s3_endpoint: Any, s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    objects = {song_key(str(i)): b"payload %d" % i for i in range(8)}
    put_all(client, bucket, objects)
    dataset = S3Dataset(flaky_s3_endpoint.client(), bucket, "")

    flaky_s3_endpoint.arm(2)
    assert dataset.read(song_key("0")) == objects[song_key("0")]
    assert flaky_s3_endpoint.injected_faults == 2
    assert flaky_s3_endpoint.get_object_requests == 3  # two 503s, then the real one

    flaky_s3_endpoint.arm(3)
    assert dict(dataset.read_many(sorted(objects), max_workers=4)) == objects
    assert flaky_s3_endpoint.injected_faults == 5

    flaky_s3_endpoint.arm(100)  # listings are never failed by the proxy
    assert dataset.list_partitions() == ["A/B"]
    assert len(dataset.list_files("A/B")) == 8
    assert flaky_s3_endpoint.injected_faults == 5


def test_persistent_throttling_is_reported(
    flaky_s3_endpoint: Any, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key=song_key("1"), Body=b"x")
    dataset = S3Dataset(flaky_s3_endpoint.client(max_attempts=2), bucket, "")
    flaky_s3_endpoint.arm(100)
    with pytest.raises(S3SourceError) as info:
        dataset.read(song_key("1"))
    message = assert_names_bucket_and_prefix(info.value, bucket, "")
    assert "SlowDown" in message and "retry later" in message
    # botocore's max_attempts counts retries: the first request + 2 retries
    assert flaky_s3_endpoint.injected_faults == 3
    assert flaky_s3_endpoint.forwarded == 0


# --------------------------------------------------------------------------------------------
# Partial listings and per-object faults


def listing_through(proxy: Any, s3_bucket: tuple[Any, str], **client: Any) -> S3Dataset:
    """12 objects in partition A/B, listed through ``proxy`` five per page."""
    s3, bucket = s3_bucket
    put_all(s3, bucket, {f"r/{song_key(str(i))}": b"x" for i in range(12)})
    proxy.arm(0)
    proxy.list_page_size = 5
    return S3Dataset(proxy.client(**client), bucket, "r")


def test_a_truncated_page_without_continuation_token_fails_the_listing(
    flaky_s3_endpoint: Any, s3_bucket: tuple[Any, str]
) -> None:
    dataset = listing_through(flaky_s3_endpoint, s3_bucket)
    assert len(dataset.list_files("A/B")) == 12  # three pages
    # botocore's paginator ends a listing quietly here: 5 files instead of 12.
    flaky_s3_endpoint.strip_continuation_tokens = True
    with pytest.raises(S3ListingError) as info:
        dataset.list_files("A/B")
    error, bucket = info.value, s3_bucket[1]
    assert isinstance(error, SourceListingError) and isinstance(error, S3SourceError)
    assert error.location == f"s3://{bucket}/r/data/A/B/" and not error.permanent
    assert "returned page 1 as truncated without a continuation token after 5 entries" in (
        error.reason
    )
    assert str(error).startswith(f"cannot list s3://{bucket}/r/data/A/B/: S3 ListObjectsV2 ")
    assert_names_bucket_and_prefix(error, bucket, "r/")


@pytest.mark.parametrize(
    ("fault", "permanent", "requests"), [("SlowDown", False, 2), ("AccessDenied", True, 1)]
)
def test_a_listing_page_that_keeps_failing_fails_the_listing(
    flaky_s3_endpoint: Any, s3_bucket: tuple[Any, str], fault: str, permanent: bool, requests: int
) -> None:
    dataset = listing_through(flaky_s3_endpoint, s3_bucket, max_attempts=1)
    flaky_s3_endpoint.fail_list_pages = 100
    flaky_s3_endpoint.list_fault = fault
    with pytest.raises(S3ListingError) as info:
        dataset.list_files("A/B")
    error, bucket = info.value, s3_bucket[1]
    assert (error.code, error.permanent) == (fault, permanent)
    assert error.reason.startswith(
        f"page 2 failed after 5 entries: S3 ListObjectsV2 failed for bucket {bucket!r}"
    )
    assert fault in str(error) and "Check:" in str(error)
    # botocore retried the throttled page once (max_attempts=1), and the denied one never.
    assert flaky_s3_endpoint.list_faults_injected == requests


def upload_real_leaf(s3: Any, bucket: str) -> list[str]:
    keys = {f"data/A/A/A/{path.name}": path.read_bytes() for path in real_song_paths()}
    put_all(s3, bucket, keys)
    return sorted(keys)


def reader_denied(endpoint: Any, bucket: str, denied: list[str]) -> Any:
    """A client of an IAM user that may list the bucket and read every object but ``denied``."""
    iam = client_for(endpoint, "iam")
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    statements = [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        },
        {
            "Effect": "Deny",
            "Action": "s3:GetObject",
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in denied],
        },
    ]
    iam.put_user_policy(
        UserName=user,
        PolicyName="read-all-but",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return make_client(endpoint, key["AccessKeyId"], key["SecretAccessKey"])


def test_a_denied_object_is_rejected_by_name_and_the_others_load(
    s3_endpoint: Any, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    keys = upload_real_leaf(client, bucket)
    one = reader_denied(s3_endpoint, bucket, [keys[3]])
    every = reader_denied(s3_endpoint, bucket, ["*"])
    with s3_endpoint.enforce_auth():
        dataset = S3Dataset(one, bucket, "")
        listed = [f.key for f in dataset.list_files("A/A")]
        batch, _ = normalize_partition(dataset, listed, max_workers=4)
        with pytest.raises(SourceError) as info:
            normalize_partition(S3Dataset(every, bucket, ""), listed, max_workers=4)
    assert listed == keys
    assert batch.track_count == len(keys) - 1
    denied = (
        "access denied by S3: the credentials may list this object but not read it; check the "
        "bucket policy, the object's ACL or its KMS key (S3 AccessDenied)"
    )
    assert [(r.name, r.reason) for r in batch.rejected] == [(keys[3], denied)]
    # Not one object readable: a permanent error, not a partition without tracks.
    error = info.value
    assert (type(error), error.location, error.permanent) == (SourceError, "data/A/A", True)
    assert error.reason.startswith(
        f"none of its {len(keys)} song files could be read, e.g. {keys[0]}: {denied}"
    )


def test_transient_read_faults_raise_rather_than_reject(
    flaky_s3_endpoint: Any, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    keys = upload_real_leaf(client, bucket)
    flaky_s3_endpoint.arm(100)
    dataset = S3Dataset(flaky_s3_endpoint.client(max_attempts=1), bucket, "")
    with pytest.raises(S3SourceError) as info:
        normalize_partition(dataset, keys, max_workers=2)
    assert (info.value.code, info.value.permanent) == ("SlowDown", False)
    assert not isinstance(info.value, SourceError)


def test_an_object_larger_than_any_song_is_rejected_unread(
    s3_bucket: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_bucket
    keys = upload_real_leaf(client, bucket)
    limit = 250_000  # below some real files (0.18-0.37 MB)
    for module in (layout, s3_module):
        monkeypatch.setattr(module, "MAX_SONG_FILE_BYTES", limit)
    batch, _ = normalize_partition(S3Dataset(client, bucket, ""), keys, max_workers=4)
    large = {f"data/A/A/A/{p.name}": p.stat().st_size for p in real_song_paths()}
    large = {key: size for key, size in large.items() if size > limit}
    assert 0 < len(large) < len(keys) and batch.track_count == len(keys) - len(large)
    assert sorted((r.name, r.reason) for r in batch.rejected) == sorted(
        (key, f"{size:,} bytes: larger than any song file (at most 250,000); not read")
        for key, size in large.items()
    )


# --------------------------------------------------------------------------------------------
# Staging


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        song_key("1", "A", "A", "A"): b"song one " * 100,
        song_key("2", "A", "A", "A"): b"song two",
        song_key("3", "A", "A", "B"): bytes(range(256)),
        song_key("4", "B", "I", "J"): b"song four",
        "AdditionalFiles/subset_unique_artists.txt": "AR1<SEP>mbid<SEP>TR1<SEP>Björk\n".encode(),
        "README.txt": b"readme",
    }
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # Not part of the dataset: skipped.
    (root / "data/A/A/A/.DS_Store").write_bytes(b"junk")
    (root / "scratch").mkdir()
    (root / "scratch/tmp.bin").write_bytes(b"junk")
    return files


def bucket_contents(client: Any, bucket: str) -> dict[str, bytes]:
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_stage_dataset_uploads_resumes_and_reuploads_changes(
    tmp_path: Path, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    files = make_tree(tmp_path)
    events: list[tuple[int, int, int]] = []

    first = stage_dataset(
        tmp_path, client, bucket, "msd/subset", workers=4, progress=lambda *a: events.append(a)
    )
    assert (first.total, first.uploaded, first.skipped, first.failed) == (6, 6, 0, 0)
    assert first.ok and first.bytes_uploaded == sum(len(v) for v in files.values())
    assert len(events) == 6 and events[-1] == (6, 6, first.bytes_uploaded)
    assert [e[0] for e in events] == list(range(1, 7))
    assert bucket_contents(client, bucket) == {f"msd/subset/{k}": v for k, v in files.items()}
    dataset = S3Dataset(client, bucket, "msd/subset")
    assert dataset.list_partitions() == ["A/A", "B/I"]
    assert (
        dataset.additional_file("subset_unique_artists.txt")
        == files["AdditionalFiles/subset_unique_artists.txt"]
    )

    puts = count_calls(client, "PutObject")
    second = stage_dataset(tmp_path, client, bucket, "msd/subset", workers=4)
    assert (second.uploaded, second.skipped, second.failed, second.bytes_uploaded) == (0, 6, 0, 0)
    assert puts == []

    # Same size, new content (only the checksum can tell) and a new file.
    changed = song_key("2", "A", "A", "A")
    (tmp_path / changed).write_bytes(b"song TWO")
    added = song_key("5", "A", "A", "B")
    (tmp_path / added).write_bytes(b"song five")
    third = stage_dataset(tmp_path, client, bucket, "msd/subset", workers=4)
    assert (third.total, third.uploaded, third.skipped, third.failed) == (7, 2, 5, 0)
    assert sorted(p["Key"] for p in puts) == [f"msd/subset/{changed}", f"msd/subset/{added}"]
    assert dataset.read(changed) == b"song TWO"
    assert dataset.read(added) == b"song five"


def test_stage_dataset_multipart_files_resume_by_metadata(
    tmp_path: Path, s3_bucket: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_bucket
    # Pretend the single-PUT limit is 5 MiB (the S3 minimum part size) to exercise multipart.
    monkeypatch.setattr(s3_staging, "SINGLE_PUT_MAX_BYTES", 5 * 1024 * 1024)
    (tmp_path / "data/A/A/A").mkdir(parents=True)
    (tmp_path / song_key("1", "A", "A", "A")).write_bytes(b"small")
    big = tmp_path / "AdditionalFiles/track_metadata.db"
    big.parent.mkdir()
    big.write_bytes(hashlib.sha256(b"seed").digest() * (6 * 1024 * 1024 // 32))

    first = stage_dataset(tmp_path, client, bucket, "", workers=2)
    assert (first.uploaded, first.skipped, first.failed) == (2, 0, 0)
    head = client.head_object(Bucket=bucket, Key="AdditionalFiles/track_metadata.db")
    assert head["ETag"].strip('"').endswith("-2")  # multipart: the ETag is not an MD5
    assert head["Metadata"]["md5"] == hashlib.md5(big.read_bytes()).hexdigest()

    second = stage_dataset(tmp_path, client, bucket, "", workers=2)
    assert (second.uploaded, second.skipped, second.failed) == (0, 2, 0)


def test_stage_dataset_reports_failed_uploads(
    tmp_path: Path, s3_endpoint: Any, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    make_tree(tmp_path)
    iam = client_for(s3_endpoint, "iam")
    user = f"lister-{bucket[-8:]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="list-only",
        PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
            '"Action": ["s3:ListBucket"], "Resource": "*"}]}'
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    lister = make_client(s3_endpoint, key["AccessKeyId"], key["SecretAccessKey"])

    with s3_endpoint.enforce_auth():
        result = stage_dataset(tmp_path, lister, bucket, "msd", workers=2)
        aborted = stage_dataset(tmp_path, lister, bucket, "msd", workers=1, max_failures=1)
    assert (result.total, result.uploaded, result.failed) == (6, 0, 6)
    assert not result.ok and not result.aborted
    assert sorted(k for k, _ in result.failures)[0] == "AdditionalFiles/subset_unique_artists.txt"
    assert all(
        "AccessDenied" in reason and f"bucket {bucket!r}" in reason for _, reason in result.failures
    )
    assert aborted.aborted and 1 <= aborted.failed < 6 and aborted.not_attempted > 0
    assert bucket_contents(client, bucket) == {}


def test_stage_dataset_into_missing_bucket_fails_fast(tmp_path: Path, s3_endpoint: Any) -> None:
    make_tree(tmp_path)
    with pytest.raises(S3SourceError) as info:
        stage_dataset(tmp_path, s3_endpoint.client(), "msd-missing-bucket", "x")
    assert_names_bucket_and_prefix(info.value, "msd-missing-bucket", "x/")
