"""The environment variables msd-dagster reads, and the embedded defaults when none is set.

They are read when a resource is used, never when the definitions are imported: the code
location (and so every run's job snapshot) is the same whatever the environment, which is
what lets a run launched by ``msd-dagster load`` be re-executed from the UI as its own.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SAMPLE_SONGS = 300
DEFAULT_SAMPLE_SEED = 42

MSD_HOME = "MSD_HOME"
MSD_SOURCE = "MSD_SOURCE"
MSD_DATABASE_URL = "MSD_DATABASE_URL"
MSD_PARQUET_DIR = "MSD_PARQUET_DIR"
MSD_S3_ENDPOINT_URL = "MSD_S3_ENDPOINT_URL"
MSD_S3_UNSIGNED = "MSD_S3_UNSIGNED"
AWS_REGION = "AWS_REGION"
AZURE_SQL_VARIABLES = {
    "azure_server": "MSD_AZURE_SQL_SERVER",
    "azure_database": "MSD_AZURE_SQL_DATABASE",
    "azure_user": "MSD_AZURE_SQL_USER",
    "azure_password": "MSD_AZURE_SQL_PASSWORD",
    "azure_access_token": "MSD_AZURE_SQL_ACCESS_TOKEN",
    "azure_driver": "MSD_AZURE_SQL_DRIVER",
}
DEFAULT_AZURE_SQL_DRIVER = "ODBC Driver 18 for SQL Server"


def setting(configured: str | None, variable: str, default: str = "") -> str:
    """``configured`` if given, else the environment variable, else ``default``."""
    return configured or os.environ.get(variable, "") or default


def msd_home() -> Path:
    """Working folder for the default sample, the SQLite database and Parquet files."""
    return Path(os.environ.get(MSD_HOME, ".msd_data")).resolve()


def default_sample_root() -> Path:
    return msd_home() / "sample"


def default_database_url() -> str:
    return f"sqlite:///{msd_home() / 'msd.sqlite'}"


def default_parquet_dir() -> Path:
    return msd_home() / "parquet"


def default_profile_dir() -> Path:
    """Where the dataset profile's page and plots are written."""
    return msd_home() / "profile"
