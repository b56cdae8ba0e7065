"""Runs over several folders: each folder is loaded, checked and recorded on its own.

A run targets a range of partitions and loads its folders one after the other, each in its own
transaction, verified before it commits. These tests make one folder of a two-folder run fail
for real (SQLite triggers in the warehouse) and show that the other folder still loads, that
the failed one keeps its previous contents, that the records of the Dagster instance are per
folder (materializations, check results, partition status), and that a "From failure"
re-execution loads only what is missing.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from msd_dagster.definitions import partition_job
from msd_dagster.defs.check_names import ROWS_CHECK
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.tables import TABLE_ORDER, warehouse_key
from msd_dagster.generate import GeneratedDataset
from msd_dagster.instance import write_recommended_config
from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster_tests.pipeline_helpers import (
    PIPELINE_FOLDERS,
    PipelineTarget,
    assert_partition_run_ok,
    check_evaluations,
    dump_tables,
    partition_tracks,
    sqlite_url,
)

FIRST, SECOND = PIPELINE_FOLDERS  # A/A, A/B
TRACK_KEY = warehouse_key("msd_track")
# SQLite triggers that make the load of the second folder fail in two ways: the database
# refuses its bars, or loses one bar of each track (which only its checks can notice).
REFUSE_BARS = """
CREATE TRIGGER refuse_second_folder BEFORE INSERT ON msd_bar
WHEN NEW.track_id >= 'TRAB' AND NEW.track_id < 'TRAC'
BEGIN SELECT RAISE(ABORT, 'bars of A/B refused by the test'); END
"""
LOSE_FIRST_BARS = """
CREATE TRIGGER lose_second_folder_bar AFTER INSERT ON msd_bar
WHEN NEW.track_id >= 'TRAB' AND NEW.track_id < 'TRAC' AND NEW.track_bar_id = 1
BEGIN DELETE FROM msd_bar WHERE bar_id = NEW.bar_id; END
"""


@pytest.fixture
def loaded(pipeline_dataset: GeneratedDataset, fast_tmp_path: Path) -> PipelineTarget:
    """Both folders loaded once, in one run (a file-backed instance, for re-execution)."""
    home = write_recommended_config(fast_tmp_path / "dagster_home").parent
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(msd_folders.name, list(PIPELINE_FOLDERS))
    target = PipelineTarget(
        pipeline_dataset.root,
        sqlite_url(fast_tmp_path / "msd.sqlite"),
        fast_tmp_path / "parquet",
        instance,
    )
    assert_partition_run_ok(target.materialize(FIRST, SECOND), *PIPELINE_FOLDERS)
    return target


def _execute(target: PipelineTarget, sql: str) -> None:
    engine = target.engine()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _tables(target: PipelineTarget) -> dict[str, list[tuple]]:
    engine = target.engine()
    try:
        return dump_tables(engine)
    finally:
        engine.dispose()


def _rerun_with(target: PipelineTarget, trigger: str) -> dg.ExecuteInProcessResult:
    """Both folders loaded again with ``trigger`` in the warehouse: the run, which fails."""
    _execute(target, trigger)
    result = target.materialize(FIRST, SECOND, raise_on_error=False)
    assert not result.success
    return result


def _materialized(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> list[str]:
    return sorted(
        str(e.step_materialization_data.materialization.partition)
        for e in result.all_events
        if e.is_step_materialization
        and e.step_materialization_data.materialization.asset_key == key
    )


def _failure(result: dg.ExecuteInProcessResult) -> dg.DagsterEvent:
    [failure] = [event for event in result.all_events if event.is_step_failure]
    return failure


def _status(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str]:
    by_partition = instance.get_status_by_partition(key, list(PIPELINE_FOLDERS), msd_folders)
    return {partition: status.value for partition, status in by_partition.items()}


def test_a_failed_folder_keeps_its_rows_while_the_other_loads(
    loaded: PipelineTarget, pipeline_dataset: GeneratedDataset
) -> None:
    before = _tables(loaded)
    result = _rerun_with(loaded, REFUSE_BARS)
    # The first folder was loaded, checked and recorded; the second was rolled back.
    for table in TABLE_ORDER:
        assert _materialized(result, warehouse_key(table)) == [FIRST], table
    assert set(check_evaluations(result, FIRST)) == {
        (warehouse_key(t).to_user_string(), ROWS_CHECK) for t in TABLE_ORDER
    }
    assert check_evaluations(result, SECOND) == {}
    assert _tables(loaded) == before  # same contents: A/A reloaded, A/B untouched

    failure = _failure(result).step_failure_data.user_failure_data
    assert failure.description.startswith(f"1 of 2 folder(s) failed: {SECOND} (load): ")
    assert "bars of A/B refused by the test" in failure.description
    [item] = failure.metadata["failed_folders"].value
    assert item["partition"] == SECOND and item["stage"] == "load"
    # A constraint-like refusal fails the same way every time: no retry.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]

    # The instance's partition status is per folder, as the UI's Partitions tab shows it.
    for table in TABLE_ORDER:
        status = _status(loaded.instance, warehouse_key(table))
        assert status == {FIRST: "MATERIALIZED", SECOND: "FAILED"}, table


def test_a_folder_that_fails_its_checks_is_rolled_back_and_reported(
    loaded: PipelineTarget, pipeline_dataset: GeneratedDataset
) -> None:
    before = _tables(loaded)
    result = _rerun_with(loaded, LOSE_FIRST_BARS)
    assert _materialized(result, warehouse_key("msd_bar")) == [FIRST]

    # The trigger drops the first bar of every track that has bars.
    tracks = [
        t
        for t in partition_tracks(pipeline_dataset, SECOND)
        if pipeline_dataset.track_rows[t]["bars"]
    ]
    failed = check_evaluations(result, SECOND)
    assert [key for key, e in failed.items() if not e.passed] == [("warehouse/msd_bar", ROWS_CHECK)]
    bars = failed[("warehouse/msd_bar", ROWS_CHECK)]
    expected = sum(pipeline_dataset.track_rows[t]["bars"] for t in tracks)
    assert bars.metadata["missing_keys"].value == len(tracks)
    assert bars.metadata["rows"].value == {
        "database": expected - len(tracks),
        "frame": expected,
        "files": expected,
    }
    assert bars.description.startswith(
        f"database {expected - len(tracks):,} vs frame {expected:,} vs files {expected:,}; "
        f"missing {len(tracks)},"
    )
    # Rolled back: the database still holds the complete folder of the first load.
    assert _tables(loaded) == before
    assert (
        "checks failed for msd_bar"
        in _failure(result).step_failure_data.user_failure_data.description
    )

    # The instance keeps one check result per folder: passed for A/A, failed for A/B.
    history = loaded.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(warehouse_key("msd_bar"), ROWS_CHECK), limit=10
    )
    latest: dict[str, str] = {}
    for record in history:  # newest first
        latest.setdefault(record.partition, record.status.value)
    assert latest == {FIRST: "SUCCEEDED", SECOND: "FAILED"}
    # ... and both are current: each targets its folder's latest materialization, the one
    # of this run for A/A, the first load's for the rolled-back A/B. That is what the UI's
    # check Partitions status and the asset's check badges count (a result that targets no
    # materialization counts as neither passed nor failed).
    latest_materialization = {
        partition: loaded.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=warehouse_key("msd_bar"), asset_partitions=[partition]),
            limit=1,
        ).records[0]
        for partition in PIPELINE_FOLDERS
    }
    assert latest_materialization[FIRST].run_id == result.run_id
    assert latest_materialization[SECOND].run_id != result.run_id
    infos = loaded.instance.event_log_storage.get_asset_check_partition_info(
        [dg.AssetCheckKey(warehouse_key("msd_bar"), ROWS_CHECK)]
    )
    assert {i.partition_key: (i.latest_execution_status.value, i.is_current) for i in infos} == {
        FIRST: ("SUCCEEDED", True),
        SECOND: ("FAILED", True),
    }
    for partition in PIPELINE_FOLDERS:
        target = check_evaluations(result, partition)[("warehouse/msd_bar", ROWS_CHECK)]
        data = target.target_materialization_data
        assert data.storage_id == latest_materialization[partition].storage_id, partition


def test_from_failure_loads_only_the_failed_folder(loaded: PipelineTarget) -> None:
    before = _tables(loaded)
    _execute(loaded, REFUSE_BARS)
    failed = dg.execute_job(
        dg.reconstructable(partition_job),
        instance=loaded.instance,
        tags={
            "dagster/asset_partition_range_start": FIRST,
            "dagster/asset_partition_range_end": SECOND,
        },
        run_config=_run_config(loaded),
    )
    assert not failed.success
    _execute(loaded, "DROP TRIGGER refuse_second_folder")

    parent = loaded.instance.get_run_by_id(failed.run_id)
    rerun = dg.execute_job(
        dg.reconstructable(partition_job),
        instance=loaded.instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, loaded.instance),
        run_config=_run_config(loaded),
        # What the UI's "From failure" gives the new run (the browser tests click it for real).
        tags={**parent.tags, "dagster/is_resume_retry": "true"},
    )
    assert rerun.success
    # Only the folder that had failed was loaded again: A/A was done by the failed run.
    warehouse = [
        e.step_materialization_data.materialization
        for e in rerun.all_events
        if e.is_step_materialization
        and e.step_materialization_data.materialization.asset_key.path[0] == "warehouse"
    ]
    assert {m.partition for m in warehouse} == {SECOND}
    assert len(warehouse) == len(TABLE_ORDER)
    assert _tables(loaded) == before
    assert _status(loaded.instance, TRACK_KEY) == {FIRST: "MATERIALIZED", SECOND: "MATERIALIZED"}


def _run_config(target: PipelineTarget) -> dict:
    """The test's source, database and frame folder as run config of the real job."""
    return {
        "resources": {
            "msd_source": {"config": {"location": str(target.source)}},
            "warehouse": {"config": {"url": str(target.database_url)}},
            "frame_store": {"config": {"base_dir": str(target.parquet_dir)}},
        },
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }


def test_sqlite_triggers_are_scoped_to_the_second_folder(loaded: PipelineTarget) -> None:
    """The triggers above touch A/B only: guards the tests' own premise."""
    engine = loaded.engine()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(REFUSE_BARS)
            bar = warehouse_table(conn, "msd_bar")
            first = conn.execute(sa.select(bar).where(bar.c.track_id < "TRAB").limit(1)).one()
            conn.execute(sa.delete(bar).where(bar.c.bar_id == first.bar_id))
            conn.execute(sa.insert(bar).values(**{k: v for k, v in first._mapping.items()}))
            with pytest.raises(sa.exc.IntegrityError, match="refused by the test"):
                row = dict(first._mapping)
                row.update(track_id="TRABAAA128F4200000", bar_id=None)
                conn.execute(sa.insert(bar).values(**row))
            conn.exec_driver_sql("DROP TRIGGER refuse_second_folder")
    finally:
        engine.dispose()


def test_a_lost_shared_row_fails_that_table_s_check(loaded: PipelineTarget) -> None:
    """The shared tables are verified against the load's staged keys, in the database: a tag
    the database drops right after inserting it fails msd_artist_mbtag's check."""
    engine = loaded.engine()
    with engine.connect() as conn:
        tag = warehouse_table(conn, "msd_artist_mbtag")
        artist = conn.execute(sa.select(tag.c.artist_id).limit(1)).scalar_one()
        tags = conn.execute(sa.select(sa.func.count()).where(tag.c.artist_id == artist)).scalar()
    engine.dispose()
    _execute(loaded, f"DELETE FROM msd_artist_mbtag WHERE artist_id = '{artist}'")
    before = _tables(loaded)
    result = _rerun_with(
        loaded,
        f"""CREATE TRIGGER lose_tags AFTER INSERT ON msd_artist_mbtag
        WHEN NEW.artist_id = '{artist}'
        BEGIN DELETE FROM msd_artist_mbtag WHERE artist_mbtag_id = NEW.artist_mbtag_id; END""",
    )
    failing = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert {e.asset_key.to_user_string() for e in failing} == {"warehouse/msd_artist_mbtag"}
    # Every folder whose songs name that artist fails, with the exact number of lost tags.
    assert failing and {e.metadata["missing_keys"].value for e in failing} == {tags}
    assert tags > 0
    assert _tables(loaded) == before  # failed folders rolled back, the others reloaded


def test_a_folder_whose_table_sizes_cannot_be_read_still_loads(
    loaded: PipelineTarget, pipeline_dataset: GeneratedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sizes are read after the folder commits (e.g. a SQL Server login without VIEW
    DATABASE STATE cannot): the folder is loaded and recorded, only its table size is left
    out, and the error text keeps no secret."""
    from msd_dagster.defs.assets import folders

    def refused(engine: sa.Engine) -> None:
        raise sa.exc.ProgrammingError(
            "SELECT ...", {}, Exception("VIEW DATABASE STATE permission denied; pwd=hunter2")
        )

    monkeypatch.setattr(folders, "table_row_counts", refused)
    result = loaded.materialize(SECOND)
    assert result.success
    records = [
        e.step_materialization_data.materialization
        for e in result.all_events
        if e.is_step_materialization
        and e.step_materialization_data.materialization.asset_key == TRACK_KEY
    ]
    assert [r.partition for r in records] == [SECOND]
    metadata = records[0].metadata
    assert metadata["dagster/partition_row_count"].value == len(
        partition_tracks(pipeline_dataset, SECOND)
    )
    assert "dagster/row_count" not in metadata and "row_count_method" not in metadata
    logs = [e.user_message for e in loaded.instance.all_logs(result.run_id)]
    warnings = [m for m in logs if "sizes cannot be read" in m]
    assert warnings and "hunter2" not in warnings[0] and "pwd=***" in warnings[0]
