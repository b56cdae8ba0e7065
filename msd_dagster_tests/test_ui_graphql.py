"""End to end through a real ``dagster dev``: what an operator does from the UI, over GraphQL.

One story, in order, on one server (``dagster_ui``): register the partitions, launch a
backfill, run one partition, see the backfill's runs succeed, read the check reports of every
partition, make one partition fail on purpose, read why, fix it, re-execute that run from the
failure, and find the database exactly as after the first load. The server's daemon does the
queueing and the backfill submission, as in production.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from msd_dagster.defs.checks import (
    FOREIGN_KEYS,
    ROW_COUNT,
    TOTAL_TRACKS,
    UNIQUE_KEYS,
    WAREHOUSE_CHECK_SPECS,
)
from msd_dagster_tests.ui_fixtures import (
    BACKFILL,
    E2E_MARKS,
    NO_RETRIES,
    PARTITION_JOB,
    PARTITIONS,
    DagsterUI,
)

pytestmark = E2E_MARKS

WAREHOUSE_TABLES = (
    "msd_track", "msd_artist", "msd_artist_term", "msd_artist_mbtag", "msd_r_term",
    "msd_r_mbtag", "msd_artist_similarity", "msd_bar", "msd_beat", "msd_section", "msd_tatum",
    "msd_segment",
)  # fmt: skip
# What must never appear twice in a table (the key a rerun must not duplicate).
NATURAL_KEYS = {
    "msd_track": ("track_id",),
    "msd_artist": ("artist_id",),
    "msd_artist_term": ("artist_id", "term_name"),
    "msd_artist_mbtag": ("artist_id", "mbtag_name"),
    "msd_r_term": ("term_name",),
    "msd_r_mbtag": ("mbtag_name",),
    "msd_artist_similarity": ("artist_id_1", "artist_id_2"),
    "msd_bar": ("track_id", "track_bar_id"),
    "msd_beat": ("track_id", "track_beat_id"),
    "msd_section": ("track_id", "track_section_id"),
    "msd_tatum": ("track_id", "track_tatum_id"),
    "msd_segment": ("track_id", "track_segment_id"),
}
BACKFILLED = ["A/B", "B/A"]
SINGLE = "A/A"
FAILING = "B/A"
INJECTED = f"e2e: injected failure for partition {FAILING}"

PARTITION_KEYS = """
query Keys($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { partitionKeys } }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

ASSET_STATUS = """
query Status($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetPartitionStatuses {
      ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
    }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          blocking
          description
          partitionStatuses {
            __typename
            ... on AssetCheckDefaultPartitionStatuses {
              succeededPartitions
              failedPartitions
              inProgressPartitions
              skippedPartitions
              executionFailedPartitions
            }
          }
        }
      }
    }
  }
}
"""

CHECK_EXECUTION_FIELDS = """
  runId
  status
  partition
  evaluation {
    success
    partition
    metadataEntries { label ... on IntMetadataEntry { intValue } }
  }
"""

RUN_EVENTS = """
query Events($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 2000) {
        events {
          __typename
          ... on ExecutionStepFailureEvent {
            stepKey
            message
            error { message className causes { message className } }
          }
        }
      }
    }
  }
}
"""

REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on RunConflict { message }
  }
}
"""


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


def table_counts(ui: DagsterUI) -> dict[str, int]:
    with ui.db() as db:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in WAREHOUSE_TABLES}


def duplicate_keys(ui: DagsterUI) -> dict[str, int]:
    """Rows minus distinct natural keys, per table (0 everywhere when nothing is duplicated)."""
    out = {}
    with ui.db() as db:
        for table, key in NATURAL_KEYS.items():
            cols = ", ".join(key)
            total = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            distinct = db.execute(f"SELECT COUNT(*) FROM (SELECT DISTINCT {cols} FROM {table})")
            out[table] = total - distinct.fetchone()[0]
    return out


def asset_statuses(ui: DagsterUI) -> dict[str, dict[str, Any]]:
    keys = [warehouse_key(t) for t in WAREHOUSE_TABLES]
    nodes = ui.graphql(ASSET_STATUS, {"keys": keys})["assetNodes"]
    return {node["assetKey"]["path"][1]: node for node in nodes}


def expected_checks() -> set[tuple[str, str]]:
    """(table, check) for every warehouse check: the per-partition ones and the total."""
    checks = {(spec.asset_key.path[1], spec.name) for spec in WAREHOUSE_CHECK_SPECS}
    return checks | {("msd_track", TOTAL_TRACKS)}


def step_failures(ui: DagsterUI, run_id: str) -> list[dict[str, Any]]:
    events = ui.graphql(RUN_EVENTS, {"runId": run_id})["runOrError"]["eventConnection"]["events"]
    return [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


def test_register_partitions_over_graphql(dagster_ui: DagsterUI):
    def keys(asset: list[str]) -> list[str]:
        node = dagster_ui.graphql(PARTITION_KEYS, {"key": {"path": asset}})["assetNodeOrError"]
        return sorted(node["partitionKeys"])

    # Registered by an earlier test module of the session (the same mutation), or new here.
    known = keys(["raw", "song_files"])
    missing = [key for key in PARTITIONS if key not in known]
    assert dagster_ui.add_partitions(missing) == {k: "AddDynamicPartitionSuccess" for k in missing}
    # A second registration is refused, not duplicated.
    assert dagster_ui.add_partitions(["A/A"]) == {"A/A": "DuplicateDynamicPartitionError"}
    for asset in (["raw", "song_files"], ["normalized", "songs"], ["warehouse", "msd_track"]):
        assert keys(asset) == list(PARTITIONS), asset


def test_launch_backfill_of_two_partitions(dagster_ui: DagsterUI, story: dict[str, Any]):
    """Launched first: the daemon submits its runs while the next test runs one partition."""
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
    assert backfill["numPartitions"] == 2
    assert sorted(backfill["partitionNames"]) == BACKFILLED
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
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == SINGLE
    assert tags["msd/job"] == "partition"  # the job's tag, which the queue's limit is keyed on
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert steps == {
        "raw__song_files": "SUCCESS",
        "normalized_tables": "SUCCESS",
        "warehouse_tables": "SUCCESS",
        "warehouse_checks": "SUCCESS",
    }
    assert dagster_ui.partition_rows(SINGLE) == dagster_ui.expected_rows(SINGLE)
    story["single_run"] = run_id


def test_backfill_runs_succeed(dagster_ui: DagsterUI, story: dict[str, Any]):
    backfill_id = need(story, "backfill_id")
    deadline = time.monotonic() + 120  # the daemon submits backfill runs every 30 s
    while True:
        backfill = dagster_ui.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        runs = backfill["runs"]
        if len(runs) == 2 and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill not done in time: {backfill}"
        time.sleep(1)
    by_partition = {{t["key"]: t["value"] for t in r["tags"]}["dagster/partition"]: r for r in runs}
    assert sorted(by_partition) == BACKFILLED
    for partition, run in by_partition.items():
        assert run["status"] == "SUCCESS", (partition, run)
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags["dagster/backfill"] == backfill_id
        assert dagster_ui.partition_rows(partition) == dagster_ui.expected_rows(partition)
    statuses = asset_statuses(dagster_ui)
    for table, node in statuses.items():
        partitions = node["assetPartitionStatuses"]
        assert sorted(partitions["materializedPartitions"]) == list(PARTITIONS), table
        assert partitions["failedPartitions"] == [], table
    assert duplicate_keys(dagster_ui) == {t: 0 for t in NATURAL_KEYS}
    counts = table_counts(dagster_ui)
    assert counts["msd_track"] == len(dagster_ui.dataset.track_ids)
    assert all(counts[t] > 0 for t in WAREHOUSE_TABLES), counts
    story["first_load"] = counts
    story["backfill_runs"] = {p: r["runId"] for p, r in by_partition.items()}


def test_check_reports_pass_for_every_partition(dagster_ui: DagsterUI, story: dict[str, Any]):
    need(story, "first_load")
    statuses = asset_statuses(dagster_ui)
    seen = set()
    for table, node in statuses.items():
        assert node["assetChecksOrError"]["__typename"] == "AssetChecks"
        for check in node["assetChecksOrError"]["checks"]:
            seen.add((table, check["name"]))
            assert check["description"], (table, check["name"])
            if check["name"] == TOTAL_TRACKS:
                assert check["partitionStatuses"] is None  # whole-dataset check
                continue
            partitions = check["partitionStatuses"]
            assert sorted(partitions["succeededPartitions"]) == list(PARTITIONS), (table, check)
            for state in ("failed", "inProgress", "skipped", "executionFailed"):
                assert partitions[f"{state}Partitions"] == [], (table, check, state)
            assert check["blocking"] == (check["name"] == ROW_COUNT)
    assert seen == expected_checks()

    # The latest evaluation of each check, partition by partition, with its metadata.
    fields, where = [], {}
    for i, (table, name) in enumerate(sorted(expected_checks() - {("msd_track", TOTAL_TRACKS)})):
        for j, partition in enumerate(PARTITIONS):
            alias = f"c{i}_{j}"
            where[alias] = (table, name, partition)
            fields.append(
                f'{alias}: assetCheckExecutions(assetKey: {{path: ["warehouse", "{table}"]}}, '
                f'checkName: "{name}", partition: "{partition}", limit: 1) '
                f"{{ {CHECK_EXECUTION_FIELDS} }}"
            )
    data = dagster_ui.graphql("{ " + "\n".join(fields) + " }")
    run_of = {SINGLE: story.get("single_run"), **story.get("backfill_runs", {})}
    for alias, (table, name, partition) in where.items():
        [execution] = data[alias]
        assert execution["status"] == "SUCCEEDED", (table, name, partition, execution)
        assert execution["partition"] == partition
        assert execution["runId"] == run_of[partition]
        evaluation = execution["evaluation"]
        assert evaluation["success"] is True and evaluation["partition"] == partition
        metadata = {m["label"]: m.get("intValue") for m in evaluation["metadataEntries"]}
        if name == ROW_COUNT:
            assert metadata["missing_keys"] == 0, (table, partition, metadata)
            expected = dagster_ui.expected_rows(partition)
            if table in expected:  # track tables: exactly the rows of the song files
                assert metadata["database_rows"] == metadata["frame_rows"], (table, partition)
                assert metadata["database_rows"] == expected[table], (table, partition)
            else:  # shared tables: every frame key is present (other partitions add rows)
                assert metadata["database_rows"] > 0, (table, partition, metadata)
        elif name == UNIQUE_KEYS:
            assert metadata == {"duplicate_keys": 0}
        elif name == FOREIGN_KEYS:
            assert metadata == {"unresolved_foreign_keys": 0}


def test_failed_partition_is_rerun_from_failure(dagster_ui: DagsterUI, story: dict[str, Any]):
    first_load = need(story, "first_load")
    # The cause: the database refuses this partition's tracks.
    dagster_ui.refuse_track_inserts(FAILING, INJECTED)
    try:
        rerun_id = fail_fix_and_rerun(dagster_ui, first_load)
    finally:
        dagster_ui.accept_track_inserts()  # whatever happened, later tests get a working database
    story["rerun"] = rerun_id


def fail_fix_and_rerun(dagster_ui: DagsterUI, first_load: dict[str, int]) -> str:
    """Run the partition into the failure, read it, fix it, re-execute; the rerun's id."""
    failed_id = dagster_ui.client.submit_job_execution(
        PARTITION_JOB, tags={"dagster/partition": FAILING}, run_config=NO_RETRIES
    )
    failed = dagster_ui.wait_for_run(failed_id, timeout=120)
    assert failed["status"] == "FAILURE", failed
    steps = {s["stepKey"]: s["status"] for s in failed["stepStats"]}
    assert steps["raw__song_files"] == "SUCCESS"
    assert steps["normalized_tables"] == "SUCCESS"
    assert steps["warehouse_tables"] == "FAILURE"
    assert steps.get("warehouse_checks") in (None, "SKIPPED")
    [failure] = step_failures(dagster_ui, failed_id)
    assert failure["stepKey"] == "warehouse_tables"
    error = failure["error"]
    chain = [error, *error["causes"]]  # the error, possibly wrapped by a retry, and its causes
    text = "\n".join(f"{e.get('className')}: {e['message']}" for e in chain)
    assert INJECTED in text, failure
    assert "IntegrityError" in text, failure
    # The failed load rolled back: the partition's previous rows are all still there.
    assert table_counts(dagster_ui) == first_load
    assert dagster_ui.partition_rows(FAILING) == dagster_ui.expected_rows(FAILING)
    track = asset_statuses(dagster_ui)["msd_track"]["assetPartitionStatuses"]
    assert track["failedPartitions"] == [FAILING]

    # Fix the cause, then re-execute the failed run from its failed step.
    dagster_ui.accept_track_inserts()
    launched = dagster_ui.graphql(
        REEXECUTE, {"params": {"parentRunId": failed_id, "strategy": "FROM_FAILURE"}}
    )["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    rerun = dagster_ui.wait_for_run(launched["run"]["runId"], timeout=120)
    assert rerun["status"] == "SUCCESS", rerun
    assert rerun["parentRunId"] == failed_id and rerun["rootRunId"] == failed_id
    # Only the failed step and what depends on it ran again; the parse was reused.
    assert sorted(rerun["stepKeysToExecute"]) == ["warehouse_checks", "warehouse_tables"]
    assert {s["stepKey"]: s["status"] for s in rerun["stepStats"]} == {
        "warehouse_tables": "SUCCESS",
        "warehouse_checks": "SUCCESS",
    }
    tags = {t["key"]: t["value"] for t in rerun["tags"]}
    assert tags["dagster/partition"] == FAILING

    # Same contents as after the first load, nothing duplicated, and the checks say so.
    assert table_counts(dagster_ui) == first_load
    assert duplicate_keys(dagster_ui) == {t: 0 for t in NATURAL_KEYS}
    assert dagster_ui.partition_rows(FAILING) == dagster_ui.expected_rows(FAILING)
    statuses = asset_statuses(dagster_ui)
    for table, node in statuses.items():
        assert node["assetPartitionStatuses"]["failedPartitions"] == [], table
        for check in node["assetChecksOrError"]["checks"]:
            if check["partitionStatuses"] is not None:
                assert FAILING in check["partitionStatuses"]["succeededPartitions"], (table, check)
    history = dagster_ui.graphql(
        "query($k: AssetKeyInput!) { assetCheckExecutions(assetKey: $k, checkName: "
        f'"{ROW_COUNT}", partition: "{FAILING}", limit: 3) {{ {CHECK_EXECUTION_FIELDS} }} }}',
        {"k": warehouse_key("msd_track")},
    )["assetCheckExecutions"]
    assert [h["runId"] for h in history[:2]] == [rerun["runId"], failed_id]
    assert [h["status"] for h in history[:2]] == ["SUCCEEDED", "EXECUTION_FAILED"]
    return rerun["runId"]


def test_backfill_completes(dagster_ui: DagsterUI, story: dict[str, Any]):
    backfill_id = need(story, "backfill_id")
    backfill = dagster_ui.wait_for_backfill(backfill_id, timeout=75)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    results = {r["partitionName"]: r for r in backfill["partitionStatuses"]["results"]}
    assert sorted(results) == BACKFILLED
    assert all(r["runStatus"] == "SUCCESS" for r in results.values()), results
