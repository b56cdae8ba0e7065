"""Embedded defaults: what runs when no environment variable is set."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SAMPLE_SONGS = 300
DEFAULT_SAMPLE_SEED = 42


def msd_home() -> Path:
    """Working folder for the default sample, the SQLite database and Parquet files."""
    return Path(os.environ.get("MSD_HOME", ".msd_data")).resolve()


def default_sample_root() -> Path:
    return msd_home() / "sample"


def default_database_url() -> str:
    return f"sqlite:///{msd_home() / 'msd.sqlite'}"


def default_parquet_dir() -> Path:
    return msd_home() / "parquet"
