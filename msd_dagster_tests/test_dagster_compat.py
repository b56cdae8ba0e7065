"""Behaviour tests of what msd-dagster builds on Dagster internals (`msd_dagster.dagster_compat`).

An upgrade of Dagster is a measured decision: ``scripts/check_dagster_upgrade.sh`` runs this
module against the newest Dagster 1.13.x in a fresh environment. Each test drives the real
path a user takes, with the recommended instance (``msd_dagster.instance``):

* the events of a multi-folder run created by ``msd-dagster load`` reach a watcher subscribed
  the way the webserver's run page subscribes, while the run is going, up to its end;
* a ranged run records one check result per check and folder, each the latest of its folder;
* a run created by ``msd-dagster load`` is re-executed "from failure" through the webserver's
  GraphQL API, in the same job snapshot, and every folder's checks stay passed; the asset
  graph's "Materialize" of one folder and an asset backfill make runs of the same job,
  snapshot and step as the CLI's.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from msd_dagster.definitions import CODE_LOCATION_NAME
from msd_dagster.defs.check_names import ROWS_CHECK
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.tables import TABLE_ORDER, warehouse_key
from msd_dagster.generate import GeneratedDataset
from msd_dagster.instance import write_recommended_config
from msd_dagster.runs.launch import create_run, folder_runs_target, start_run_process
from msd_dagster.runs.tags import partition_tags
from msd_dagster_tests.graphql_queries import LAUNCH_BACKFILL, LAUNCH_RUN, REEXECUTE, RUNS
from msd_dagster_tests.pipeline_helpers import PIPELINE_FOLDERS, sqlite_url

TRACK_KEY = warehouse_key("msd_track")


@pytest.fixture
def cli_instance(
    pipeline_dataset: GeneratedDataset, fast_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The recommended instance in a new DAGSTER_HOME, the environment a load's runs read, and
    the pipeline's folders registered."""
    home = write_recommended_config(fast_tmp_path / "dagster_home").parent
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MSD_SOURCE", str(pipeline_dataset.root))
    monkeypatch.setenv("MSD_DATABASE_URL", sqlite_url(fast_tmp_path / "msd.sqlite"))
    monkeypatch.setenv("MSD_PARQUET_DIR", str(fast_tmp_path / "parquet"))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(msd_folders.name, list(PIPELINE_FOLDERS))
        yield instance


class RunPageWatcher:
    """What the UI's run page does: ``instance.event_log_storage.watch`` from the start."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.instance = instance
        self.run_id = run_id
        self.received: list[tuple[dg.DagsterEventType | None, bool]] = []
        self.ended = threading.Event()
        instance.event_log_storage.watch(run_id, None, self._on_event)

    def _on_event(self, entry: Any, _cursor: str) -> dg.DagsterRunStatus | None:
        run = self.instance.get_run_by_id(self.run_id)
        self.received.append((entry.dagster_event_type, bool(run and run.is_finished)))
        if entry.dagster_event_type in (
            dg.DagsterEventType.RUN_SUCCESS,
            dg.DagsterEventType.RUN_FAILURE,
        ):
            self.ended.set()
            return run.status if run else None
        return None


def test_a_watcher_sees_every_event_of_a_cli_run_while_it_goes(cli_instance) -> None:
    instance = cli_instance
    run = create_run(
        instance, folder_runs_target(), CODE_LOCATION_NAME, partition_tags(list(PIPELINE_FOLDERS))
    )
    watcher = RunPageWatcher(instance, run.run_id)
    process = start_run_process(folder_runs_target(), run)
    process.join(300)
    assert process.exitcode == 0
    # The watcher stops only at the run's end event (it is not polled: it is woken).
    assert watcher.ended.wait(30), f"the watcher saw {len(watcher.received)} events, not the end"
    stored = [
        r.event_log_entry.dagster_event_type
        for r in instance.get_records_for_run(run.run_id).records
    ]
    assert [event_type for event_type, _ in watcher.received] == stored
    # Each folder's materializations reached it while the run was still going.
    materialized = [
        finished
        for event_type, finished in watcher.received
        if event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert len(materialized) == 16 * len(PIPELINE_FOLDERS)
    assert not any(materialized)
    assert watcher.received[-1][0] == dg.DagsterEventType.RUN_SUCCESS


def latest_check_status(instance: dg.DagsterInstance, table: str) -> dict[str, str]:
    """The latest execution of ``table``'s row check per folder, as stored: what the UI shows."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(warehouse_key(table), ROWS_CHECK), limit=1000
    )
    latest: dict[str, str] = {}
    for record in history:  # newest first
        latest.setdefault(str(record.partition), record.status.value)
    return latest


def test_a_ranged_run_records_one_check_result_per_check_and_folder(cli_instance) -> None:
    instance = cli_instance
    run = create_run(
        instance, folder_runs_target(), CODE_LOCATION_NAME, partition_tags(list(PIPELINE_FOLDERS))
    )
    process = start_run_process(folder_runs_target(), run)
    process.join(300)
    assert process.exitcode == 0
    evaluations = [
        r.event_log_entry.dagster_event.asset_check_evaluation_data
        for r in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
    ]
    assert sorted((e.asset_key.path[-1], e.partition) for e in evaluations) == sorted(
        (table, folder) for table in TABLE_ORDER for folder in PIPELINE_FOLDERS
    )
    for evaluation in evaluations:
        # Each result names its folder's materialization of this run: the UI counts it current.
        [latest] = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=evaluation.asset_key, asset_partitions=[evaluation.partition]
            ),
            limit=1,
        ).records
        assert evaluation.target_materialization_data.storage_id == latest.storage_id
        assert latest.run_id == run.run_id and evaluation.passed
    for table in TABLE_ORDER:
        assert latest_check_status(instance, table) == {
            folder: "SUCCEEDED" for folder in PIPELINE_FOLDERS
        }


def cli_run_ids(ui: Any, partition_tag: dict[str, str], after: float) -> list[str]:
    """The runs of ``msd-dagster load`` for these folders created after ``after`` (the server
    is shared with other test modules, whose loads made runs of the same folders)."""
    tags = [{"key": "msd/launched_by", "value": "cli"}] + [
        {"key": k, "value": v} for k, v in partition_tag.items()
    ]
    filter_ = {"tags": tags, "createdAfter": after}
    found = ui.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]
    return [r["runId"] for r in found]


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_a_cli_run_re_executed_from_the_ui_and_an_asset_backfill_have_its_shape(
    dagster_ui: Any, ui_partitions: list[str]
) -> None:
    from msd_dagster_tests.ui_fixtures import PARTITIONS

    ui = dagster_ui
    # A CLI run of two folders whose second fails (the database refuses its tracks).
    cli_folders = list(PARTITIONS[:8])  # one worker: runs of two folders
    first = ui.cli_load("--partition", *PARTITIONS[8:], "--skip-additional-files")
    assert first.returncode == 0, first.stdout + first.stderr  # the tables exist now
    ui.refuse_track_inserts(cli_folders[1], "the database refuses this folder")
    started = time.time()
    try:
        result = ui.cli_load(
            "--partition", *cli_folders, "--workers", "1", "--skip-additional-files"
        )
    finally:
        ui.repair_database()
    assert result.returncode == 1, result.stdout + result.stderr
    [failed] = cli_run_ids(ui, partition_tags(cli_folders[:2]), started)
    job, snapshot, steps = ui.run_shape(failed)
    assert job == "__ASSET_JOB"  # Dagster's implicit asset job, where the asset graph runs them
    assert steps == {"load_folders": "FAILURE"}
    [passed] = cli_run_ids(ui, partition_tags(cli_folders[2:4]), started)
    assert ui.run_shape(passed) == (job, snapshot, {"load_folders": "SUCCESS"})

    # "From failure" from the UI: the same shape, the failed folder loaded, the other skipped,
    # and every table's latest check result of both folders passed.
    launched = ui.graphql(
        REEXECUTE, {"params": {"parentRunId": failed, "strategy": "FROM_FAILURE"}}
    )["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    rerun = launched["run"]["runId"]
    assert ui.wait_for_run(rerun, timeout=180)["status"] == "SUCCESS"
    assert ui.run_shape(rerun) == (job, snapshot, {"load_folders": "SUCCESS"})
    with dg.DagsterInstance.from_config(str(ui.home)) as instance:
        for table in TABLE_ORDER:
            latest = latest_check_status(instance, table)
            assert {f: latest[f] for f in cli_folders[:2]} == {
                f: "SUCCEEDED" for f in cli_folders[:2]
            }, table

    # The asset graph's "Materialize" of one folder (global graph or warehouse group: the UI
    # selects every asset of load_folders, which cannot be subset, and the checks of those
    # assets, in the implicit asset job): the same job, snapshot and step as the CLI's runs.
    from msd_dagster.definitions import folder_load_selection

    assets, checks = folder_load_selection()
    single = PARTITIONS[2]
    launched = ui.graphql(
        LAUNCH_RUN,
        {
            "params": {
                "mode": "default",
                "runConfigData": "{}",
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": single}]},
                "selector": {
                    "repositoryLocationName": CODE_LOCATION_NAME,
                    "repositoryName": "__repository__",
                    "pipelineName": job,
                    "assetSelection": [{"path": key.path} for key in assets],
                    "assetCheckSelection": [
                        {"assetKey": {"path": key.asset_key.path}, "name": key.name}
                        for key in checks
                    ],
                },
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    materialized = launched["run"]["runId"]
    assert ui.wait_for_run(materialized, timeout=180)["status"] == "SUCCESS"
    assert ui.run_shape(materialized) == (job, snapshot, {"load_folders": "SUCCESS"})

    # A backfill of the load's assets, as the asset graph and the group page launch it, over
    # more folders than one run takes: ranged runs, each of the same job, snapshot and step.
    backfilled = list(PARTITIONS[8:]) + list(PARTITIONS[:2]) + list(PARTITIONS[3:8])
    params = {
        "assetSelection": [{"path": key.path} for key in assets],
        "partitionNames": backfilled,
        "fromFailure": False,
    }
    launched = ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = ui.wait_for_backfill(launched["backfillId"], timeout=240)
    runs = backfill["runs"]
    assert len(runs) >= 2 and all(r["status"] == "SUCCESS" for r in runs), runs
    for run in runs:
        assert ui.run_shape(run["runId"]) == (job, snapshot, {"load_folders": "SUCCESS"})
