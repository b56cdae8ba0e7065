"""Behaviour tests of what msd-dagster builds on Dagster internals (`msd_dagster.dagster_compat`).

An upgrade of Dagster is a measured decision: ``scripts/check_dagster_upgrade.sh`` runs this
module against the newest Dagster 1.13.x in a fresh environment. Each test drives the real
path a user takes, with the recommended instance (``msd_dagster.instance``):

* the events of a multi-folder run created by ``msd-dagster load`` reach a watcher subscribed
  the way the webserver's run page subscribes, while the run is going, up to its end;
* a ranged run records one check result per check and folder, each the latest of its folder;
* a run created by ``msd-dagster load`` is re-executed "from failure" through the webserver's
  GraphQL API, in the same job snapshot, and every folder's checks stay passed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from msd_dagster.definitions import CODE_LOCATION_NAME, partition_job
from msd_dagster.defs.assets.folders import ROWS_CHECK, TABLE_ORDER
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.tables import warehouse_key
from msd_dagster.generate import GeneratedDataset
from msd_dagster.instance import write_recommended_config
from msd_dagster.local_runs import create_run, partition_tags, start_run_process
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
        instance, partition_job, CODE_LOCATION_NAME, partition_tags(list(PIPELINE_FOLDERS))
    )
    watcher = RunPageWatcher(instance, run.run_id)
    process = start_run_process(partition_job, run)
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
        instance, partition_job, CODE_LOCATION_NAME, partition_tags(list(PIPELINE_FOLDERS))
    )
    process = start_run_process(partition_job, run)
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
