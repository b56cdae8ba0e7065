"""The asset checks on the warehouse tables.

* ``partition_rows_loaded``, one per table and folder: a check of the load itself, evaluated in
  each folder's load transaction (:mod:`msd_dagster.defs.assets.folders` yields the results
  built here), so a folder that fails it is rolled back; no separate step.
* ``total_tracks_match_partitions``, unpartitioned: ``msd_track`` holds one row per valid song
  file over every folder loaded into this database. It checks ``warehouse/all_folders``, the
  warehouse over all its folders, which nothing materializes: a check of a table that
  ``load_folders`` materializes would be part of every run that loads folders from the UI
  (Dagster adds the checks of the assets it materializes), as a step that can never run
  within a run of a few folders.
"""

import warnings
from collections.abc import Iterator, Sequence

import dagster as dg
import sqlalchemy as sa

from msd_dagster import event_metadata as em
from msd_dagster.dagster_compat import AssetCheckEvaluationTargetMaterializationData
from msd_dagster.defs.assets import OWNERS
from msd_dagster.defs.check_names import ROWS_CHECK, TOTAL_TRACKS
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import WarehouseResource
from msd_dagster.defs.tables import TABLE_ORDER, warehouse_key
from msd_dagster.warehouse.queries import total_tracks
from msd_dagster.warehouse.schema import TRACK_TABLE_NAMES
from msd_dagster.warehouse.verify import TableVerdict

# Partitioned check specs are a preview feature in Dagster 1.13; we rely on them deliberately
# (msd_dagster_tests/test_definitions.py pins it).
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")

ROWS_CHECK_SPECS = [
    dg.AssetCheckSpec(
        ROWS_CHECK,
        asset=warehouse_key(table),
        blocking=True,
        partitions_def=msd_folders,
        description=(
            "The folder's rows in the database == its normalized frame == the rows its song "
            "files imply; every natural key once; every reference resolves. Evaluated in each "
            "folder's load transaction: a folder that fails it is rolled back."
            if table in TRACK_TABLE_NAMES
            else "Every row of the folder's normalized frame is in the database (by natural "
            "key), once, with its references resolved. The table is shared by folders, so the "
            "database may hold more. Evaluated in each folder's load transaction."
        ),
    )
    for table in TABLE_ORDER
]

Target = AssetCheckEvaluationTargetMaterializationData


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> Target | None:
    """The partition's latest materialization: what its check result targets.

    Dagster counts a partition's check result as current (the check's Partitions status, the
    asset's check badges) only when it targets that partition's latest materialization, and
    a result yielded as an ``AssetCheckEvaluation`` must name it itself (as Dagster does for
    an ``AssetCheckResult``). After a load, the one just recorded (an op's events are stored
    as it yields them); after a rolled-back load, the one whose rows are still there.
    """
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return Target(run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp)


def rows_check_evaluation(
    partition: str, verdict: TableVerdict, target: Target | None = None
) -> dg.AssetCheckEvaluation:
    """The ``partition_rows_loaded`` result of one table and folder."""
    return dg.AssetCheckEvaluation(
        asset_key=warehouse_key(verdict.table),
        check_name=ROWS_CHECK,
        passed=verdict.passed,
        partition=partition,
        target_materialization_data=target,
        severity=dg.AssetCheckSeverity.ERROR,
        blocking=True,
        description=verdict.summary(),
        metadata={
            # The UI plots numeric entries over time, whatever the folder: these three are 0
            # whenever the check passes, so a point above 0 is a folder that failed it.
            "missing_keys": verdict.missing_keys,
            "duplicate_keys": verdict.duplicates,
            "unresolved_references": verdict.orphans,
            # Row counts differ from folder to folder (a plot of them would zigzag): one JSON
            # entry, and in the description.
            "rows": dg.MetadataValue.json(row_counts(verdict)),
        },
    )


def row_counts(verdict: TableVerdict) -> dict[str, int]:
    """The folder's rows: in the database, in its frame and (track tables) in its files."""
    counts = {"database": verdict.database_rows, "frame": verdict.frame_rows}
    if verdict.source_rows is not None:
        counts["files"] = verdict.source_rows
    return counts


def results_of_earlier_load(
    instance: dg.DagsterInstance, partition: str, evaluations: Sequence[dg.AssetCheckEvaluation]
) -> Iterator[dg.AssetCheckEvaluation]:
    """A folder skipped as loaded already: the results its load recorded, again, for this run.

    A run records a planned execution of every check for each folder of its range; a check
    without a result in the run would read "Skipped" and hide the folder's passed result."""
    for evaluation in evaluations:
        yield dg.AssetCheckEvaluation(
            asset_key=evaluation.asset_key,
            check_name=evaluation.check_name,
            passed=evaluation.passed,
            partition=partition,
            target_materialization_data=latest_materialization(
                instance, evaluation.asset_key, partition
            ),
            severity=evaluation.severity,
            blocking=evaluation.blocking,
            description=f"{evaluation.description} (when it was loaded; not loaded again)",
            metadata=evaluation.metadata,
        )


ALL_FOLDERS_KEY = dg.AssetKey(["warehouse", "all_folders"])

ALL_FOLDERS = dg.AssetSpec(
    ALL_FOLDERS_KEY,
    group_name="warehouse",
    deps=[warehouse_key(table) for table in TABLE_ORDER],
    description=(
        "The twelve msd_* tables over every folder loaded into this database. Nothing "
        "materializes it (each folder's load materializes the tables): it carries the "
        f"whole-dataset check {TOTAL_TRACKS}."
    ),
    kinds={"sql"},
    owners=OWNERS,
    tags={"msd/layer": "warehouse"},
)


@dg.asset_check(
    asset=ALL_FOLDERS_KEY,
    name=TOTAL_TRACKS,
    description=(
        "Total tracks in msd_track == valid song files loaded over every folder (the row "
        "count of each folder's latest warehouse/msd_track materialization into this database, "
        "which the partition checks tie to the song files)."
    ),
)
def total_tracks_match_partitions(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    instance = context.instance
    database = warehouse.display_url()
    expected, counted = 0, 0
    for key in instance.get_dynamic_partitions(msd_folders.name):
        # The warehouse materialization is recorded after its transaction commits, so this
        # sum and the database agree even while another folder is being loaded.
        rows = _latest_row_count(instance, warehouse_key("msd_track"), key, database)
        if rows is not None:
            expected += rows
            counted += 1
    try:
        actual = total_tracks(warehouse.engine())
    except sa.exc.DBAPIError as exc:  # e.g. no msd_track table: nothing was ever loaded there
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"cannot count msd_track in {database}: {warehouse.describe_error(exc)}",
            metadata={"valid_song_files": expected, "partitions_counted": counted},
        )
    return dg.AssetCheckResult(
        passed=actual == expected,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"database {actual:,} tracks, {expected:,} expected from {counted} folder(s)",
        metadata={
            "tracks_in_database": actual,
            "valid_song_files": expected,
            "partitions_counted": counted,
        },
    )


def _latest_row_count(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str, database: str
) -> int | None:
    """Rows of the latest materialization of ``partition`` into ``database`` (masked URL)."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=20
    )
    for record in result.records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if em.DATABASE in metadata and metadata[em.DATABASE].value != database:
            continue
        value = metadata.get("dagster/partition_row_count")
        return int(value.value) if value is not None else None
    return None
