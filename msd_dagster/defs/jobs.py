"""Jobs: load one partition end to end, and the whole-dataset total check."""

import dagster as dg

from msd_dagster.defs.checks import all_valid_song_files_loaded

msd_partition_job = dg.define_asset_job(
    name="msd_partition_job",
    selection=dg.AssetSelection.groups("raw", "normalized", "warehouse")
    - dg.AssetSelection.checks(all_valid_song_files_loaded),
    description="Load one second-level folder: list, parse, normalize and load it, then check it.",
    tags={"msd/job": "partition"},
)

# Unpartitioned: run after a load or backfill of all partitions.
msd_totals_job = dg.define_asset_job(
    name="msd_totals_job",
    selection=dg.AssetSelection.checks(all_valid_song_files_loaded),
    description="Check that msd_track holds one row per valid song file over all partitions.",
)
