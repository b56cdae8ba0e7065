"""The whole-dataset asset check on the warehouse tables.

(``partition_rows_loaded``, one per table and folder, is a check of the load itself, evaluated
in each folder's load transaction: :mod:`msd_dagster.defs.assets.folders`.)

* ``total_tracks_match_partitions``, unpartitioned: ``msd_track`` holds one row per valid song
  file over every folder loaded into this database. It checks ``warehouse/all_folders``, the
  warehouse over all its folders, which nothing materializes: a check of a table that
  ``load_folders`` materializes would be part of every run that loads folders from the UI
  (Dagster adds the checks of the assets it materializes), as a step that can never run
  within a run of a few folders.
"""

import dagster as dg
import sqlalchemy as sa

from msd_dagster import event_metadata as em
from msd_dagster.defs.assets.folders import OWNERS, TABLE_ORDER
from msd_dagster.defs.check_names import TOTAL_TRACKS
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import WarehouseResource
from msd_dagster.defs.tables import warehouse_key
from msd_dagster.warehouse.queries import total_tracks

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
