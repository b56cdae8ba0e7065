"""The jobs of the Jobs page: load folders end to end, the whole-dataset total check, the
AdditionalFiles and the dataset profile."""

import dagster as dg

from msd_dagster.defs.assets.additional_files import ADDITIONAL_GROUP
from msd_dagster.defs.assets.folders import load_folders
from msd_dagster.defs.assets.profile import PROFILE_KEY
from msd_dagster.defs.checks import total_tracks_match_partitions


def _job(kind: str, selection: dg.AssetSelection, description: str):
    """``msd_<kind>_job``, its runs tagged ``msd/job: <kind>`` (what the run queue's limits and
    the sensors key on)."""
    return dg.define_asset_job(
        name=f"msd_{kind}_job",
        selection=selection,
        description=description,
        tags={"msd/job": kind},
    )


msd_partition_job = _job(
    "partition",
    # The load and its own checks, one result per check and folder: one step.
    dg.AssetSelection.assets(load_folders),
    "Load one second-level folder, or a range of them: list, parse, normalize, load and check "
    "each folder in its own transaction.",
)

# Unpartitioned: run after a load or backfill of all partitions.
msd_totals_job = _job(
    "totals",
    dg.AssetSelection.checks(total_tracks_match_partitions),
    "Check that msd_track holds one row per valid song file over all partitions.",
)

msd_additional_files_job = _job(
    "additional_files",
    dg.AssetSelection.groups(ADDITIONAL_GROUP),
    "Load the dataset's AdditionalFiles (artists without song files, locations, every published "
    "term and tag, artist terms/tags/similarity) into the shared tables.",
)

msd_profile_job = _job(
    "profile",
    dg.AssetSelection.assets(PROFILE_KEY),
    "Profile the loaded data: plots and numbers on profile/dataset's page.",
)
