"""The jobs of the Jobs page: load folders end to end, the whole-dataset total check, the
AdditionalFiles and the dataset profile. Each is ``msd_<kind>_job``, its runs tagged
``msd/job: <kind>`` (what the run queue's limits and the sensors key on)."""

import dagster as dg

from msd_dagster.defs.assets.additional_files import ADDITIONAL_GROUP
from msd_dagster.defs.assets.folders import load_folders
from msd_dagster.defs.assets.profile import PROFILE_KEY
from msd_dagster.defs.checks import total_tracks_match_partitions

# kind -> (selection, description)
_JOBS: dict[str, tuple[dg.AssetSelection, str]] = {
    # The load and its own checks, one result per check and folder: one step.
    "partition": (
        dg.AssetSelection.assets(load_folders),
        "Load one second-level folder, or a range of them: list, parse, normalize, load and "
        "check each folder in its own transaction.",
    ),
    # Unpartitioned: run after a load or backfill of all partitions.
    "totals": (
        dg.AssetSelection.checks(total_tracks_match_partitions),
        "Check that msd_track holds one row per valid song file over all partitions.",
    ),
    "additional_files": (
        dg.AssetSelection.groups(ADDITIONAL_GROUP),
        "Load the dataset's AdditionalFiles (artists without song files, locations, every "
        "published term and tag, artist terms/tags/similarity) into the shared tables.",
    ),
    "profile": (
        dg.AssetSelection.assets(PROFILE_KEY),
        "Profile the loaded data: plots and numbers on profile/dataset's page.",
    ),
}

msd_partition_job, msd_totals_job, msd_additional_files_job, msd_profile_job = (
    dg.define_asset_job(
        name=f"msd_{kind}_job", selection=selection, description=description, tags={"msd/job": kind}
    )
    for kind, (selection, description) in _JOBS.items()
)
