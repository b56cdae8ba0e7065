"""The code location: every asset, check, job, sensor and resource of msd-dagster."""

from __future__ import annotations

import os

import dagster as dg

from msd_dagster.defs.assets.additional_files import (
    additional_files_frames,
    additional_files_warehouse,
    msd_additional_files_job,
)
from msd_dagster.defs.assets.normalized import normalized_tables
from msd_dagster.defs.assets.raw import raw_song_files
from msd_dagster.defs.assets.warehouse import warehouse_tables
from msd_dagster.defs.automation import msd_follow_upstream
from msd_dagster.defs.checks import all_valid_song_files_loaded, warehouse_checks
from msd_dagster.defs.io_managers import ParquetIOManager
from msd_dagster.defs.jobs import msd_partition_job, msd_totals_job
from msd_dagster.defs.resources import MsdS3Resource, MsdSourceResource, WarehouseResource
from msd_dagster.defs.sensors import msd_discovery_sensor, msd_totals_after_loads


def env_or(name: str, default: str | int | bool) -> dg.EnvVar | str | int | bool:
    """An ``EnvVar`` when the variable is set (its value stays out of the UI), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, object]:
    return {
        "msd_source": MsdSourceResource(
            location=env_or("MSD_SOURCE", ""),
            s3=MsdS3Resource(
                endpoint_url=env_or("MSD_S3_ENDPOINT_URL", None),
                region_name=env_or("AWS_REGION", None),
                use_unsigned_session=os.environ.get("MSD_S3_UNSIGNED", "") == "1",
                max_attempts=8,
            ),
        ),
        "warehouse": WarehouseResource(
            url=env_or("MSD_DATABASE_URL", ""),
            azure_server=env_or("MSD_AZURE_SQL_SERVER", ""),
            azure_database=env_or("MSD_AZURE_SQL_DATABASE", ""),
            azure_user=env_or("MSD_AZURE_SQL_USER", ""),
            azure_password=env_or("MSD_AZURE_SQL_PASSWORD", ""),
            azure_access_token=env_or("MSD_AZURE_SQL_ACCESS_TOKEN", ""),
            azure_driver=env_or("MSD_AZURE_SQL_DRIVER", "ODBC Driver 18 for SQL Server"),
        ),
        "parquet_io_manager": ParquetIOManager(base_dir=env_or("MSD_PARQUET_DIR", "")),
    }


defs = dg.Definitions(
    assets=[
        raw_song_files,
        normalized_tables,
        warehouse_tables,
        additional_files_frames,
        additional_files_warehouse,
    ],
    asset_checks=[warehouse_checks, all_valid_song_files_loaded],
    jobs=[msd_partition_job, msd_totals_job, msd_additional_files_job],
    sensors=[msd_discovery_sensor, msd_totals_after_loads, msd_follow_upstream],
    resources=build_resources(),
    # Steps of a partition run one after another; parallelism comes from running
    # partitions concurrently, so per-step subprocesses would only add overhead.
    executor=dg.in_process_executor,
)


def partition_job() -> dg.JobDefinition:
    """The partition job, resolved; ``dg.reconstructable`` re-imports it in worker processes."""
    return defs.resolve_job_def(msd_partition_job.name)


def totals_job() -> dg.JobDefinition:
    return defs.resolve_job_def(msd_totals_job.name)


def additional_files_job() -> dg.JobDefinition:
    return defs.resolve_job_def(msd_additional_files_job.name)
