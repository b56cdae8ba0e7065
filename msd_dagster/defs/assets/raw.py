"""raw: the song files of one partition, as listed at the source."""

import dagster as dg
import pandas as pd

from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import MsdSourceResource
from msd_dagster.defs.retries import SOURCE_RETRY_POLICY
from msd_dagster.source.layout import SourceFile

RAW_COLUMNS = ["key", "size", "modified", "etag"]


def listing_frame(files: list[SourceFile]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": pd.array([f.key for f in files], dtype="string"),
            "size": pd.array([f.size for f in files], dtype="int64"),
            "modified": pd.to_datetime([f.modified for f in files]).astype("datetime64[us]"),
            "etag": pd.array([f.etag for f in files], dtype="string"),
        }
    )


@dg.asset(
    key=["raw", "song_files"],
    group_name="raw",
    partitions_def=msd_folders,
    kinds={"hdf5", "s3"},
    io_manager_key="parquet_io_manager",
    retry_policy=SOURCE_RETRY_POLICY,
    code_version="1",
    description=(
        "The MSD song files (one HDF5 file per track) of one second-level folder, e.g. "
        "`data/A/B/*/*.h5`: key, size, modification time and ETag as listed at the source."
    ),
)
def raw_song_files(context: dg.AssetExecutionContext, msd_source: MsdSourceResource) -> dg.Output:
    dataset = msd_source.dataset()
    files = dataset.list_files(context.partition_key)
    frame = listing_frame(files)
    total_bytes = int(frame["size"].sum())
    context.log.info(
        f"{len(files)} song files, {total_bytes / 1e6:.1f} MB in {context.partition_key} "
        f"at {dataset.describe()}"
    )
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(files),
            "files": len(files),
            "bytes": dg.MetadataValue.int(total_bytes),
            "source": dataset.describe(),
        },
    )
