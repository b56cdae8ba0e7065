"""Jobs: load folders end to end, and the whole-dataset total check."""

import dagster as dg

from msd_dagster.defs.assets.folders import load_folders
from msd_dagster.defs.checks import total_tracks_match_partitions

msd_partition_job = dg.define_asset_job(
    name="msd_partition_job",
    # The load and its own checks, one result per check and folder: one step.
    selection=dg.AssetSelection.assets(load_folders),
    description=(
        "Load one second-level folder, or a range of them: list, parse, normalize, load and "
        "check each folder in its own transaction."
    ),
    tags={"msd/job": "partition"},
)

# Unpartitioned: run after a load or backfill of all partitions.
msd_totals_job = dg.define_asset_job(
    name="msd_totals_job",
    selection=dg.AssetSelection.checks(total_tracks_match_partitions),
    description="Check that msd_track holds one row per valid song file over all partitions.",
)
