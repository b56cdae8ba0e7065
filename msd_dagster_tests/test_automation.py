"""Declarative automation: a raw partition updated on its own pulls its normalized and
warehouse partitions (and their checks) along; a whole partition run does not trigger again."""

from __future__ import annotations

import warnings

import dagster as dg
import pytest

from msd_dagster.definitions import defs
from msd_dagster.defs.automation import msd_follow_upstream
from msd_dagster.generate import GeneratedDataset
from msd_dagster_tests.pipeline_helpers import (
    PIPELINE_FOLDERS,
    PipelineTarget,
    assert_partition_run_ok,
    fast_folder,
    partition_check_keys,
    partition_definitions,
    row_counts,
    sqlite_url,
)

RAW = dg.AssetKey(["raw", "song_files"])

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def _evaluate(
    target: PipelineTarget, cursor: dg.AssetDaemonCursor | None
) -> tuple[dict[dg.AssetKey, set[str]], set[dg.AssetCheckKey], dg.AssetDaemonCursor]:
    definitions = partition_definitions()
    result = dg.evaluate_automation_conditions(
        defs=dg.Definitions(
            assets=[d for d in definitions if not isinstance(d, dg.AssetChecksDefinition)],
            asset_checks=[d for d in definitions if isinstance(d, dg.AssetChecksDefinition)],
            resources=target.resources,
        ),
        instance=target.instance,
        asset_selection=msd_follow_upstream.asset_selection,
        cursor=cursor,
    )
    assets = {
        key: set(result.get_requested_partitions(key))
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        if result.get_num_requested(key)
    }
    checks = {
        key
        for request in result._requested_subsets  # noqa: SLF001 (checks have no public getter)
        if isinstance(key := request.key, dg.AssetCheckKey)
    }
    return assets, checks, result.cursor


def test_sensor_targets_the_normalized_and_warehouse_layers() -> None:
    graph = defs.resolve_asset_graph()
    assert msd_follow_upstream.default_status == dg.DefaultSensorStatus.STOPPED
    targeted = msd_follow_upstream.asset_selection.resolve(graph)
    assert RAW not in targeted
    assert {key.path[0] for key in targeted} == {"normalized", "warehouse"}
    for key in targeted:
        assert graph.get(key).automation_condition is not None, key


def test_raw_update_alone_pulls_its_partition_downstream(
    pipeline_dataset: GeneratedDataset, fast_tmp_root, request: pytest.FixtureRequest
) -> None:
    tmp = fast_folder(fast_tmp_root, request.node.name)
    target = PipelineTarget.create(
        pipeline_dataset.root, sqlite_url(tmp / "msd.sqlite"), tmp / "parquet"
    )
    first, second = PIPELINE_FOLDERS
    graph = defs.resolve_asset_graph()
    downstream = msd_follow_upstream.asset_selection.resolve(graph)

    assets, _, cursor = _evaluate(target, None)
    assert assets == {}  # nothing exists yet: raw is missing, so nothing follows

    for partition in PIPELINE_FOLDERS:  # whole partition runs: nothing left to follow
        assert_partition_run_ok(target.materialize(partition))
    loaded = row_counts(target.engine())
    assets, _, cursor = _evaluate(target, cursor)
    assert assets == {}

    # The files of one folder changed: someone re-materializes only its raw listing.
    target.materialize(second, dg.AssetSelection.assets(RAW))
    assets, checks, cursor = _evaluate(target, cursor)
    assert set(assets) == downstream
    assert all(partitions == {second} for partitions in assets.values()), assets
    # Every check of the partition job comes along, so the warehouse is checked in that run.
    assert {(c.asset_key.to_user_string(), c.name) for c in checks} == partition_check_keys()

    # The automation's run: exactly the requested assets and checks of that partition.
    selection = dg.AssetSelection.assets(*assets).without_checks() | dg.AssetSelection.checks(
        *checks
    )
    assert_partition_run_ok(target.materialize(second, selection))
    assert row_counts(target.engine()) == loaded  # reloaded, nothing duplicated
    assets, _, cursor = _evaluate(target, cursor)
    assert assets == {}
    assert first not in {p for partitions in assets.values() for p in partitions}
