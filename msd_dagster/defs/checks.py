"""Asset checks on the warehouse tables.

* ``partition_rows_loaded``, one per table and folder: the folder's rows in the database equal
  its normalized frame (track tables: and the rows its song files imply), every natural key
  once, every reference resolved. Partition runs evaluate it inside each folder's load
  transaction (:mod:`msd_dagster.defs.assets.folders`); the definition below runs the same
  verification on its own, against the stored frames, e.g. for a check-only run.
* ``total_tracks_match_partitions``, unpartitioned: ``msd_track`` holds one row per valid song
  file over every folder loaded into this database.
"""

import warnings
from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa

from msd_dagster.defs.assets.folders import ROWS_CHECK, TABLE_ORDER, rows_check_evaluation
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import FrameStoreResource, WarehouseResource
from msd_dagster.defs.tables import NORMALIZED_FRAMES, normalized_key, warehouse_key
from msd_dagster.frame_store import FramesNotStored
from msd_dagster.warehouse.partition_load import prepare_frames
from msd_dagster.warehouse.queries import total_tracks
from msd_dagster.warehouse.schema import TRACK_TABLE_NAMES
from msd_dagster.warehouse.verify import verify_partition

TOTAL_TRACKS = "total_tracks_match_partitions"

# Partitioned check specs are a preview feature in Dagster 1.13; we rely on them deliberately
# (msd_dagster_tests/test_definitions.py pins it).
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")

ROWS_CHECK_SPECS = [
    dg.AssetCheckSpec(
        ROWS_CHECK,
        asset=warehouse_key(table),
        blocking=True,
        partitions_def=msd_folders,
        additional_deps=[normalized_key(name) for name in NORMALIZED_FRAMES],
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


@dg.multi_asset_check(
    name="warehouse_checks",
    specs=ROWS_CHECK_SPECS,
    can_subset=True,
)
def warehouse_checks(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    frame_store: FrameStoreResource,
) -> Iterator[dg.AssetCheckResult]:
    """Verify a loaded folder again, against its stored normalized frames."""
    partition = context.partition_key
    store = frame_store.store()
    try:
        frames = {}
        for name in NORMALIZED_FRAMES:
            frames.update(store.read(normalized_key(name).path, partition, NORMALIZED_FRAMES[name]))
    except FramesNotStored as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    with warehouse.errors_without_secrets(), warehouse.engine().connect() as conn:
        verdicts = verify_partition(conn, partition, prepare_frames(frames, partition))
    selected = context.selected_asset_check_keys
    for verdict in verdicts:
        evaluation = rows_check_evaluation(partition, verdict)
        if dg.AssetCheckKey(evaluation.asset_key, ROWS_CHECK) in selected:
            yield dg.AssetCheckResult(
                asset_key=evaluation.asset_key,
                check_name=ROWS_CHECK,
                passed=evaluation.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=evaluation.description,
                metadata=evaluation.metadata,
            )


@dg.asset_check(
    asset=warehouse_key("msd_track"),
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
        if "database" in metadata and metadata["database"].value != database:
            continue
        value = metadata.get("dagster/partition_row_count")
        return int(value.value) if value is not None else None
    return None
