"""The GraphQL queries and mutations the end-to-end tests send to ``dagster dev``.

One home for each, shared by ``ui_fixtures``, ``test_ui_graphql``, ``test_ui_browser`` and
``test_dagster_compat``: where two tests read different fields of the same object, the query
asks for both.
"""

from __future__ import annotations

import json

# --------------------------------------------------------------------------------------------
# The server


WORKSPACE = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  instance {
    daemonHealth { allDaemonStatuses { daemonType required healthy } }
  }
}
"""
SENSOR_STATE = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { status } } }
}
"""
JOB_SNAPSHOT = """
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { ... on Pipeline { pipelineSnapshotId } }
}
"""

# --------------------------------------------------------------------------------------------
# Runs


RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId jobName pipelineSnapshotId status endTime tags { key value }
      parentRunId rootRunId stepKeysToExecute stepStats { stepKey status }
    }
  }
}
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status tags { key value } } } }
}
"""
RUN_ORIGIN = """
query Origin($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      pipelineSnapshotId
      repositoryOrigin { repositoryLocationName repositoryName }
    }
  }
}
"""
RUN_EVENTS = """
query Events($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 5000) {
        events {
          __typename
          ... on MessageEvent { message }
          ... on ExecutionStepFailureEvent {
            stepKey
            message
            failureMetadata { description }
            error { message className causes { message className } }
          }
        }
      }
    }
  }
}
"""

# --------------------------------------------------------------------------------------------
# Backfills


BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id
      status
      title
      numPartitions
      partitionNames
      partitionSetName
      runs { runId status tags { key value } }
      partitionStatuses { results { partitionName runId runStatus } }
    }
  }
}
"""
NEWEST_BACKFILL = """
query { partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id } } } }
"""

# --------------------------------------------------------------------------------------------
# Assets and their checks


ASSET_PARTITIONS = """
query Partitions($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionKeys
      assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } }
    }
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
# Newest first; without $partitions every partition's, without $limit all of them.
MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!, $partitions: [String!], $limit: Int) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: $limit) {
        partition
        runId
        timestamp
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""
# The fields of one asset check execution.
CHECK_EXECUTION_FIELDS = """
  runId
  status
  timestamp
  partition
  evaluation {
    success
    partition
    description
    metadataEntries {
      __typename
      label
      ... on IntMetadataEntry { intValue }
      ... on JsonMetadataEntry { jsonString }
    }
  }
"""


def check_executions_query(targets: dict[str, tuple[list[str], str, str]], limit: int) -> str:
    """One query for the executions of several checks: per alias, the (asset path, check name,
    partition) it reads, newest first, at most ``limit`` each."""
    fields = [
        f"{alias}: assetCheckExecutions(assetKey: {{path: {json.dumps(path)}}}, "
        f"checkName: {json.dumps(check)}, partition: {json.dumps(partition)}, limit: {limit}) "
        f"{{ {CHECK_EXECUTION_FIELDS} }}"
        for alias, (path, check, partition) in targets.items()
    ]
    return "{ " + "\n".join(fields) + " }"


CHECK_EXECUTIONS = f"""
query Executions($key: AssetKeyInput!, $check: String!, $limit: Int!) {{
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: $limit) {{
    {CHECK_EXECUTION_FIELDS}
  }}
}}
"""

# --------------------------------------------------------------------------------------------
# Mutations


def mutation(name: str, variables: str, call: str, *outcomes: str) -> str:
    """A mutation whose answer is a union: its ``__typename`` and the fields of each outcome."""
    answer = "".join(f"    ... on {outcome}\n" for outcome in outcomes)
    return f"mutation {name}({variables}) {{\n  {call} {{\n    __typename\n{answer}  }}\n}}\n"


SET_NUX_SEEN = "mutation { setNuxSeen }"  # no "join the community" dialog in the UI
ADD_PARTITION = mutation(
    "AddPartition",
    "$key: String!, $def: String!, $repo: RepositorySelector!",
    "addDynamicPartition(partitionKey: $key, partitionsDefName: $def, repositorySelector: $repo)",
    "AddDynamicPartitionSuccess { partitionKey }",
    "DuplicateDynamicPartitionError { partitionName }",
    "PythonError { message }",
    "UnauthorizedError { message }",
)
# What the UI sends to re-execute a run ("From failure": strategy FROM_FAILURE) ...
REEXECUTE = mutation(
    "Launch",
    "$params: ReexecutionParams!",
    "launchRunReexecution(reexecutionParams: $params)",
    "LaunchRunSuccess { run { runId } }",
    "PythonError { message }",
    "InvalidStepError { invalidStepKey }",
    "RunConflict { message }",
)
# ... and to launch a run (the asset graph's Materialize of one folder, the launchpad).
LAUNCH_RUN = mutation(
    "Launch",
    "$params: ExecutionParams!",
    "launchPipelineExecution(executionParams: $params)",
    "LaunchRunSuccess { run { runId } }",
    "PythonError { message }",
    "InvalidSubsetError { message }",
    "RunConfigValidationInvalid { errors { message } }",
)
LAUNCH_BACKFILL = mutation(
    "Backfill",
    "$params: LaunchBackfillParams!",
    "launchPartitionBackfill(backfillParams: $params)",
    "LaunchBackfillSuccess { backfillId }",
    "PythonError { message }",
    "PartitionKeysNotFoundError { message }",
    "PartitionSetNotFoundError { message }",
    "UnauthorizedError { message }",
)
