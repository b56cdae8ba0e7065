"""The recommended Dagster instance (``msd_dagster.instance``): Dagster's SQLite storage with its
connections kept open. Same files and records as the default storage, in both directions; safe
across a fork; no lock taken twice. What it needs of Dagster's internals is tested by its
behaviour in test_dagster_compat.py."""

import multiprocessing
import os
from pathlib import Path

import dagster as dg

from msd_dagster.instance import (
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
    write_recommended_config,
)

folders = dg.DynamicPartitionsDefinition(name="folders")


@dg.asset(partitions_def=folders)
def table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    # A MaterializeResult carries data-version tags: the event path that once took the
    # storage's lock twice (tags are stored inside an index transaction).
    return dg.MaterializeResult(
        metadata={"dagster/partition_row_count": len(context.partition_key)}
    )


@dg.asset_check(asset=table, partitions_def=folders)
def table_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, description=f"ok {context.partition_key}")


def _record_runs(instance: dg.DagsterInstance, partitions: list[str]) -> list[str]:
    instance.add_dynamic_partitions(folders.name, partitions)
    run_ids = []
    for partition in partitions:
        result = dg.materialize([table, table_check], partition_key=partition, instance=instance)
        assert result.success
        run_ids.append(result.run_id)
    return run_ids


def _records(instance: dg.DagsterInstance, run_ids: list[str]) -> dict:
    """Everything a UI page reads, in comparable form."""
    check = dg.AssetCheckKey(table.key, "table_check")
    history = instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
    return {
        "runs": sorted(
            (r.run_id, r.status.value, r.tags.get("dagster/partition")) for r in instance.get_runs()
        ),
        "events": {
            run_id: [
                (r.storage_id, r.event_log_entry.dagster_event_type)
                for r in instance.get_records_for_run(run_id).records
            ]
            for run_id in run_ids
        },
        "materialized": sorted(instance.get_materialized_partitions(table.key)),
        "partitions": instance.get_dynamic_partitions(folders.name),
        "checks": sorted((r.partition, r.status.value, r.run_id) for r in history),
        "latest": [
            (r.partition_key, r.asset_materialization.metadata["dagster/partition_row_count"].value)
            for r in instance.fetch_materializations(table.key, limit=100).records
        ],
    }


def _stock_config(home: Path) -> None:
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {str(home)!r}\n")


def test_records_are_the_default_storage_s_in_both_directions(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    write_recommended_config(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        run_ids = _record_runs(instance, ["A/A", "A/BB"])
        pooled = _records(instance, run_ids)
    assert pooled["materialized"] == ["A/A", "A/BB"]
    assert [status for _, status, _ in pooled["checks"]] == ["SUCCEEDED", "SUCCEEDED"]
    # The very same files, opened with Dagster's default storage.
    _stock_config(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert _records(instance, run_ids) == pooled
        run_ids += _record_runs(instance, ["B/C"])
        stock = _records(instance, run_ids)
    write_recommended_config(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert _records(instance, run_ids) == stock
    files = sorted(p.name for p in (home / "history" / "runs").glob("*.db"))
    assert files == sorted([*(f"{run_id}.db" for run_id in run_ids), "index.db"])


def _child_run(home: str) -> None:
    with dg.DagsterInstance.from_config(home) as instance:
        _record_runs(instance, ["C/C"])
    os._exit(0)


def test_a_forked_child_records_through_its_own_connections(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    write_recommended_config(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        first = _record_runs(instance, ["A/A"])  # the parent's connections are open now
        child = multiprocessing.get_context("fork").Process(target=_child_run, args=(str(home),))
        child.start()
        child.join(120)
        assert child.exitcode == 0
        second = _record_runs(instance, ["B/B"])  # and still usable
        records = _records(instance, [*first, *second])
    assert records["materialized"] == ["A/A", "B/B", "C/C"]
    assert len(records["runs"]) == 3
