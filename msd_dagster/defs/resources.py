"""Resources: where the song files are (local folder or S3) and which database to load."""

import fcntl
import functools
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from msd_dagster import settings
from msd_dagster.source.local import LocalDataset
from msd_dagster.source.s3 import S3Dataset, parse_s3_url
from msd_dagster.warehouse.urls import azure_sql_url, create_engine_for_url, mask_url


class MsdSourceResource(dg.ConfigurableResource):
    """The MSD dataset root: a local folder, or ``s3://bucket/prefix`` read through ``s3``.

    Empty ``location`` means the embedded default: a generated sample under ``MSD_HOME``,
    written on first use.
    """

    location: str = ""
    sample_songs: int = settings.DEFAULT_SAMPLE_SONGS
    s3: S3Resource = S3Resource()

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def dataset(self) -> LocalDataset | S3Dataset:
        """A dataset handle; for S3 it holds one new boto3 client, so build it once per step."""
        if self.is_s3:
            bucket, prefix = parse_s3_url(self.location)
            return S3Dataset(self.s3.get_client(), bucket, prefix)
        if self.location:
            return LocalDataset(self.location)
        return LocalDataset(ensure_default_sample(self.sample_songs))


def ensure_default_sample(songs: int = settings.DEFAULT_SAMPLE_SONGS) -> Path:
    """Generate the default sample once; a file lock keeps concurrent runs from racing."""
    root = settings.default_sample_root()
    marker = root / ".complete"
    if marker.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".sample.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            from msd_dagster.generate import generate_dataset

            generate_dataset(
                root,
                songs,
                seed=settings.DEFAULT_SAMPLE_SEED,
                folders=["A/A", "A/B", "B/A"],
                additional_files=True,
            )
            marker.write_text(f"{songs} songs, seed {settings.DEFAULT_SAMPLE_SEED}\n")
    return root


class WarehouseResource(dg.ConfigurableResource):
    """The SQL database, as a SQLAlchemy URL or, for Azure SQL, as its parts.

    Empty ``url`` and ``azure_server`` mean the embedded default: a SQLite file under
    ``MSD_HOME``. The URL is shown masked everywhere (logs, metadata).
    """

    url: str = ""
    azure_server: str = ""
    azure_database: str = ""
    azure_user: str = ""
    azure_password: str = ""
    azure_driver: str = "ODBC Driver 18 for SQL Server"
    pool_size: int = 5
    pool_recycle_seconds: int = 1800

    def sqlalchemy_url(self) -> str | sa.URL:
        if self.url:
            return self.url
        if self.azure_server:
            return azure_sql_url(
                self.azure_server,
                self.azure_database,
                self.azure_user or None,
                self.azure_password or None,
                driver=self.azure_driver,
            )
        return settings.default_database_url()

    def engine(self) -> sa.Engine:
        return _engine(
            self.sqlalchemy_url(),
            pool_size=self.pool_size,
            pool_recycle=self.pool_recycle_seconds,
        )

    def display_url(self) -> str:
        return mask_url(self.sqlalchemy_url())


@functools.cache
def _engine(url: str | sa.URL, **pool_options: int) -> sa.Engine:
    # One engine (and pool) per process and URL: steps of the same process share it.
    if isinstance(url, str) and url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine_for_url(url, **pool_options)
