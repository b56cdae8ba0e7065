"""Jobs: load one partition end to end (raw -> normalized -> warehouse, with checks)."""

import dagster as dg

msd_partition_job = dg.define_asset_job(
    name="msd_partition_job",
    selection=dg.AssetSelection.groups("raw", "normalized", "warehouse"),
    description="Load one second-level folder: list, parse, normalize and load it, then check it.",
    tags={"msd/job": "partition"},
)
