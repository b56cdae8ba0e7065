"""Asset checks on the warehouse tables: row counts, unique keys, foreign keys, totals."""

import warnings

import dagster as dg

from msd_dagster.defs.automation import WITH_ITS_ASSET
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import WarehouseResource
from msd_dagster.defs.tables import (
    NORMALIZED_NAMES,
    TRACK_TABLE_NAMES,
    normalized_key,
    warehouse_key,
)
from msd_dagster.warehouse.schema import references
from msd_dagster.warehouse.verify import total_tracks, verify_partition

ROW_COUNT = "row_count_matches"
UNIQUE_KEYS = "natural_key_unique"
FOREIGN_KEYS = "foreign_keys_resolve"
TOTAL_TRACKS = "all_valid_song_files_loaded"


# Partitioned check specs are a preview feature in Dagster 1.13; we rely on them deliberately.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")

WAREHOUSE_CHECK_SPECS = [
    spec
    for table in NORMALIZED_NAMES
    for spec in (
        dg.AssetCheckSpec(
            ROW_COUNT,
            asset=warehouse_key(table),
            blocking=True,
            partitions_def=msd_folders,
            automation_condition=WITH_ITS_ASSET,
            additional_deps=[normalized_key(table)],
            description=(
                "Rows of the partition in the database == rows of the normalized frame "
                "(== rows implied by the song files, checked upstream)."
                if table in TRACK_TABLE_NAMES
                else "Every row of the partition's normalized frame is in the database (by "
                "natural key). The table is shared by partitions, so the database may hold more."
            ),
        ),
        dg.AssetCheckSpec(
            UNIQUE_KEYS,
            asset=warehouse_key(table),
            partitions_def=msd_folders,
            automation_condition=WITH_ITS_ASSET,
            additional_deps=[normalized_key(table)],
            description="No natural key (e.g. track_id + position) appears twice.",
        ),
        *(
            [
                dg.AssetCheckSpec(
                    FOREIGN_KEYS,
                    asset=warehouse_key(table),
                    partitions_def=msd_folders,
                    automation_condition=WITH_ITS_ASSET,
                    additional_deps=[normalized_key(table)],
                    description="Every foreign key resolves (tracks -> artists, rows -> tracks).",
                )
            ]
            if references(table)
            else []
        ),
    )
]


@dg.multi_asset_check(
    name="warehouse_checks",
    specs=WAREHOUSE_CHECK_SPECS,
    can_subset=True,
    ins={name: dg.AssetIn(key=normalized_key(table)) for table, name in NORMALIZED_NAMES.items()},
)
def warehouse_checks(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, **frames
):
    """Compare the database with the normalized frames of the partition, table by table."""
    selected = context.selected_asset_check_keys
    by_table = {table: frames[name] for table, name in NORMALIZED_NAMES.items()}
    verdicts = verify_partition(warehouse.engine(), context.partition_key, by_table)
    for verdict in verdicts:
        key = warehouse_key(verdict.table)
        results = [
            (
                ROW_COUNT,
                verdict.rows_ok,
                {
                    "database_rows": verdict.database_rows,
                    "frame_rows": verdict.frame_rows,
                    "missing_keys": verdict.missing_keys,
                },
            ),
            (UNIQUE_KEYS, verdict.duplicates == 0, {"duplicate_keys": verdict.duplicates}),
            (FOREIGN_KEYS, verdict.orphans == 0, {"unresolved_foreign_keys": verdict.orphans}),
        ]
        for name, passed, metadata in results:
            check_key = dg.AssetCheckKey(key, name)
            if check_key in selected:
                yield dg.AssetCheckResult(
                    asset_key=key,
                    check_name=name,
                    passed=bool(passed),
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata=metadata,
                )


@dg.asset_check(
    asset=warehouse_key("msd_track"),
    name=TOTAL_TRACKS,
    description=(
        "Total tracks in msd_track == valid song files loaded over every partition (the row "
        "count of each partition's latest warehouse/msd_track materialization, which the "
        "partition checks tie to the song files)."
    ),
)
def all_valid_song_files_loaded(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    instance = context.instance
    partitions = instance.get_dynamic_partitions(msd_folders.name)
    expected = 0
    counted = []
    for key in partitions:
        # The warehouse materialization is recorded after its transaction commits, so this
        # sum and the database agree even while another partition is being loaded.
        record = _latest_row_count(instance, warehouse_key("msd_track"), key)
        if record is not None:
            expected += record
            counted.append(key)
    actual = total_tracks(warehouse.engine())
    return dg.AssetCheckResult(
        passed=actual == expected,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "tracks_in_database": actual,
            "valid_song_files": expected,
            "partitions_counted": len(counted),
        },
    )


def _latest_row_count(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int | None:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    value = materialization.metadata.get("dagster/row_count") if materialization else None
    return int(value.value) if value is not None else None
