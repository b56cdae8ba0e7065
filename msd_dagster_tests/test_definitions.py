"""The code location loads: every job resolves, every asset is documented and grouped, the
``dagster`` CLI validates it, and its resources work with nothing configured and never show a
password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._utils.error import serializable_error_info_from_exc_info

from msd_dagster import definitions, settings
from msd_dagster.defs.check_names import ROWS_CHECK, TOTAL_TRACKS
from msd_dagster.defs.checks import ALL_FOLDERS_KEY
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import MsdSourceResource, WarehouseResource
from msd_dagster.defs.tables import NORMALIZED_FRAMES, normalized_key, warehouse_key
from msd_dagster.warehouse.schema import MSD_TABLES

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every variable the resources read (the settings module is their one home); unset, the
# embedded defaults apply.
CONFIG_VARIABLES = (
    settings.MSD_HOME,
    settings.MSD_SOURCE,
    settings.MSD_S3_ENDPOINT_URL,
    settings.MSD_S3_UNSIGNED,
    settings.MSD_DATABASE_URL,
    *settings.AZURE_SQL_VARIABLES.values(),
    settings.MSD_PARQUET_DIR,
    settings.AWS_REGION,
)


def run_without_config(
    command: list[str], tmp_path: Path, timeout: float, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``command`` in the repository, with none of the configuration variables set and a new
    ``DAGSTER_HOME`` in ``tmp_path`` (plus ``extra`` variables)."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env.update(DAGSTER_HOME=str(tmp_path), **extra)
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_every_job_resolves_and_every_asset_is_grouped_and_described() -> None:
    defs = definitions.defs
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {"msd_partition_job", "msd_totals_job"} <= set(jobs)
    assert jobs["msd_partition_job"].partitions_def == msd_folders
    # The discovery sensor requests the load's assets, as the asset graph launches them (Dagster
    # runs them in its implicit asset job, with their checks).
    discovery = defs.resolve_sensor_def("msd_discovery_sensor")
    assert not discovery.has_jobs
    assert discovery.asset_selection.resolve(defs.resolve_asset_graph()) == set(
        definitions.folder_load_selection()[0]
    )

    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    for table in MSD_TABLES:
        assert warehouse_key(table.name) in specs
    for name in NORMALIZED_FRAMES:
        assert normalized_key(name) in specs
    assert dg.AssetKey(["raw", "song_files"]) in specs
    undocumented = [
        k.to_user_string() for k, s in specs.items() if not (s.description or "").strip()
    ]
    ungrouped = [k.to_user_string() for k, s in specs.items() if s.group_name in (None, "default")]
    assert undocumented == []
    assert ungrouped == []
    for key, spec in specs.items():
        if key.path[0] in ("raw", "normalized", "warehouse") and key.path[-1] not in (
            "additional_files",
            ALL_FOLDERS_KEY.path[-1],
        ):
            assert spec.group_name == key.path[0], key
            assert spec.partitions_def == msd_folders, key

    graph = defs.resolve_asset_graph()
    checks = graph.asset_check_keys
    assert checks == {
        *(dg.AssetCheckKey(warehouse_key(table.name), ROWS_CHECK) for table in MSD_TABLES),
        dg.AssetCheckKey(ALL_FOLDERS_KEY, TOTAL_TRACKS),
    }
    for key in checks:
        assert (graph.get_check_spec(key).description or "").strip(), key
    # The partition checks are checks of the load itself, not a step of their own; what the
    # UI adds to a run of the load's assets (their checks) is the job's own selection.
    job = jobs["msd_partition_job"]
    assert [node.name for node in job.nodes] == ["load_folders"]
    load_assets = {k for k in graph.get_all_asset_keys() if k.path[0] != "additional_files"}
    load_assets -= {ALL_FOLDERS_KEY, warehouse_key("additional_files")}
    assert graph.get_check_keys_for_assets(load_assets) == set(
        job.asset_layer.asset_graph.asset_check_keys
    )


def test_catalog_column_schemas_show_keys_and_references() -> None:
    specs = {spec.key: spec for spec in definitions.defs.resolve_all_asset_specs()}

    def constraints(table: str) -> dict[str, dg.TableColumnConstraints]:
        schema = specs[warehouse_key(table)].metadata["dagster/column_schema"]
        return {column.name: column.constraints for column in schema.columns}

    bar = constraints("msd_bar")
    assert bar["track_id"].other == [
        "references msd_track.track_id (verified by the partition_rows_loaded check, not a "
        "constraint)"
    ]
    assert bar["bar_id"].unique and not bar["track_id"].nullable
    track = constraints("msd_track")
    assert track["artist_id"].other == ["foreign key to msd_artist.artist_id"]
    assert track["title"].nullable and track["title"].other == []


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    done = run_without_config(
        [*command, "definitions", "validate", "-m", "msd_dagster.definitions"],
        tmp_path,
        timeout=120,
        MSD_HOME=str(tmp_path / "msd_home"),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Validation successful for code location msd_dagster" in output


def test_dg_checks_and_lists_the_project(tmp_path: Path) -> None:
    """`dg check defs` / `dg list defs` (dagster-dg-cli) with the [tool.dg] settings; the
    location name is the same in pyproject.toml's two sections and in workspace.yaml."""
    import json
    import tomllib

    dg_cli = Path(sys.executable).with_name("dg")
    msd_home = str(tmp_path / "msd_home")
    check = run_without_config(
        [str(dg_cli), "check", "defs"], tmp_path, timeout=300, MSD_HOME=msd_home
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully." in check.stdout + check.stderr
    listed = run_without_config(
        [str(dg_cli), "list", "defs", "--json"], tmp_path, timeout=300, MSD_HOME=msd_home
    )
    assert listed.returncode == 0, listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert {"raw/song_files", "normalized/songs", "warehouse/msd_segment"} <= keys

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]
    names = {
        project["dagster"]["code_location_name"],
        project["dg"]["project"]["code_location_name"],
        definitions.CODE_LOCATION_NAME,
    }
    assert names == {"msd_dagster"}
    assert (
        f"location_name: {definitions.CODE_LOCATION_NAME}"
        in (REPO_ROOT / "workspace.yaml").read_text()
    )


def test_resources_resolve_with_nothing_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CONFIG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MSD_HOME", str(tmp_path))
    with dg.build_resources(definitions.RESOURCES) as resources:
        assert resources.msd_source.location == ""
        assert not resources.msd_source.is_s3
        assert resources.warehouse.display_url() == f"sqlite:///{tmp_path / 'msd.sqlite'}"
        with resources.warehouse.engine().connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert (tmp_path / "msd.sqlite").exists()
        assert resources.frame_store.store().root == tmp_path / "parquet"
    # Constructed bare, the resources take the same defaults.
    assert MsdSourceResource().location == ""
    assert WarehouseResource().display_url() == f"sqlite:///{tmp_path / 'msd.sqlite'}"


def test_configured_values_come_from_environment_variables_and_urls_are_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret_url = "postgresql+psycopg://u:secret@h/db"
    monkeypatch.setenv("MSD_DATABASE_URL", secret_url)
    # The definitions hold no value: the resources read the variable when they are used.
    assert definitions.RESOURCES["warehouse"].url == ""
    with dg.build_resources({"warehouse": definitions.RESOURCES["warehouse"]}) as resources:
        assert resources.warehouse.display_url() == "postgresql+psycopg://u:***@h/db"
        assert "secret" not in resources.warehouse.without_secrets(f"error near {secret_url}")

    shown = WarehouseResource(url=secret_url).display_url()
    assert "secret" not in shown
    assert shown == "postgresql+psycopg://u:***@h/db"
    azure = WarehouseResource(
        azure_server="tcp:example.database.windows.net,1433",
        azure_database="msd",
        azure_user="loader",
        azure_password="Pa$$w0rd;{x}",
    ).display_url()
    assert "Pa$$w0rd" not in azure and "w0rd" not in azure
    assert "loader:***@example.database.windows.net:1433/msd" in azure
    monkeypatch.setenv("MSD_AZURE_SQL_PASSWORD", "Env$ecret1")
    monkeypatch.setenv("MSD_AZURE_SQL_SERVER", "example.database.windows.net")
    monkeypatch.delenv("MSD_DATABASE_URL")
    from_env = WarehouseResource()
    assert "Env$ecret1" not in from_env.display_url()
    assert from_env.without_secrets("login failed for Env$ecret1") == "login failed for ***"


SNAPSHOT_SCRIPT = """
from msd_dagster.dagster_compat import job_subset_like_the_code_server
from msd_dagster.definitions import (
    CODE_LOCATION_NAME, asset_job, folder_load_selection, partition_job,
)
from msd_dagster.runs.launch import job_origin

assets, checks = folder_load_selection()
job = asset_job()
origin = job_origin(CODE_LOCATION_NAME, job.name)
folder_runs = job_subset_like_the_code_server(job, assets, checks, origin)
print(partition_job().get_job_snapshot_id(), folder_runs.get_job_snapshot_id())
"""


def test_the_definitions_do_not_depend_on_the_environment(tmp_path: Path) -> None:
    """What lets a run of `msd-dagster load` be re-executed from the UI as its own: the job
    snapshot is the same whatever the variables of the process that loads the code."""

    def snapshot_id(extra: dict[str, str]) -> str:
        done = run_without_config(
            [sys.executable, "-c", SNAPSHOT_SCRIPT], tmp_path, timeout=120, **extra
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    bare = snapshot_id({})
    configured = snapshot_id(
        {
            "MSD_DATABASE_URL": "postgresql+psycopg://u:p@h/db",
            "MSD_SOURCE": "s3://bucket/prefix",
            "MSD_S3_ENDPOINT_URL": "http://127.0.0.1:9",
            "MSD_PARQUET_DIR": str(tmp_path / "frames"),
        }
    )
    assert bare == configured
    from msd_dagster.dagster_compat import job_subset_like_the_code_server
    from msd_dagster.runs.launch import job_origin

    assets, checks = definitions.folder_load_selection()
    job = definitions.asset_job()
    origin = job_origin(definitions.CODE_LOCATION_NAME, job.name)
    folder_runs = job_subset_like_the_code_server(job, assets, checks, origin)
    assert bare.split() == [
        definitions.partition_job().get_job_snapshot_id(),
        folder_runs.get_job_snapshot_id(),
    ]


def test_the_preview_and_internal_apis_we_rely_on_are_still_there() -> None:
    """Fails loudly on a Dagster upgrade that changes them (docs/deployment.md, "Dagster APIs
    relied upon")."""
    from dagster._core.definitions.metadata.metadata_set import TableMetadataSet

    # The metadata keys the loads report are TableMetadataSet's.
    keys = set(TableMetadataSet(partition_row_count=1, row_count=2, table_name="t").keys())
    assert {"dagster/partition_row_count", "dagster/row_count", "dagster/table_name"} == keys
    # Partitioned check specs are a preview feature in 1.13.
    with pytest.warns(dg.PreviewWarning, match="partitions_def"):
        dg.AssetCheckSpec("c", asset="a", partitions_def=msd_folders)


def test_totals_sensor_requests_the_totals_job_after_a_partition_run() -> None:
    import dagster as dg

    from msd_dagster.definitions import defs
    from msd_dagster.defs.sensors import loads_folders

    sensor = defs.resolve_sensor_def("msd_totals_after_loads")
    assert {job.name for job in sensor.jobs} == {"msd_totals_job", "msd_profile_job"}
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # Folder runs are runs of the load's assets in the implicit asset job, or of the job.
    assets, checks = definitions.folder_load_selection()
    folder_run = dg.DagsterRun(
        job_name="__ASSET_JOB", asset_selection=assets, asset_check_selection=checks
    )
    assert loads_folders(folder_run)
    assert loads_folders(dg.DagsterRun(job_name="msd_partition_job"))
    totals_checks = frozenset({dg.AssetCheckKey(ALL_FOLDERS_KEY, TOTAL_TRACKS)})
    assert not loads_folders(
        dg.DagsterRun(job_name="__ASSET_JOB", asset_check_selection=totals_checks)
    )
    assert not loads_folders(dg.DagsterRun(job_name="msd_totals_job"))


def test_totals_sensor_waits_while_another_folder_run_is_in_progress() -> None:
    """A folder still loading may have committed rows it has not recorded: no totals then."""
    import dagster as dg

    from msd_dagster.defs.sensors import msd_totals_after_loads

    assets, checks = definitions.folder_load_selection()
    selection = {"asset_selection": assets, "asset_check_selection": checks}
    with dg.instance_for_test() as instance:
        done = instance.add_run(
            dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.SUCCESS, **selection)
        )
        going = instance.add_run(
            dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, **selection)
        )

        def evaluate() -> object:
            context = dg.build_run_status_sensor_context(
                sensor_name=msd_totals_after_loads.name,
                dagster_event=dg.DagsterEvent(
                    event_type_value="PIPELINE_SUCCESS", job_name="__ASSET_JOB"
                ),
                dagster_instance=instance,
                dagster_run=done,
            )
            return msd_totals_after_loads(context)

        skipped = evaluate()
        assert isinstance(skipped, dg.SkipReason) and "in progress" in skipped.skip_message
        instance.delete_run(going.run_id)  # it ended: its own success comes here
        requested = evaluate()
        assert [r.job_name for r in requested] == ["msd_totals_job", "msd_profile_job"]


def test_database_errors_leave_masked_and_unchained() -> None:
    """The event log keeps an exception's cause: a masked description must not carry the
    driver's own text behind it."""
    warehouse = WarehouseResource(url="postgresql+psycopg://u:hunter2@h/db")
    with pytest.raises(dg.Failure) as raised, warehouse.errors_without_secrets():
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("denied, password=hunter2"))
    failure = raised.value
    assert failure.description == "Exception: denied, password=***"
    assert failure.__cause__ is None and failure.__suppress_context__
    info = serializable_error_info_from_exc_info((type(failure), failure, failure.__traceback__))
    assert "hunter2" not in info.to_string()
    # A lost connection may pass, so the step may retry; the resource's password is masked too.
    assert failure.allow_retries
