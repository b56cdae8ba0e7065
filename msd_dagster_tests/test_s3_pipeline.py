"""S3 as a source, end to end, against a live moto endpoint over HTTP (no boto3 mocks).

A generated dataset is staged with ``stage_dataset`` and the Dagster assets are materialized
from ``s3://bucket/prefix`` through dagster-aws's ``S3Resource``; the results must equal a load
from the local folder. Also: 503s on GetObject absorbed by botocore's retries, permanent faults
failing fast, the discovery sensor on S3 (and its cost per tick), the CLI (stage then load in
subprocesses) and the AdditionalFiles assets on the real subset text files read from S3.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from msd_dagster.defs import sensors as sensors_module
from msd_dagster.defs.assets.additional_files import (
    LOAD_KEY,
    additional_key,
    read_additional_files,
)
from msd_dagster.defs.assets.folders import load_folders
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import (
    MsdS3Resource,
    MsdSourceResource,
    WarehouseResource,
    s3_client_for,
)
from msd_dagster.defs.sensors import msd_discovery_sensor
from msd_dagster.defs.tables import RAW_KEY
from msd_dagster.frame_store import FrameStore
from msd_dagster.generate import generate_dataset
from msd_dagster.instance import write_recommended_config
from msd_dagster.msd.additional_files import additional_frames
from msd_dagster.msd.partition import normalize_partition
from msd_dagster.source.local import LocalDataset
from msd_dagster.source.s3 import S3Dataset, S3SourceError
from msd_dagster.source.s3_staging import stage_dataset
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.schema import MSD_TABLES, NATURAL_KEYS, load_columns
from msd_dagster.warehouse.shared_load import load_shared_tables
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster_tests.pipeline_helpers import range_tags
from msd_dagster_tests.s3_fixtures import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from msd_dagster_tests.shared_data import REAL_LEAF
from msd_dagster_tests.test_additional_files_assets import (
    assert_real_subset_loaded,
    copy_real_additional_files,
    load_song_partitions,
    materialization_metadata,
    materialize_additional,
    resources,
)

pytest_plugins = ["msd_dagster_tests.s3_fixtures"]

FOLDERS = ["A/A", "B/C"]
PREFIX = "msd/subset"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 generated songs over two folders, with every AdditionalFiles file (subset names)."""
    root = tmp_path_factory.mktemp("s3-pipeline") / "dataset"
    generate_dataset(root, 40, seed=11, folders=FOLDERS, additional_files=True)
    return root


def stage(root: Path, s3_bucket: tuple[Any, str], prefix: str = PREFIX) -> str:
    client, bucket = s3_bucket
    result = stage_dataset(root, client, bucket, prefix)
    assert result.ok and result.uploaded == result.total > 0
    return f"s3://{bucket}/{prefix}"


@pytest.fixture
def staged_location(dataset_root: Path, s3_bucket: tuple[Any, str]) -> str:
    """The dataset staged into the test's bucket: its ``s3://`` location."""
    return stage(dataset_root, s3_bucket)


def materialize_partitions(
    resource_defs: dict[str, Any], instance: dg.DagsterInstance
) -> list[dg.ExecuteInProcessResult]:
    """Both folders, in one run over the range of partitions."""
    instance.add_dynamic_partitions(msd_folders.name, FOLDERS)
    result = dg.materialize(
        [load_folders],
        tags=range_tags(FOLDERS[0], FOLDERS[-1]),
        resources=resource_defs,
        instance=instance,
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.partition for e in evaluations} == set(FOLDERS)
    assert len(evaluations) == 12 * len(FOLDERS) and all(e.passed for e in evaluations)
    return [result]


def table_contents(database: Path) -> dict[str, pd.DataFrame]:
    """Every msd_* table without surrogate keys and ``upload_timestamp`` (file mtime locally,
    LastModified on S3), sorted by natural key."""
    engine = create_engine_for_url(f"sqlite:///{database}")
    out = {}
    with engine.connect() as conn:
        for table in MSD_TABLES:
            columns = [c for c in load_columns(table) if c != "upload_timestamp"]
            frame = pd.DataFrame(
                conn.execute(sa.select(*[table.c[c] for c in columns])).all(), columns=columns
            )
            out[table.name] = frame.sort_values(list(NATURAL_KEYS[table.name]), ignore_index=True)
        assert (
            conn.exec_driver_sql(
                "SELECT count(*) FROM msd_track WHERE upload_timestamp IS NULL"
            ).scalar()
            == 0
        )
    engine.dispose()
    return out


def assert_same_contents(actual: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]):
    assert set(actual) == set(expected)
    for table in expected:
        assert len(expected[table]) > 0, table
        pd.testing.assert_frame_equal(actual[table], expected[table], obj=table)


def run_text(instance: dg.DagsterInstance, results: list[dg.ExecuteInProcessResult]) -> str:
    """Everything the runs recorded: every event log entry (messages, metadata, errors)."""
    return "\n".join(repr(entry) for r in results for entry in instance.all_logs(r.run_id))


@contextmanager
def ephemeral_instance() -> Iterator[dg.DagsterInstance]:
    """An in-memory instance: 4x faster than ``dg.instance_for_test`` (no SQLite files)."""
    instance = dg.DagsterInstance.ephemeral()
    try:
        yield instance
    finally:
        instance.dispose()


def s3_resources(location: str, endpoint: str, database: Path, parquet: Path, **s3: Any):
    return resources(location, database, parquet, s3=S3Resource(endpoint_url=endpoint, **s3))


@pytest.fixture(scope="module")
def local_reference(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tables after loading both partitions and then the AdditionalFiles from the local
    folder with the library functions directly (no Dagster): an independent oracle for the
    asset graph and the CLI."""
    database = tmp_path_factory.mktemp("local-reference") / "msd.sqlite"
    engine = create_engine_for_url(f"sqlite:///{database}")
    ensure_schema(engine)
    load_song_partitions(engine, dataset_root)
    dataset = LocalDataset(dataset_root)
    load_shared_tables(engine, additional_frames(*read_additional_files(dataset)).frames)
    engine.dispose()
    return table_contents(database)


# --------------------------------------------------------------------------------------------
# The asset graph from S3


def test_s3_graph_equals_local_and_secrets_stay_out(
    s3_endpoint: Any,
    staged_location: str,
    dataset_root: Path,
    local_reference: dict[str, pd.DataFrame],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET_ACCESS_KEY  # what must not leak
    location = staged_location
    db = tmp_path / "msd.sqlite"
    res = s3_resources(location, s3_endpoint.url, db, tmp_path / "parquet")
    with ephemeral_instance() as instance:
        results = materialize_partitions(res, instance)
        results.append(materialize_additional(res, instance))
        recorded = run_text(instance, results)

    assert_same_contents(table_contents(db), local_reference)

    (raw,) = [
        e.step_materialization_data.materialization.metadata
        for e in results[0].get_asset_materialization_events()
        if e.step_materialization_data.materialization.asset_key == RAW_KEY
        and e.step_materialization_data.materialization.partition == "A/A"
    ]
    files_aa = len(LocalDataset(dataset_root).list_files("A/A"))
    assert raw["source"].value == f"{location}/"
    assert raw["dagster/partition_row_count"].value == files_aa
    extra = materialization_metadata(results[-1], additional_key("artists"))
    assert extra["source"] == f"{location}/" and len(extra["files"]) == 9

    # The secret key appears nowhere: metadata, messages, errors, console output.
    output = capfd.readouterr()
    metadata = repr(
        [
            e.step_materialization_data.materialization.metadata
            for r in results
            for e in r.get_asset_materialization_events()
        ]
    )
    assert "A/A: " in recorded and location in recorded  # the logs were captured
    for text in (recorded, metadata, output.out, output.err):
        assert FAKE_SECRET_ACCESS_KEY not in text


def test_resource_clients_get_the_project_client_config(s3_endpoint: Any) -> None:
    """Clients get s3_client_config's pool, timeouts and retries, for a plain dagster-aws
    S3Resource as well as for MsdS3Resource; a new client per call."""
    plain = S3Resource(endpoint_url=s3_endpoint.url, max_attempts=6)
    config = s3_client_for(plain).meta.config
    assert config.max_pool_connections == 32
    assert config.connect_timeout == 10 and config.read_timeout == 60
    # botocore's max_attempts counts retries: 6 retries = 7 requests at most.
    assert config.retries == {"mode": "standard", "total_max_attempts": 7}
    tuned = MsdS3Resource(
        endpoint_url=s3_endpoint.url, read_timeout=5, max_pool_connections=12, retry_mode="adaptive"
    )
    client = tuned.get_client()
    assert client is not tuned.get_client()
    assert client.meta.config.read_timeout == 5 and client.meta.config.max_pool_connections == 12
    assert client.meta.config.retries["mode"] == "adaptive"
    assert client.meta.endpoint_url == s3_endpoint.url
    unsigned = s3_client_for(S3Resource(use_unsigned_session=True, region_name="eu-west-1"))
    assert unsigned.meta.config.signature_version is not None
    assert unsigned.meta.region_name == "eu-west-1"
    # The default (no s3 given) is MsdS3Resource(): a real AWS client, not an error.
    assert MsdSourceResource(location="/nowhere").s3 is None


def test_a_folder_survives_503s_on_get_object(
    flaky_s3_endpoint: Any, staged_location: str, dataset_root: Path, tmp_path: Path
) -> None:
    flaky_s3_endpoint.arm(3)
    res = s3_resources(
        staged_location, flaky_s3_endpoint.url, tmp_path / "db.sqlite", tmp_path / "pq"
    )
    with ephemeral_instance() as instance:
        instance.add_dynamic_partitions(msd_folders.name, ["A/A"])
        result = dg.materialize(
            [load_folders], partition_key="A/A", resources=res, instance=instance
        )
    assert result.success
    files = LocalDataset(dataset_root).list_files("A/A")
    # The first three GetObject requests got 503 SlowDown; botocore retried each of them.
    assert flaky_s3_endpoint.injected_faults == 3
    assert flaky_s3_endpoint.get_object_requests == len(files) + 3
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    songs = FrameStore(tmp_path / "pq").read(["normalized", "songs"], "A/A")["msd_track"]
    local, _ = normalize_partition(LocalDataset(dataset_root), [f.key for f in files])
    expected = local.frames["msd_track"]
    assert len(songs) == len(files) == len(expected)
    pd.testing.assert_frame_equal(
        songs.drop(columns="upload_timestamp"), expected.drop(columns="upload_timestamp")
    )


def test_permanent_faults_fail_fast_transient_ones_stay_retryable(
    s3_endpoint: Any,
    flaky_s3_endpoint: Any,
    s3_bucket: tuple[Any, str],
    dataset_root: Path,
    tmp_path: Path,
) -> None:
    _, bucket = s3_bucket
    stage(dataset_root, s3_bucket)
    cases = {
        "s3://no-such-bucket-for-msd/msd/subset": ["no-such-bucket-for-msd", "'msd/subset/'"],
        f"s3://{bucket}/msd": [bucket, "'msd/'", "msd/subset/"],  # one level off
    }
    for location, expected in cases.items():
        res = s3_resources(location, s3_endpoint.url, tmp_path / "db.sqlite", tmp_path / "pq")
        started = time.monotonic()
        with ephemeral_instance() as instance:
            instance.add_dynamic_partitions(msd_folders.name, ["A/A"])
            result = dg.materialize(
                [load_folders],
                partition_key="A/A",
                resources=res,
                instance=instance,
                raise_on_error=False,
            )
        assert not result.success
        assert time.monotonic() - started < 15
        events = [e.event_type_value for e in result.all_events]
        assert "STEP_UP_FOR_RETRY" not in events and events.count("STEP_FAILURE") == 1
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        message = str(failure.step_failure_data.error)
        for text in expected:
            assert text in message
        assert FAKE_SECRET_ACCESS_KEY not in message

    # Throttling that outlasts botocore's retries is not permanent: Dagster's RetryPolicy
    # retries the step.
    flaky_s3_endpoint.arm(100)
    client = s3_client_for(S3Resource(endpoint_url=flaky_s3_endpoint.url, max_attempts=1))
    key = LocalDataset(dataset_root).list_files("A/A")[0].key
    with pytest.raises(S3SourceError) as throttled:
        S3Dataset(client, bucket, PREFIX).read(key)
    assert "SlowDown" in str(throttled.value)
    assert not throttled.value.permanent
    with pytest.raises(S3SourceError) as missing:
        S3Dataset(s3_endpoint.client(), "no-such-bucket-for-msd").check()
    assert missing.value.permanent


# --------------------------------------------------------------------------------------------
# The discovery sensor on S3


def test_discovery_sensor_on_s3_adds_partitions_and_requests_runs(
    flaky_s3_endpoint: Any,
    s3_bucket: tuple[Any, str],
    dataset_root: Path,
    staged_location: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, bucket = s3_bucket
    location = staged_location
    flaky_s3_endpoint.arm(0)
    source = MsdSourceResource(location=location, s3=S3Resource(endpoint_url=flaky_s3_endpoint.url))

    def requests_during(call):
        before = (flaky_s3_endpoint.forwarded, flaky_s3_endpoint.get_object_requests)
        value = call()
        return value, (
            flaky_s3_endpoint.forwarded - before[0],
            flaky_s3_endpoint.get_object_requests - before[1],
        )

    with ephemeral_instance() as instance:

        def tick(cursor: str | None) -> tuple[dg.SensorResult, tuple[int, int]]:
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"msd_source": source}
            ) as context:
                result, cost = requests_during(lambda: msd_discovery_sensor(context))
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(msd_folders.name, list(request.partition_keys))
            return result, cost

        # Tick 1: both folders are new. Cost: 1 check + 3 delimiter listings (data/, data/A/,
        # data/B/) + 1 listing per new folder; no object is read.
        first, cost = tick(None)
        assert cost == (6, 0)
        assert [r.partition_key for r in first.run_requests] == FOLDERS
        assert {r.tags["msd/reason"] for r in first.run_requests} == {"new"}
        assert sorted(first.dynamic_partitions_requests[0].partition_keys) == FOLDERS
        assert instance.get_dynamic_partitions(msd_folders.name) == FOLDERS

        # Tick 2: nothing changed; the known folders are re-fingerprinted, nothing requested.
        second, cost = tick(first.cursor)
        assert cost == (6, 0)
        assert not second.run_requests and not second.dynamic_partitions_requests

        # Tick 3: a file of A/A is rewritten -> one run for A/A, with a new run key.
        key = LocalDataset(dataset_root).list_files("A/A")[0].key
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=b"rewritten")
        third, _ = tick(second.cursor)
        assert [(r.partition_key, r.tags["msd/reason"]) for r in third.run_requests] == [
            ("A/A", "changed")
        ]
        assert third.run_requests[0].run_key != first.run_requests[0].run_key

        # Budgets: 2 new folders with one new folder and one re-fingerprint per tick.
        monkeypatch.setattr(sensors_module, "NEW_PARTITIONS_PER_TICK", 1)
        monkeypatch.setattr(sensors_module, "FINGERPRINTS_PER_TICK", 1)
        song = (dataset_root / key).read_bytes()
        for folder in ("D/E", "D/F"):
            track = f"TR{folder[0]}{folder[2]}A12903CD0001"
            client.put_object(Bucket=bucket, Key=f"{PREFIX}/data/{folder}/A/{track}.h5", Body=song)
        fourth, cost = tick(third.cursor)
        # 1 check + 4 delimiter listings (data/, A/, B/, D/) + 1 new + 1 known fingerprint
        assert cost == (7, 0)
        assert [r.partition_key for r in fourth.run_requests] == ["D/E"]
        fifth, cost = tick(fourth.cursor)
        assert cost == (7, 0)
        assert [r.partition_key for r in fifth.run_requests] == ["D/F"]
        assert instance.get_dynamic_partitions(msd_folders.name) == [*FOLDERS, "D/E", "D/F"]
        assert [len(t.asset_events) for t in (second, third, fourth, fifth)] == [0] * 4

        # Keys outside the layout, with a space and non-ASCII letters: one listing each to
        # count them, named in one observation of raw/song_files.
        for key in ("data/D/E F/A/TRDEA12903CD0001.h5", "data/Ö/A/B/TRÖAB12903CD0001.h5"):
            client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=song)
        sixth, cost = tick(fifth.cursor)
        # 1 check + 4 delimiter listings + 1 known fingerprint + 1 listing per outside folder
        assert cost == (8, 0)
        assert not sixth.run_requests
        (observation,) = sixth.asset_events
        assert observation.asset_key == RAW_KEY
        assert observation.metadata["files_outside_layout"].value == 2
        listed = observation.metadata["outside_layout_list"].value
        assert [(e["location"], e["files"]) for e in listed] == [
            ("data/D/E F/", 1),
            ("data/Ö/", 1),
        ]
        assert listed[0]["reason"].startswith("'E F' is not a second-level folder name")
        assert listed[1]["reason"].startswith("'Ö' is not a first-level folder name")
        assert observation.metadata["source"].value == f"{location}/"


# --------------------------------------------------------------------------------------------
# The command line: stage, then load from S3, in subprocesses


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msd_dagster.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _summary(stdout: str) -> dict[str, int]:
    """``table -> rows in database`` from the printed summary."""
    rows = re.findall(r"^(msd_\w+)\s+[\d,]+\s+([\d,]+)$", stdout, flags=re.MULTILINE)
    return {table: int(total.replace(",", "")) for table, total in rows}


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    """A DAGSTER_HOME in memory (/dev/shm) when possible: Dagster's SQLite event log fsyncs every
    event, which on disk makes a 20-song partition run ~3x slower than the work itself."""
    shm = Path("/dev/shm")
    base = (
        Path(tempfile.mkdtemp(prefix="msd-dagster-home-", dir=shm))
        if os.access(shm, os.W_OK)
        else tmp_path / "dagster_home"
    )
    base.mkdir(exist_ok=True)
    write_recommended_config(base)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_cli_stage_then_load_from_s3(
    s3_endpoint: Any,
    s3_bucket: tuple[Any, str],
    dataset_root: Path,
    local_reference: dict[str, pd.DataFrame],
    dagster_home: Path,
    tmp_path: Path,
) -> None:
    client, bucket = s3_bucket
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MSD_", "DAGSTER_")) and k != "PYTHONPATH"
    }
    env.update(
        MSD_S3_ENDPOINT_URL=s3_endpoint.url,
        MSD_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(dagster_home),
        AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET_ACCESS_KEY,
        DAGSTER_TELEMETRY_DISABLED="1",
    )
    url = f"s3://{bucket}/{PREFIX}"
    staged = _cli(
        ["stage", "--from", str(dataset_root), "--to", url, "--workers", "4"], env, tmp_path
    )
    assert staged.returncode == 0, staged.stderr
    total = sum(1 for p in dataset_root.rglob("*") if p.is_file())
    assert f"{total} files: {total} uploaded" in staged.stdout
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/AdditionalFiles/")
    assert listed["KeyCount"] == 9

    db = tmp_path / "cli.sqlite"
    loaded = _cli(
        ["load", "--source", url, "--database-url", f"sqlite:///{db}", "--workers", "2"],
        env,
        tmp_path,
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert f"from {url}/ into sqlite:///{db}" in loaded.stdout
    assert "[AdditionalFiles] 9 file(s): ok" in loaded.stdout
    contents = table_contents(db)
    assert_same_contents(contents, local_reference)
    assert _summary(loaded.stdout) == {t: len(f) for t, f in local_reference.items()}
    for text in (staged.stdout, staged.stderr, loaded.stdout, loaded.stderr):
        assert FAKE_SECRET_ACCESS_KEY not in text


def test_cli_stage_errors_are_short_and_name_the_bucket(
    s3_endpoint: Any, dataset_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from msd_dagster import cli

    monkeypatch.setenv("MSD_S3_ENDPOINT_URL", s3_endpoint.url)
    code = cli.main(["stage", "--from", str(dataset_root), "--to", "s3://no-such-bucket-for-msd/x"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no-such-bucket-for-msd" in err and "NoSuchBucket" in err and "Traceback" not in err
    assert cli.main(["stage", "--from", str(dataset_root), "--to", "bucket/x"]) == 2
    assert "not an S3 URL" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# AdditionalFiles from S3


def test_real_additional_files_from_s3(
    s3_endpoint: Any, s3_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    root = tmp_path / "dataset"
    copy_real_additional_files(root)
    song = sorted(REAL_LEAF.glob("*.h5"))[0]  # the source must hold data/ to be a dataset root
    (root / "data/A/A/A").mkdir(parents=True)
    shutil.copyfile(song, root / "data/A/A/A" / song.name)
    location = stage(root, s3_bucket)
    db = tmp_path / "msd.sqlite"
    result = materialize_additional(
        s3_resources(location, s3_endpoint.url, db, tmp_path / "parquet")
    )
    assert_real_subset_loaded(create_engine_for_url(f"sqlite:///{db}"))
    parsed = materialization_metadata(result, additional_key("artists"))
    assert parsed["source"] == f"{location}/"
    assert parsed["rows_per_file"]["subset_unique_artists.txt"] == 3888
    assert materialization_metadata(result, LOAD_KEY)["rows_inserted"]["msd_artist"] == 3888


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://no-such-bucket-for-msd/x", ["no-such-bucket-for-msd", "NoSuchBucket"]),
        ("s3://{bucket}/msd", ["'msd/'", "msd/subset/"]),  # one level off
    ],
)
def test_cli_s3_source_problems_are_one_line_before_any_run(
    s3_endpoint: Any,
    s3_bucket: tuple[Any, str],
    dataset_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    location: str,
    expected: list[str],
) -> None:
    from msd_dagster import cli

    _, bucket = s3_bucket
    stage(dataset_root, s3_bucket)
    monkeypatch.setenv("MSD_S3_ENDPOINT_URL", s3_endpoint.url)
    monkeypatch.setenv("MSD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    database = tmp_path / "msd.sqlite"
    code = cli.main(
        [
            "load",
            "--source",
            location.format(bucket=bucket),
            "--database-url",
            f"sqlite:///{database}",
        ]
    )
    out = capsys.readouterr()
    assert code == 2
    [line] = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: cannot read the source: ")
    for text in expected:
        assert text in line
    assert "Traceback" not in out.out + out.err and FAKE_SECRET_ACCESS_KEY not in out.out
    assert not database.exists()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_runs() == []


def test_cli_additional_files_listing_failure_is_reported_not_raised(
    s3_endpoint: Any, capsys: Any
) -> None:
    """S3 gone between the folders and the AdditionalFiles: one FAILED line, the load goes on
    to its summary (a client that cannot connect stands for the dropped endpoint)."""
    from msd_dagster.commands.load_steps import load_additional_files

    client = s3_client_for(S3Resource(endpoint_url="http://127.0.0.1:1", max_attempts=1))
    assert load_additional_files(
        S3Dataset(client, "bucket", "msd"), runner=None, warehouse=WarehouseResource()
    ) == [False]
    out = capsys.readouterr().out
    assert out.startswith("[AdditionalFiles] FAILED: cannot list them: S3 ListObjectsV2 ")
    assert "EndpointConnectionError" in out
    assert "Traceback" not in out
