"""The code location: every asset, check, job, sensor and resource of msd-dagster.

Nothing here reads the environment: the resources read their variables when used (see
:mod:`msd_dagster.settings`), so the location is the same wherever it is loaded.
"""

from __future__ import annotations

import dagster as dg

from msd_dagster.defs.assets.additional_files import (
    additional_files_frames,
    additional_files_warehouse,
)
from msd_dagster.defs.assets.folders import load_folders
from msd_dagster.defs.assets.profile import warehouse_profile
from msd_dagster.defs.checks import ALL_FOLDERS, total_tracks_match_partitions
from msd_dagster.defs.jobs import (
    msd_additional_files_job,
    msd_partition_job,
    msd_profile_job,
    msd_totals_job,
)
from msd_dagster.defs.resources import (
    FrameStoreResource,
    MsdS3Resource,
    MsdSourceResource,
    WarehouseResource,
)
from msd_dagster.defs.sensors import msd_discovery_sensor, msd_totals_after_loads

CODE_LOCATION_NAME = "msd_dagster"  # as in workspace.yaml and pyproject.toml

RESOURCES = {
    "msd_source": MsdSourceResource(s3=MsdS3Resource(max_attempts=8)),
    "warehouse": WarehouseResource(),
    "frame_store": FrameStoreResource(),
}


def build_definitions(executor: dg.ExecutorDefinition) -> dg.Definitions:
    """The code location with ``executor`` (each entry point chooses one, see
    :mod:`msd_dagster.distributed`); everything else is the same objects. A function: a code
    location module may hold one Definitions object only."""
    location = dg.Definitions(
        assets=[
            load_folders,
            additional_files_frames,
            additional_files_warehouse,
            ALL_FOLDERS,
            warehouse_profile,
        ],
        asset_checks=[total_tracks_match_partitions],
        jobs=[msd_partition_job, msd_totals_job, msd_additional_files_job, msd_profile_job],
        sensors=[msd_discovery_sensor, msd_totals_after_loads],
        resources=RESOURCES,
    )
    return dg.Definitions.merge(location, dg.Definitions(executor=executor))


# A run's folders are loaded one after the other in its single step; parallelism comes from
# running several runs at once, so per-step subprocesses would only add overhead.
defs = build_definitions(dg.in_process_executor)


def partition_job() -> dg.JobDefinition:
    """The partition job, resolved; ``dg.reconstructable`` re-imports it in worker processes."""
    return defs.resolve_job_def(msd_partition_job.name)


def asset_job() -> dg.JobDefinition:
    """Dagster's implicit asset job (``__ASSET_JOB``): where the asset graph's "Materialize"
    and asset backfills run a selection of assets, and where ``msd-dagster load`` runs the
    folders (:func:`folder_load_selection`)."""
    return defs.resolve_implicit_global_asset_job_def()


def folder_load_selection() -> tuple[frozenset[dg.AssetKey], frozenset[dg.AssetCheckKey]]:
    """What the UI selects to load folders: every asset of ``load_folders`` (it cannot be
    subset, so the UI adds the rest to any of them), and every check of those assets (the
    asset graph sends the assets' checks; an asset backfill adds them)."""
    keys = frozenset(load_folders.keys)
    graph = defs.resolve_asset_graph()
    checks = frozenset(k for k in graph.asset_check_keys if k.asset_key in keys)
    return keys, checks


def totals_job() -> dg.JobDefinition:
    return defs.resolve_job_def(msd_totals_job.name)


def additional_files_job() -> dg.JobDefinition:
    return defs.resolve_job_def(msd_additional_files_job.name)


def profile_job() -> dg.JobDefinition:
    return defs.resolve_job_def(msd_profile_job.name)
