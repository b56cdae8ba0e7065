"""End to end through a real ``dagster dev``: what an operator does from the UI, over GraphQL.

One story, in order, on one server (``dagster_ui``): register ten folders, launch a backfill
of nine of them, run the tenth on its own, see Dagster run the backfill as ranged runs (at most
``FOLDERS_PER_RUN`` folders per run, one step each) and read what the UI shows per folder: its
partition status, each table's materialization with its row count, each check's result with
its numbers. Then a folder in the middle of a ranged run fails its checks on purpose: it shows
as failed, its neighbours in the same run as materialized; fix it, re-execute that run from the
failure, and find the database exactly as after the first load. The server's daemon does the
queueing and the backfill submission, as in production.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import pytest

from msd_dagster.defs.check_names import ROWS_CHECK, TOTAL_TRACKS
from msd_dagster.defs.partitions import FOLDERS_PER_RUN
from msd_dagster.defs.tables import TABLE_ORDER
from msd_dagster.warehouse.schema import NATURAL_KEYS, TRACK_TABLE_NAMES
from msd_dagster_tests.graphql_queries import (
    ASSET_PARTITIONS,
    ASSET_STATUS,
    BACKFILL,
    LAUNCH_BACKFILL,
    MATERIALIZATIONS,
    REEXECUTE,
    RUN_EVENTS,
    check_executions_query,
)
from msd_dagster_tests.ui_fixtures import (
    E2E_MARKS,
    NO_RETRIES,
    PARTITION_JOB,
    PARTITIONS,
    DagsterUI,
)

pytestmark = E2E_MARKS

STEP = "load_folders"  # the partition job's one step
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
SINGLE = PARTITIONS[0]
BACKFILLED = list(PARTITIONS[1:])  # nine folders: one run of FOLDERS_PER_RUN, one of the rest
# A ranged run whose middle folder fails its msd_bar check.
FAILING_RANGE = ("A/C", "B/A", "B/B")
FAILING = "B/A"


@pytest.fixture(scope="module")
def story() -> dict[str, Any]:
    """What earlier steps of the story found (ids, counts), for the later ones."""
    return {}


def need(story: dict[str, Any], key: str) -> Any:
    if key not in story:
        pytest.skip(f"an earlier step of the story did not record {key!r} (see its failure)")
    return story[key]


def warehouse_key(table: str) -> dict[str, list[str]]:
    return {"path": ["warehouse", table]}


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def table_counts(ui: DagsterUI) -> dict[str, int]:
    with ui.db() as db:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLE_ORDER}


def duplicate_keys(ui: DagsterUI) -> dict[str, int]:
    """Rows minus distinct natural keys, per table (0 everywhere when nothing is duplicated)."""
    out = {}
    with ui.db() as db:
        for table in TABLE_ORDER:
            cols = ", ".join(NATURAL_KEYS[table])
            total = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            distinct = db.execute(f"SELECT COUNT(*) FROM (SELECT DISTINCT {cols} FROM {table})")
            out[table] = total - distinct.fetchone()[0]
    return out


def asset_statuses(ui: DagsterUI) -> dict[str, dict[str, Any]]:
    keys = [warehouse_key(t) for t in TABLE_ORDER]
    nodes = ui.graphql(ASSET_STATUS, {"keys": keys})["assetNodes"]
    return {node["assetKey"]["path"][1]: node for node in nodes}


def materializations(
    ui: DagsterUI, path: list[str], partitions: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every materialization of the folders, newest first, per folder, metadata unwrapped."""
    found = ui.graphql(MATERIALIZATIONS, {"key": {"path": path}, "partitions": partitions})
    by_folder: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in found["assetOrError"]["assetMaterializations"]:
        numbers = {e["label"]: e.get("intValue") for e in m["metadataEntries"]}
        by_folder[m["partition"]].append({"runId": m["runId"], **numbers})
    return by_folder


def latest_check_executions(
    ui: DagsterUI, tables: list[str], partitions: list[str], limit: int = 1
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``assetCheckExecutions`` of ``partition_rows_loaded`` per (table, folder), newest first."""
    where = {
        f"c{i}_{j}": (table, partition)
        for i, table in enumerate(tables)
        for j, partition in enumerate(partitions)
    }
    targets = {
        alias: (["warehouse", table], ROWS_CHECK, partition)
        for alias, (table, partition) in where.items()
    }
    data = ui.graphql(check_executions_query(targets, limit))
    return {where[alias]: executions for alias, executions in data.items()}


def numbers(execution: dict[str, Any]) -> dict[str, Any]:
    """A check result's metadata: the plotted numbers (Int entries), and ``rows`` (JSON)."""
    found: dict[str, Any] = {}
    for entry in execution["evaluation"]["metadataEntries"]:
        if entry["__typename"] == "JsonMetadataEntry":
            found[entry["label"]] = json.loads(entry["jsonString"])
        else:
            assert entry["__typename"] == "IntMetadataEntry", entry
            found[entry["label"]] = entry["intValue"]
    return found


def step_failures(ui: DagsterUI, run_id: str) -> list[dict[str, Any]]:
    events = ui.graphql(RUN_EVENTS, {"runId": run_id})["runOrError"]["eventConnection"]["events"]
    return [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


def run_messages(ui: DagsterUI, run_id: str) -> list[str]:
    events = ui.graphql(RUN_EVENTS, {"runId": run_id})["runOrError"]["eventConnection"]["events"]
    return [e.get("message") or "" for e in events]


def test_register_partitions_over_graphql(dagster_ui: DagsterUI):
    def keys(asset: list[str]) -> list[str]:
        node = dagster_ui.graphql(ASSET_PARTITIONS, {"key": {"path": asset}})["assetNodeOrError"]
        return node["partitionKeys"]

    # Registered by an earlier test module of the session (the same mutation), or new here.
    known = keys(["raw", "song_files"])
    missing = [key for key in PARTITIONS if key not in known]
    assert dagster_ui.add_partitions(missing) == {k: "AddDynamicPartitionSuccess" for k in missing}
    # A second registration is refused, not duplicated.
    assert dagster_ui.add_partitions(["A/A"]) == {"A/A": "DuplicateDynamicPartitionError"}
    # In registration order: the order in which a backfill cuts its ranges.
    for asset in (["raw", "song_files"], ["normalized", "songs"], ["warehouse", "msd_track"]):
        assert keys(asset) == list(PARTITIONS), asset


def test_launch_backfill_of_nine_folders(dagster_ui: DagsterUI, story: dict[str, Any]):
    """Launched first: the daemon submits its runs while the next test runs one folder."""
    params = {
        "selector": {
            "partitionSetName": f"{PARTITION_JOB}_partition_set",
            "repositorySelector": dagster_ui.repository_selector,
        },
        "partitionNames": BACKFILLED,
        "title": "e2e backfill",
    }
    launched = dagster_ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    story["backfill_id"] = backfill_id
    backfill = dagster_ui.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill"
    assert backfill["numPartitions"] == len(BACKFILLED)
    assert sorted(backfill["partitionNames"]) == sorted(BACKFILLED)
    assert backfill["partitionSetName"] == f"{PARTITION_JOB}_partition_set"
    assert backfill["title"] == "e2e backfill"
    assert backfill["status"] in ("REQUESTED", "COMPLETED", "COMPLETED_SUCCESS")


def test_one_partition_run_succeeds(dagster_ui: DagsterUI, story: dict[str, Any]):
    run_id = dagster_ui.client.submit_job_execution(
        PARTITION_JOB, tags={"dagster/partition": SINGLE}
    )
    run = dagster_ui.wait_for_run(run_id, timeout=120)
    assert run["status"] == "SUCCESS", run
    assert dagster_ui.client.get_run_status(run_id).value == "SUCCESS"
    tags = tags_of(run)
    assert tags["dagster/partition"] == SINGLE
    assert tags["msd/job"] == "partition"  # the job's tag, which the queue's limit is keyed on
    assert {s["stepKey"]: s["status"] for s in run["stepStats"]} == {STEP: "SUCCESS"}
    assert dagster_ui.partition_rows(SINGLE) == dagster_ui.expected_rows(SINGLE)
    story["single_run"] = run_id


def test_backfill_runs_ranges_of_folders(dagster_ui: DagsterUI, story: dict[str, Any]):
    backfill_id = need(story, "backfill_id")
    deadline = time.monotonic() + 150  # the daemon submits backfill runs every 30 s
    while True:
        backfill = dagster_ui.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        runs = backfill["runs"]
        if len(runs) == 2 and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill not done in time: {backfill}"
        time.sleep(1)
    # BackfillPolicy.multi_run(FOLDERS_PER_RUN): nine folders in order, cut after the 8th.
    ranges = sorted((tags_of(r)[RANGE_START], tags_of(r)[RANGE_END]) for r in runs)
    assert FOLDERS_PER_RUN == 8
    assert ranges == [(BACKFILLED[0], BACKFILLED[7]), (BACKFILLED[8], BACKFILLED[8])]
    run_of = {SINGLE: need(story, "single_run")}
    for run in runs:
        assert run["status"] == "SUCCESS", run
        tags = tags_of(run)
        assert tags["dagster/backfill"] == backfill_id
        assert "dagster/partition" not in tags  # a range, even of one folder
        start, end = BACKFILLED.index(tags[RANGE_START]), BACKFILLED.index(tags[RANGE_END])
        run_of.update({folder: run["runId"] for folder in BACKFILLED[start : end + 1]})
        assert {s["stepKey"]: s["status"] for s in dagster_ui.run(run["runId"])["stepStats"]} == {
            STEP: "SUCCESS"
        }
    # The backfill page's per-partition table knows which run loaded each folder.
    results = {r["partitionName"]: r for r in backfill["partitionStatuses"]["results"]}
    assert sorted(results) == sorted(BACKFILLED)
    for folder, result in results.items():
        assert (result["runId"], result["runStatus"]) == (run_of[folder], "SUCCESS"), folder
    for folder in PARTITIONS:
        assert dagster_ui.partition_rows(folder) == dagster_ui.expected_rows(folder), folder
    for table, node in asset_statuses(dagster_ui).items():
        partitions = node["assetPartitionStatuses"]
        assert sorted(partitions["materializedPartitions"]) == sorted(PARTITIONS), table
        assert partitions["failedPartitions"] == [], table
    assert duplicate_keys(dagster_ui) == {t: 0 for t in TABLE_ORDER}
    counts = table_counts(dagster_ui)
    assert counts["msd_track"] == len(dagster_ui.dataset.track_ids)
    assert all(counts[t] > 0 for t in TABLE_ORDER), counts
    story["first_load"] = counts
    story["run_of"] = run_of


def test_each_folder_of_a_ranged_run_has_its_own_materializations(
    dagster_ui: DagsterUI, story: dict[str, Any]
):
    run_of = need(story, "run_of")
    # This story's runs only: the browser tests (same server, earlier) loaded these folders too.
    story_runs = set(run_of.values())

    def of_story(found: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        return {f: [m for m in ms if m["runId"] in story_runs] for f, ms in found.items()}

    songs = of_story(materializations(dagster_ui, ["raw", "song_files"], list(PARTITIONS)))
    for folder in PARTITIONS:
        [listed] = songs[folder]
        assert listed["runId"] == run_of[folder]
        assert (
            listed["dagster/partition_row_count"] == dagster_ui.expected_rows(folder)["msd_track"]
        )
    checks = latest_check_executions(dagster_ui, list(TABLE_ORDER), list(PARTITIONS))
    for table in TABLE_ORDER:
        found = of_story(materializations(dagster_ui, ["warehouse", table], list(PARTITIONS)))
        assert sorted(found) == sorted(PARTITIONS), table
        for folder in PARTITIONS:
            [materialization] = found[folder]  # one per folder, though 8 share a run
            assert materialization["runId"] == run_of[folder], (table, folder)
            rows = materialization["dagster/partition_row_count"]
            expected = dagster_ui.expected_rows(folder)
            if table in expected:  # track tables: exactly what the song files hold
                assert rows == expected[table] == materialization["rows_written"], (table, folder)
            else:  # shared tables: the rows the folder needs, as its check counted them
                [check] = checks[(table, folder)]
                assert rows == numbers(check)["rows"]["frame"], (table, folder)
    # Every folder has songs, hence an artist, and its artist's rows.
    assert all(
        materializations(dagster_ui, ["warehouse", "msd_artist"], [f])[f][0][
            "dagster/partition_row_count"
        ]
        > 0
        for f in PARTITIONS
    )


def test_check_results_per_folder(dagster_ui: DagsterUI, story: dict[str, Any]):
    run_of = need(story, "run_of")
    seen = set()
    for table, node in asset_statuses(dagster_ui).items():
        assert node["assetChecksOrError"]["__typename"] == "AssetChecks"
        for check in node["assetChecksOrError"]["checks"]:
            seen.add((table, check["name"]))
            assert check["description"], (table, check["name"])
            if check["name"] == TOTAL_TRACKS:
                assert check["partitionStatuses"] is None  # whole-dataset check
                assert not check["blocking"]
                continue
            assert check["blocking"], (table, check["name"])
            partitions = check["partitionStatuses"]
            assert sorted(partitions["succeededPartitions"]) == sorted(PARTITIONS), table
            for state in ("failed", "inProgress", "skipped", "executionFailed"):
                assert partitions[f"{state}Partitions"] == [], (table, state)
    # The whole-dataset check is on warehouse/all_folders, not on a table.
    assert seen == {(t, ROWS_CHECK) for t in TABLE_ORDER}

    # The latest evaluation of each table's check, folder by folder, with its numbers.
    executions = latest_check_executions(dagster_ui, list(TABLE_ORDER), list(PARTITIONS))
    for (table, folder), found in executions.items():
        [execution] = found
        assert execution["status"] == "SUCCEEDED", (table, folder, execution)
        assert execution["partition"] == folder
        assert execution["runId"] == run_of[folder]
        evaluation = execution["evaluation"]
        assert evaluation["success"] is True and evaluation["partition"] == folder
        metadata = numbers(execution)
        assert metadata["missing_keys"] == 0, (table, folder, metadata)
        assert metadata["duplicate_keys"] == metadata["unresolved_references"] == 0
        expected = dagster_ui.expected_rows(folder)
        if table in TRACK_TABLE_NAMES:  # exactly the rows of the song files
            n = expected[table]
            assert metadata["rows"] == {"database": n, "frame": n, "files": n}, (table, folder)
            # The numbers a person reads in the execution history's Description column.
            assert evaluation["description"] == (
                f"database {n:,} = frame {n:,} = files {n:,}; missing 0, duplicates 0, "
                "unresolved references 0"
            )
        else:  # shared tables: every row of the frame is there (other folders add rows)
            n = metadata["rows"]["frame"]
            assert n > 0 or table != "msd_artist", (table, folder, metadata)
            assert evaluation["description"].startswith(
                f"{n:,} of the frame's {n:,} rows in the database; missing 0,"
            )


def test_a_failed_folder_inside_a_ranged_run(dagster_ui: DagsterUI, story: dict[str, Any]):
    first_load = need(story, "first_load")
    run_of = need(story, "run_of")
    # The cause: the database loses the first bar of every track of the middle folder.
    dagster_ui.lose_first_bars(FAILING)
    try:
        failed_id = dagster_ui.client.submit_job_execution(
            PARTITION_JOB,
            tags={RANGE_START: FAILING_RANGE[0], RANGE_END: FAILING_RANGE[-1]},
            run_config=NO_RETRIES,
        )
        failed = dagster_ui.wait_for_run(failed_id, timeout=150)
    finally:
        dagster_ui.repair_database()  # whatever happened, later tests get a working database
    story["failed_range_run"] = failed_id
    assert failed["status"] == "FAILURE", failed
    assert {s["stepKey"]: s["status"] for s in failed["stepStats"]} == {STEP: "FAILURE"}
    # Why, as the run page shows it: the folder, the table and the numbers.
    [failure] = step_failures(dagster_ui, failed_id)
    description = failure["failureMetadata"]["description"]
    assert description.startswith(
        f"1 of {len(FAILING_RANGE)} folder(s) failed: {FAILING} (check): "
    ), description
    assert "msd_bar" in description
    # A dagster.Failure raised by the step: the run page's first line is its description, with
    # the failed folders as metadata; no chained exception (a driver's own text, its traceback)
    # behind it. Dagster 1.13 still prints the stack of the step's frames under it.
    assert failure["error"]["className"] == "Failure"
    assert failure["error"]["message"].strip().endswith(description)
    assert failure["error"]["causes"] == []
    # Each failed folder is also one line of the run's log, without a stack.
    assert any(
        m.startswith(f"{FAILING} failed (check): ") and "\n" not in m
        for m in run_messages(dagster_ui, failed_id)
    )
    # Rolled back: the database holds exactly the first load (the neighbours reloaded).
    assert table_counts(dagster_ui) == first_load
    for folder in FAILING_RANGE:
        assert dagster_ui.partition_rows(folder) == dagster_ui.expected_rows(folder)

    # The Partitions tab: the failed folder red, its neighbours in the same run green.
    for table, node in asset_statuses(dagster_ui).items():
        partitions = node["assetPartitionStatuses"]
        assert partitions["failedPartitions"] == [FAILING], table
        assert sorted(partitions["materializedPartitions"]) == sorted(set(PARTITIONS) - {FAILING})
        checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
        statuses = checks[ROWS_CHECK]["partitionStatuses"]
        if table == "msd_bar":
            assert statuses["failedPartitions"] == [FAILING]
        else:  # evaluated in the same (rolled back) transaction, and passed
            assert statuses["failedPartitions"] == [], table
    for table in TABLE_ORDER:
        found = materializations(dagster_ui, ["warehouse", table], list(FAILING_RANGE))
        newest = {folder: found[folder][0]["runId"] for folder in FAILING_RANGE}
        assert newest == {
            FAILING_RANGE[0]: failed_id,
            FAILING: run_of[FAILING],  # still the backfill's: nothing new was committed
            FAILING_RANGE[-1]: failed_id,
        }, table

    # The check's execution history: failed for that folder, with the exact numbers.
    executions = latest_check_executions(dagster_ui, list(TABLE_ORDER), list(FAILING_RANGE))
    lost = dagster_ui.tracks_with_bars(FAILING)
    bars = dagster_ui.expected_rows(FAILING)["msd_bar"]
    for (table, folder), [execution] in executions.items():
        assert execution["runId"] == failed_id, (table, folder)
        assert execution["partition"] == folder
        if (table, folder) != ("msd_bar", FAILING):
            assert execution["status"] == "SUCCEEDED", (table, folder, execution)
            continue
        assert execution["status"] == "FAILED", execution
        assert execution["evaluation"]["success"] is False
        assert numbers(execution) == {
            "rows": {"database": bars - lost, "frame": bars, "files": bars},
            "missing_keys": lost,
            "duplicate_keys": 0,
            "unresolved_references": 0,
        }
        assert execution["evaluation"]["description"].startswith(
            f"database {bars - lost:,} vs frame {bars:,} vs files {bars:,}; missing {lost:,},"
        )
    assert lost > 0


def test_from_failure_reloads_only_the_failed_folder(dagster_ui: DagsterUI, story: dict[str, Any]):
    first_load = need(story, "first_load")
    failed_id = need(story, "failed_range_run")
    launched = dagster_ui.graphql(
        REEXECUTE, {"params": {"parentRunId": failed_id, "strategy": "FROM_FAILURE"}}
    )["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    rerun = dagster_ui.wait_for_run(launched["run"]["runId"], timeout=150)
    assert rerun["status"] == "SUCCESS", rerun
    assert rerun["parentRunId"] == failed_id and rerun["rootRunId"] == failed_id
    assert rerun["stepKeysToExecute"] == [STEP]
    tags = tags_of(rerun)
    assert (tags[RANGE_START], tags[RANGE_END]) == (FAILING_RANGE[0], FAILING_RANGE[-1])
    assert tags["dagster/is_resume_retry"] == "true"
    # Only the failed folder was loaded again: its neighbours were done by the failed run.
    skipped = ", ".join(sorted(set(FAILING_RANGE) - {FAILING}))
    assert f"loaded already, skipped: {skipped}" in run_messages(dagster_ui, rerun["runId"])
    for table in TABLE_ORDER:
        found = materializations(dagster_ui, ["warehouse", table], list(FAILING_RANGE))
        by_rerun = [f for f, ms in found.items() for m in ms if m["runId"] == rerun["runId"]]
        assert by_rerun == [FAILING], table

    # Same contents as after the first load, nothing duplicated, and the checks say so.
    assert table_counts(dagster_ui) == first_load
    assert duplicate_keys(dagster_ui) == {t: 0 for t in TABLE_ORDER}
    assert dagster_ui.partition_rows(FAILING) == dagster_ui.expected_rows(FAILING)
    for table, node in asset_statuses(dagster_ui).items():
        assert node["assetPartitionStatuses"]["failedPartitions"] == [], table
        for check in node["assetChecksOrError"]["checks"]:
            if check["partitionStatuses"] is not None:
                statuses = check["partitionStatuses"]
                assert sorted(statuses["succeededPartitions"]) == sorted(PARTITIONS), table
    history = latest_check_executions(dagster_ui, ["msd_bar"], [FAILING], limit=3)
    runs = history[("msd_bar", FAILING)]
    assert [(h["runId"], h["status"]) for h in runs[:2]] == [
        (rerun["runId"], "SUCCEEDED"),
        (failed_id, "FAILED"),
    ]


def test_backfill_completes(dagster_ui: DagsterUI, story: dict[str, Any]):
    backfill_id = need(story, "backfill_id")
    backfill = dagster_ui.wait_for_backfill(backfill_id, timeout=75)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    results = {r["partitionName"]: r for r in backfill["partitionStatuses"]["results"]}
    assert sorted(results) == sorted(BACKFILLED)
    assert all(r["runStatus"] == "SUCCESS" for r in results.values()), results
