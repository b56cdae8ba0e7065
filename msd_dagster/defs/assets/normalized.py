"""normalized: one DataFrame per msd_* table for a partition, parsed from its song files."""

import time
import warnings

import dagster as dg
import pandas as pd

from msd_dagster.defs.automation import FOLLOW_UPSTREAM, WITH_ITS_ASSET
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import MsdSourceResource
from msd_dagster.defs.retries import SOURCE_RETRY_POLICY
from msd_dagster.defs.tables import (
    DESCRIPTIONS,
    NORMALIZED_NAMES,
    TRACK_TABLE_NAMES,
    normalized_key,
    preview,
    table_schema,
)
from msd_dagster.msd.frames import RejectedFile
from msd_dagster.msd.partition import normalize_partition

# Partitioned check specs are a preview feature in Dagster 1.13; we rely on them deliberately.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")

REJECTED_KEY = dg.AssetKey(["normalized", "rejected_files"])
SOURCE_ROWS_CHECK = "rows_match_source"


def rejected_frame(rejected: list[RejectedFile]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": pd.array([r.name for r in rejected], dtype="string"),
            "reason": pd.array([r.reason for r in rejected], dtype="string"),
        }
    )


def tracks_per_decade(songs: pd.DataFrame) -> str:
    """A small Markdown bar chart of the partition's tracks per decade (unknown year apart)."""
    years = songs["year"]
    decades = (years.dropna().astype(int) // 10 * 10).value_counts().sort_index()
    rows = [
        f"| {d}s | {n} | {'█' * max(1, round(40 * n / len(songs)))} |" for d, n in decades.items()
    ]
    rows.append(f"| unknown | {int(years.isna().sum())} | |")
    return "| decade | tracks | |\n|---|---:|---|\n" + "\n".join(rows)


def rejected_markdown(rejected: list[RejectedFile], limit: int = 50) -> str:
    lines = [f"- `{r.name}`: {r.reason}" for r in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"- ... and {len(rejected) - limit} more (see normalized/rejected_files)")
    return "\n".join(lines) or "none"


@dg.multi_asset(
    name="normalized_tables",
    group_name="normalized",
    partitions_def=msd_folders,
    ins={"raw_song_files": dg.AssetIn(key=["raw", "song_files"])},
    outs={
        **{
            name: dg.AssetOut(
                key=normalized_key(table),
                description=DESCRIPTIONS[table],
                kinds={"pandas", "parquet"},
                metadata={"dagster/column_schema": table_schema(table)},
                io_manager_key="parquet_io_manager",
                owners=["team:data-engineering"],
                tags={"msd/layer": "normalized"},
                code_version="1",
                automation_condition=FOLLOW_UPSTREAM,
            )
            for table, name in NORMALIZED_NAMES.items()
        },
        "rejected_files": dg.AssetOut(
            key=REJECTED_KEY,
            description="Song files of the partition that could not be read, with the reason.",
            kinds={"pandas", "parquet"},
            io_manager_key="parquet_io_manager",
            code_version="1",
            automation_condition=FOLLOW_UPSTREAM,
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            SOURCE_ROWS_CHECK,
            asset=normalized_key(table),
            blocking=True,
            partitions_def=msd_folders,
            automation_condition=WITH_ITS_ASSET,
            description="Rows in the frame == rows implied by the parsed song files.",
        )
        for table in TRACK_TABLE_NAMES
    ],
    retry_policy=SOURCE_RETRY_POLICY,
    op_tags={"msd/stage": "normalize"},
)
def normalized_tables(
    context: dg.AssetExecutionContext, msd_source: MsdSourceResource, raw_song_files: pd.DataFrame
):
    """Parse every song file of the partition and normalize it into the msd_* frames."""
    started = time.perf_counter()
    dataset = msd_source.dataset()
    keys = raw_song_files["key"].tolist()
    modified = dict(zip(keys, raw_song_files["modified"].tolist(), strict=True))

    def progress(done: int, total: int) -> None:
        if done % 250 == 0 or done == total:
            context.log.info(f"parsed {done}/{total} files")

    batch, source_rows = normalize_partition(dataset, keys, modified, progress=progress)
    seconds = time.perf_counter() - started
    rejected_md = dg.MetadataValue.md(rejected_markdown(batch.rejected))
    for rejected in batch.rejected:
        context.log.warning(f"rejected {rejected.name}: {rejected.reason}")
    for table, frame in batch.frames.items():
        extra = {}
        if table == "msd_track" and len(frame):
            extra["tracks_per_decade"] = dg.MetadataValue.md(tracks_per_decade(frame))
        yield dg.Output(
            frame,
            output_name=NORMALIZED_NAMES[table],
            metadata={
                **extra,
                "dagster/row_count": len(frame),
                "preview": preview(frame),
                "rejected_files": len(batch.rejected),
                "rejected": rejected_md,
                "parse_seconds": round(seconds, 3),
            },
        )
    yield dg.Output(
        rejected_frame(batch.rejected),
        output_name="rejected_files",
        metadata={
            "dagster/row_count": len(batch.rejected),
            "rejected": rejected_md,
            "rejected_list": dg.MetadataValue.json(
                [{"name": r.name, "reason": r.reason} for r in batch.rejected[:1000]]
            ),
        },
    )
    for table in TRACK_TABLE_NAMES:
        frame_rows, expected = len(batch.frames[table]), source_rows[table]
        yield dg.AssetCheckResult(
            asset_key=normalized_key(table),
            check_name=SOURCE_ROWS_CHECK,
            passed=frame_rows == expected,
            metadata={"frame_rows": frame_rows, "source_rows": expected},
        )
