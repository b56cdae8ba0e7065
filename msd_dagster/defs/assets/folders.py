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
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from msd_dagster import event_metadata as em
from msd_dagster import stopping
from msd_dagster.dagster_compat import AssetCheckEvaluationTargetMaterializationData
from msd_dagster.defs.check_names import ROWS_CHECK
from msd_dagster.defs.partitions import FOLDER_BACKFILL_POLICY, msd_folders
from msd_dagster.defs.resources import FrameStoreResource, MsdSourceResource, WarehouseResource
from msd_dagster.defs.retries import SOURCE_RETRY_POLICY
from msd_dagster.defs.tables import (
    DESCRIPTIONS,
    NORMALIZED_DESCRIPTIONS,
    NORMALIZED_FRAMES,
    NORMALIZED_OF,
    REJECTED_FRAME,
    column_lineage,
    normalized_key,
    normalized_schema,
    preview,
    table_schema,
    warehouse_key,
)
from msd_dagster.frame_store import FrameStore, GroupWriter
from msd_dagster.msd.frames import RejectedFile
from msd_dagster.msd.partition import FolderStream
from msd_dagster.source.layout import SourceError, SourceFile, is_song_file_key
from msd_dagster.source.s3 import S3SourceError
from msd_dagster.warehouse.checked_load import PartitionCheckFailed, load_and_verify
from msd_dagster.warehouse.ddl import SchemaMismatchError, ensure_schema
from msd_dagster.warehouse.schema import MSD_TABLES, TRACK_TABLE_NAMES
from msd_dagster.warehouse.transactions import is_transient_database_error
from msd_dagster.warehouse.verify import TableVerdict, table_row_counts

RAW_KEY = dg.AssetKey(["raw", "song_files"])
LISTING_FRAME = "song_files"
WAREHOUSE_POOL = "msd_warehouse"
OWNERS = ["team:data-engineering"]
TABLE_ORDER: tuple[str, ...] = tuple(t.name for t in MSD_TABLES)


def listing_frame(files: Sequence[SourceFile]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": pd.array([f.key for f in files], dtype="string"),
            "size": pd.array([f.size for f in files], dtype="int64"),
            "modified": pd.to_datetime([f.modified for f in files]).astype("datetime64[us]"),
            "etag": pd.array([f.etag for f in files], dtype="string"),
        }
    )


def rejected_frame(rejected: Sequence[RejectedFile]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": pd.array([r.name for r in rejected], dtype="string"),
            "reason": pd.array([r.reason for r in rejected], dtype="string"),
        }
    )


def rejected_markdown(rejected: Sequence[RejectedFile], limit: int = 50) -> str:
    lines = [f"- `{r.name}`: {r.reason}" for r in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"- ... and {len(rejected) - limit} more (see the rejected_files frame)")
    return "\n".join(lines) or "none"


def tracks_per_decade(songs: pd.DataFrame) -> str:
    """A small Markdown bar chart of the partition's tracks per decade (unknown year apart)."""
    years = songs["year"]
    decades = (years.dropna().astype(int) // 10 * 10).value_counts().sort_index()
    rows = [
        f"| {d}s | {n} | {'█' * max(1, round(40 * n / len(songs)))} |" for d, n in decades.items()
    ]
    rows.append(f"| unknown | {int(years.isna().sum())} | |")
    return "| decade | tracks | |\n|---|---:|---|\n" + "\n".join(rows)


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


# Partitioned check specs are a preview feature in Dagster 1.13; we rely on them deliberately
# (msd_dagster_tests/test_definitions.py pins it).
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")

# Checks of the load itself: evaluated per folder inside its load transaction, one result per
# check and folder; no separate step.
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


@dataclass
class FolderFailure:
    """A folder the step could not load, why, and whether trying again may help."""

    partition: str
    stage: str
    reason: str
    transient: bool


class _FolderFailed(Exception):
    def __init__(self, failure: FolderFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _is_transient(exc: BaseException) -> bool:
    """Worth trying again: a source or database fault that may pass (never a bad file, a
    refused row, a failed check or a missing folder)."""
    if isinstance(exc, SourceError | S3SourceError):
        return not exc.permanent
    return is_transient_database_error(exc)


def resumed_run_ids(context: dg.AssetExecutionContext) -> list[str]:
    """This run, and for a "From failure" re-execution the runs it resumes, newest first."""
    run_ids = [context.run.run_id]
    run = context.run
    while run.parent_run_id and run.is_resume_retry:
        run_ids.append(run.parent_run_id)
        parent = context.instance.get_run_by_id(run.parent_run_id)
        if parent is None:
            break
        run = parent
    return run_ids


@dataclass
class EarlierLoad:
    """A folder loaded already: by which run, with the check results that load recorded."""

    run_id: str
    evaluations: list[dg.AssetCheckEvaluation]


def folders_loaded_already(
    instance: dg.DagsterInstance, run_ids: Sequence[str]
) -> dict[str, EarlierLoad]:
    """Folders whose tables these runs loaded already (a retried step, or the runs a "From
    failure" re-execution resumes); the newest load of each."""
    track_key = warehouse_key("msd_track")
    done: dict[str, EarlierLoad] = {}
    for run_id in run_ids:
        loaded: set[str] = set()
        evaluations: dict[str, list[dg.AssetCheckEvaluation]] = {}
        records = instance.get_records_for_run(
            run_id,
            of_type={
                dg.DagsterEventType.ASSET_MATERIALIZATION,
                dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            },
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                if evaluation.partition and evaluation.check_name == ROWS_CHECK:
                    evaluations.setdefault(evaluation.partition, []).append(evaluation)
            elif event.step_materialization_data.materialization.asset_key == track_key:
                loaded.add(str(event.step_materialization_data.materialization.partition))
        for partition in loaded - done.keys():
            done[partition] = EarlierLoad(run_id, evaluations.get(partition, []))
    return done


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


def row_counts(verdict: TableVerdict) -> dict[str, int]:
    """The folder's rows: in the database, in its frame and (track tables) in its files."""
    counts = {"database": verdict.database_rows, "frame": verdict.frame_rows}
    if verdict.source_rows is not None:
        counts["files"] = verdict.source_rows
    return counts


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
        raise _FolderFailed(FolderFailure(partition, "check", str(exc), False)) from exc
    except Exception as exc:  # noqa: BLE001 - any error fails this folder only
        reason = warehouse.describe_error(exc)
        raise _FolderFailed(FolderFailure(partition, stage, reason, _is_transient(exc))) from exc

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
            allow_retries=not isinstance(exc, SchemaMismatchError) and _is_transient(exc),
        ) from None  # the driver's own text may hold secrets; the description is masked
    dataset = msd_source.dataset()
    store = frame_store.store()
    failures: list[FolderFailure] = []
    for partition in todo:
        try:
            with stopping.folder_commit_window():  # a stop waits for a commit's records
                yield from _load_folder(context, partition, dataset, store, warehouse)
        except _FolderFailed as exc:
            failures.append(exc.failure)
            context.log.error(f"{partition} failed ({exc.failure.stage}): {exc.failure.reason}")
    if failures:
        raise dg.Failure(
            description=(
                f"{len(failures)} of {len(todo)} folder(s) failed: "
                + "; ".join(f"{f.partition} ({f.stage}): {f.reason}" for f in failures)
            ),
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
