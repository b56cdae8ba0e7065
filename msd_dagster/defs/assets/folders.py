"""The partitioned assets: raw -> normalized -> warehouse, one folder after another, in one step.

A run targets one folder or a range of folders (partitions). Its single step takes them in
turn, and for each folder:

1. lists its song files (``raw/song_files``, stored as Parquet);
2. parses and normalizes them (``normalized/songs``, ``normalized/artists``,
   ``normalized/genres``: one Parquet file per frame);
3. loads the twelve ``warehouse/msd_*`` tables in one transaction and, in that transaction,
   verifies them (the ``partition_rows_loaded`` check of each table); a folder that fails its
   checks is rolled back.

Each folder gets its own materializations (with ``dagster/partition_row_count``) and check
results, whatever the number of folders in the run, and holds only its own frames in memory.
A folder that fails is reported and the others go on; the step then fails, naming the folders
and why. A retry of the step, and a "From failure" re-execution, skip the folders that are
loaded already.
"""

import time
from collections.abc import Iterator

import dagster as dg

from msd_dagster import event_metadata as em
from msd_dagster import stopping
from msd_dagster.defs.assets import OWNERS, WAREHOUSE_POOL
from msd_dagster.defs.checks import (
    ROWS_CHECK_SPECS,
    latest_materialization,
    results_of_earlier_load,
    rows_check_evaluation,
)
from msd_dagster.defs.folder_resume import folders_loaded_already, resumed_run_ids
from msd_dagster.defs.partitions import FOLDER_BACKFILL_POLICY, msd_folders
from msd_dagster.defs.resources import FrameStoreResource, MsdSourceResource, WarehouseResource
from msd_dagster.defs.retries import SOURCE_RETRY_POLICY
from msd_dagster.defs.tables import (
    DESCRIPTIONS,
    NORMALIZED_DESCRIPTIONS,
    NORMALIZED_FRAMES,
    NORMALIZED_OF,
    RAW_KEY,
    REJECTED_FRAME,
    TABLE_ORDER,
    column_lineage,
    normalized_key,
    normalized_schema,
    preview,
    table_schema,
    warehouse_key,
)
from msd_dagster.folder_failures import FolderFailed, FolderFailure, failures_summary, is_transient
from msd_dagster.folder_report import (
    listing_frame,
    rejected_frame,
    rejected_markdown,
    tracks_per_decade,
)
from msd_dagster.frame_store import FrameStore, GroupWriter
from msd_dagster.msd.partition import FolderStream
from msd_dagster.source.layout import SourceError, is_song_file_key
from msd_dagster.warehouse.checked_load import PartitionCheckFailed, load_and_verify
from msd_dagster.warehouse.ddl import SchemaMismatchError, ensure_schema
from msd_dagster.warehouse.verify import table_row_counts

LISTING_FRAME = "song_files"

FOLDER_SPECS: list[dg.AssetSpec] = [
    dg.AssetSpec(
        RAW_KEY,
        group_name="raw",
        description=(
            "The MSD song files (one HDF5 file per track) of one second-level folder, e.g. "
            "`data/A/B/*/*.h5`: key, size, modification time and ETag as listed at the source "
            "(any other file there is listed too, and rejected by name). Its unpartitioned "
            "observations name the files under data/ that no folder takes."
        ),
        kinds={"hdf5", "s3"},
        owners=OWNERS,
        tags={"msd/layer": "raw"},
        skippable=True,
    ),
    *[
        dg.AssetSpec(
            normalized_key(name),
            group_name="normalized",
            deps=[RAW_KEY],
            description=NORMALIZED_DESCRIPTIONS[name],
            kinds={"pandas", "parquet"},
            metadata={"dagster/column_schema": normalized_schema(name)},
            owners=OWNERS,
            tags={"msd/layer": "normalized"},
            skippable=True,
        )
        for name in NORMALIZED_FRAMES
    ],
    *[
        dg.AssetSpec(
            warehouse_key(table),
            group_name="warehouse",
            deps=[normalized_key(NORMALIZED_OF[table])],
            description=DESCRIPTIONS[table],
            kinds={"sql"},
            # Static facts live on the definition; each materialization carries its counts.
            metadata={
                "dagster/column_schema": table_schema(table),
                "dagster/column_lineage": column_lineage(table),
                "dagster/table_name": table,
            },
            owners=OWNERS,
            tags={"msd/layer": "warehouse"},
            skippable=True,
        )
        for table in TABLE_ORDER
    ],
]


def _normalized_materializations(
    partition: str, stream: FolderStream, writer: GroupWriter
) -> Iterator[dg.AssetMaterialization]:
    """The folder's normalized frames, all read: stored (made current) and materialized."""
    rejected = stream.rejected
    songs_asset = tuple(normalized_key("songs").path)
    writer.writers[songs_asset].append(REJECTED_FRAME, rejected_frame(rejected))
    paths = writer.commit()
    tracks = stream.tracks
    for name, tables in NORMALIZED_FRAMES.items():
        extra: dict[str, object] = {}
        if name == "songs":
            extra = {
                em.TRACKS: len(tracks),
                em.REJECTED_FILES: len(rejected),
                "rejected": dg.MetadataValue.md(rejected_markdown(rejected)),
                em.REJECTED_LIST: dg.MetadataValue.json(em.rejected_entries(rejected)),
                em.PARSE_SECONDS: round(stream.seconds, 3),
                "preview": preview(tracks),
            }
            if len(tracks):
                extra["tracks_per_decade"] = dg.MetadataValue.md(tracks_per_decade(tracks))
        yield dg.AssetMaterialization(
            normalized_key(name),
            partition=partition,
            metadata={
                **extra,
                "rows": dg.MetadataValue.json({t: writer.rows[t] for t in tables}),
                "path": dg.MetadataValue.path(str(paths[tuple(normalized_key(name).path)])),
            },
        )


def _load_folder(
    context: dg.AssetExecutionContext,
    partition: str,
    dataset,
    store: FrameStore,
    warehouse: WarehouseResource,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    instance = context.instance
    started = time.perf_counter()
    stage = "list"
    try:
        files = dataset.list_files(partition)
        if not files:
            raise SourceError(
                f"data/{partition}/",
                f"no song files at {dataset.describe()}: not a folder of this dataset "
                "(materialize folders that msd-dagster load or the discovery sensor registered)",
                permanent=True,
            )
        store.write(RAW_KEY.path, partition, {LISTING_FRAME: listing_frame(files)})
        listed = time.perf_counter()
        yield dg.AssetMaterialization(
            RAW_KEY,
            partition=partition,
            metadata={
                "dagster/partition_row_count": len(files),
                # Rejected by name, with their reasons, in normalized/songs' rejected list.
                "not_song_files": sum(not is_song_file_key(f.key) for f in files),
                "bytes": dg.MetadataValue.int(sum(f.size for f in files)),
                "source": dataset.describe(),
                em.LIST_SECONDS: round(listed - started, 3),
            },
        )

        # Parsed, normalized, stored and loaded in chunks of songs, in one transaction.
        stage = "load"
        writer = GroupWriter(
            store,
            partition,
            {tuple(normalized_key(n).path): t for n, t in NORMALIZED_FRAMES.items()},
        )
        stream = FolderStream(
            dataset, [f.key for f in files], {f.key: f.modified for f in files}, sink=writer
        )
        try:
            loaded = load_and_verify(
                warehouse.engine(), partition, stream, lambda: stream.source_rows
            )
        except BaseException:
            if not stream.finished:  # the frames were not all read: the stored ones stay
                writer.abort()
                stage = "parse" if stream.failed else stage
                raise
            yield from _normalized_materializations(partition, stream, writer)
            raise
        yield from _normalized_materializations(partition, stream, writer)
    except PartitionCheckFailed as exc:
        # Rolled back: the results are about the folder's rows still in the database.
        for verdict in exc.verdicts:
            target = latest_materialization(instance, warehouse_key(verdict.table), partition)
            yield rows_check_evaluation(partition, verdict, target)
        raise FolderFailed(FolderFailure(partition, "check", str(exc), False)) from exc
    except Exception as exc:  # noqa: BLE001 - any error fails this folder only
        reason = warehouse.describe_error(exc)
        raise FolderFailed(FolderFailure(partition, stage, reason, is_transient(exc))) from exc

    database = warehouse.display_url()
    kind = warehouse.catalog_kind()
    try:
        table_rows, counted_by = table_row_counts(warehouse.engine())
    except Exception as exc:  # noqa: BLE001 - the folder is committed; only the size is missing
        # e.g. a login without VIEW DATABASE STATE on SQL Server.
        context.log.warning(
            f"{partition}: loaded, but the tables' sizes cannot be read, so dagster/row_count "
            f"is left out: {warehouse.describe_error(exc)}"
        )
        table_rows, counted_by = {}, None
    # The folder's rows, all verified present: what it inserted in the track tables, and the
    # rows it needs in the shared ones (its artists, their terms, tags, similar artists ...).
    rows = {v.table: v.frame_rows for v in loaded.verdicts}
    for table in TABLE_ORDER:
        yield dg.AssetMaterialization(
            warehouse_key(table),
            partition=partition,
            metadata={
                "dagster/partition_row_count": rows[table],
                **(
                    {"dagster/row_count": table_rows[table], "row_count_method": counted_by}
                    if table in table_rows
                    else {}
                ),
                "dagster/table_name": table,
                "dagster/storage_kind": kind,
                em.ROWS_WRITTEN: loaded.written.get(table, 0),
                em.DATABASE: database,
                em.LOAD_SECONDS: round(loaded.seconds, 3),
            },
        )
    for verdict in loaded.verdicts:
        target = latest_materialization(instance, warehouse_key(verdict.table), partition)
        yield rows_check_evaluation(partition, verdict, target)
    total = sum(loaded.written.values())
    context.log.info(
        f"{partition}: {writer.rows['msd_track']} tracks, {total:,} rows, "
        f"{len(stream.rejected)} rejected in {time.perf_counter() - started:.1f} s "
        f"(parse {stream.seconds:.1f} s, write {loaded.seconds - stream.seconds:.1f} s)"
    )


@dg.multi_asset(
    name="load_folders",
    specs=FOLDER_SPECS,
    check_specs=ROWS_CHECK_SPECS,
    partitions_def=msd_folders,
    backfill_policy=FOLDER_BACKFILL_POLICY,
    can_subset=False,
    pool=WAREHOUSE_POOL,
    retry_policy=SOURCE_RETRY_POLICY,
    op_tags={"msd/stage": "folders"},
)
def load_folders(
    context: dg.AssetExecutionContext,
    msd_source: MsdSourceResource,
    warehouse: WarehouseResource,
    frame_store: FrameStoreResource,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    """List, parse, normalize, load and verify each folder of the run, one after the other."""
    partitions = list(context.partition_keys)
    done = folders_loaded_already(context.instance, resumed_run_ids(context))
    todo = [p for p in partitions if p not in done]
    skipped = [p for p in partitions if p in done]
    if skipped:
        context.log.info(f"loaded already, skipped: {', '.join(skipped)}")
    for partition in skipped:
        if done[partition].run_id != context.run.run_id:  # a retried step has them already
            yield from results_of_earlier_load(
                context.instance, partition, done[partition].evaluations
            )
    try:
        ensure_schema(warehouse.engine())
    except Exception as exc:  # noqa: BLE001 - every folder needs the schema: the step fails
        raise dg.Failure(
            description=f"the database {warehouse.display_url()} is not usable: "
            + (
                warehouse.without_secrets(str(exc))
                if isinstance(exc, SchemaMismatchError)
                else warehouse.describe_error(exc)
            ),
            # A schema mismatch or a refused login stays; a lost connection may pass.
            allow_retries=not isinstance(exc, SchemaMismatchError) and is_transient(exc),
        ) from None  # the driver's own text may hold secrets; the description is masked
    dataset = msd_source.dataset()
    store = frame_store.store()
    failures: list[FolderFailure] = []
    for partition in todo:
        try:
            with stopping.folder_commit_window():  # a stop waits for a commit's records
                yield from _load_folder(context, partition, dataset, store, warehouse)
        except FolderFailed as exc:
            failures.append(exc.failure)
            context.log.error(f"{partition} failed ({exc.failure.stage}): {exc.failure.reason}")
    if failures:
        raise dg.Failure(
            description=failures_summary(failures, len(todo)),
            metadata={
                em.FAILED_FOLDERS: dg.MetadataValue.json(
                    [em.failed_folder_entry(f.partition, f.stage, f.reason) for f in failures]
                )
            },
            # A lost connection or a throttled bucket may pass; the folders loaded meanwhile
            # are skipped by the retry.
            allow_retries=any(f.transient for f in failures),
        )
    # The checks' outputs (nothing flows through them: each folder's results are above).
    for output_name in context.assets_def.check_specs_by_output_name:
        yield dg.Output(None, output_name=output_name)
