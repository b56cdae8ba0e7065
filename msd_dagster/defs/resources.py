"""Resources: where the song files are (local folder or S3), which database to load, and where
the normalized frames are kept.

Every field left empty falls back to its environment variable when the resource is used (see
:mod:`msd_dagster.settings`), so the definitions never depend on the environment.

Not ``dg.EnvVar``: every variable here is optional with an embedded default, and in Dagster
1.13 a field set to an unset ``dg.EnvVar`` fails the run's config (``dagster/_config/source.py``),
while a resource built outside a run (the CLI) sees the variable's name, not its value. Like
``dg.EnvVar``, the empty fields keep every value out of the snapshot and resolve at run time.
"""

import contextlib
import fcntl
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource
from pydantic import Field

from msd_dagster import settings
from msd_dagster.frame_store import FrameStore
from msd_dagster.secrets import error_line, mask_text, mask_url, url_secrets
from msd_dagster.source.local import LocalDataset
from msd_dagster.source.s3 import S3Dataset, S3SourceError, make_s3_client, parse_s3_url
from msd_dagster.warehouse.dialects import catalog_kind
from msd_dagster.warehouse.dialects.mssql.urls import azure_sql_url
from msd_dagster.warehouse.transactions import is_transient_database_error
from msd_dagster.warehouse.urls import create_engine_for_url, database_folder


class MsdS3Resource(S3Resource):
    """dagster-aws's ``S3Resource`` whose clients also get the timeouts, connection pool and
    retry mode of :func:`msd_dagster.source.s3.s3_client_config` (reading many small objects
    from a thread pool needs a pool as large as the number of reader threads).

    Credentials are deliberately not configured here: they come from the environment or the
    standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, SSO,
    instance or container role), so they never appear in code, run config or the UI.
    """

    connect_timeout: float = Field(default=10, description="Seconds to wait for a connection.")
    read_timeout: float = Field(default=60, description="Seconds to wait for response bytes.")
    max_pool_connections: int = Field(default=32, description="HTTP connections per client.")
    retry_mode: str = Field(
        default="standard", description="botocore retry mode: standard, adaptive or legacy."
    )

    def get_client(self) -> Any:
        return s3_client_for(self)


def s3_client_for(s3: S3Resource) -> Any:
    """A new boto3 S3 client for an ``S3Resource`` (plain or :class:`MsdS3Resource`), built by
    :func:`msd_dagster.source.s3.make_s3_client`.

    Same settings as ``S3Resource.get_client()`` (endpoint, region, profile, SSL, unsigned
    access, ``max_attempts``) plus retries, timeouts and a pool sized for the concurrent
    readers. Empty endpoint, region and unsigned access fall back to ``MSD_S3_ENDPOINT_URL``,
    ``AWS_REGION`` and ``MSD_S3_UNSIGNED``. Explicit keys are passed only when someone
    configured them; otherwise boto3 resolves them itself through the standard chain.
    """
    explicit = {
        name: value
        for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
        if (value := getattr(s3, name, None))
    }
    return make_s3_client(
        endpoint_url=settings.setting(s3.endpoint_url, settings.MSD_S3_ENDPOINT_URL) or None,
        region_name=settings.setting(s3.region_name, settings.AWS_REGION) or None,
        unsigned=s3.use_unsigned_session or os.environ.get(settings.MSD_S3_UNSIGNED) == "1",
        max_attempts=s3.max_attempts,
        profile_name=s3.profile_name,
        max_pool_connections=getattr(s3, "max_pool_connections", 32),
        retry_mode=getattr(s3, "retry_mode", "standard"),
        connect_timeout=getattr(s3, "connect_timeout", 10),
        read_timeout=getattr(s3, "read_timeout", 60),
        use_ssl=s3.use_ssl,
        verify=s3.verify,
        credentials=explicit,
    )


class MsdSourceResource(dg.ConfigurableResource):
    """The MSD dataset root: a local folder, or ``s3://bucket/prefix`` read through ``s3``
    (a dagster-aws ``S3Resource``; :class:`MsdS3Resource` adds timeouts and pool size).

    Empty ``location``: ``MSD_SOURCE``, else the embedded default, a generated sample under
    ``MSD_HOME`` written on first use.
    """

    location: str = Field(
        default="", description="Dataset root: a folder or s3://bucket/prefix. Empty: MSD_SOURCE."
    )
    sample_songs: int = settings.DEFAULT_SAMPLE_SONGS
    # Optional: a nested resource cannot be a field default in Dagster 1.13 (validation fails
    # with "Input should be ... an instance of S3Resource"); None means MsdS3Resource().
    s3: S3Resource | None = None

    @property
    def resolved_location(self) -> str:
        return settings.setting(self.location, settings.MSD_SOURCE)

    @property
    def is_s3(self) -> bool:
        return self.resolved_location.startswith("s3://")

    def dataset(self) -> LocalDataset | S3Dataset:
        """A dataset handle; for S3 it holds one new boto3 client, so build it once per step.

        For S3 the bucket and prefix are checked first (one cheap listing): a missing bucket,
        a prefix without ``data/`` or denied access raise ``dg.Failure`` with
        ``allow_retries=False`` naming the bucket and prefix, so the step fails at once
        instead of going through its retry policy. Transient faults that survived botocore's
        retries raise ``S3SourceError``, which the step's RetryPolicy retries.
        """
        location = self.resolved_location
        if location.startswith("s3://"):
            bucket, prefix = parse_s3_url(location)
            dataset = S3Dataset(s3_client_for(self.s3 or MsdS3Resource()), bucket, prefix)
            try:
                dataset.check()
            except S3SourceError as exc:
                if exc.permanent:
                    raise dg.Failure(description=str(exc), allow_retries=False) from exc
                raise
            return dataset
        if location:
            return LocalDataset(location)
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

    Empty fields are read from ``MSD_DATABASE_URL`` and ``MSD_AZURE_SQL_*`` when used; with
    none set, the embedded default is a SQLite file under ``MSD_HOME``. The URL is shown
    masked everywhere (logs, metadata).
    """

    url: str = Field(default="", description="SQLAlchemy URL. Empty: MSD_DATABASE_URL.")
    azure_server: str = Field(default="", description="Empty: MSD_AZURE_SQL_SERVER.")
    azure_database: str = Field(default="", description="Empty: MSD_AZURE_SQL_DATABASE.")
    azure_user: str = Field(default="", description="Empty: MSD_AZURE_SQL_USER.")
    azure_password: str = Field(default="", description="Empty: MSD_AZURE_SQL_PASSWORD.")
    azure_access_token: str = Field(default="", description="Empty: MSD_AZURE_SQL_ACCESS_TOKEN.")
    azure_driver: str = Field(default="", description="Empty: MSD_AZURE_SQL_DRIVER, else ODBC 18.")
    pool_size: int = 5
    pool_recycle_seconds: int = 1800

    def _azure(self, field: str) -> str:
        # Parts configured on the resource are used together; else all come from the variables.
        if self.azure_server:
            return getattr(self, field)
        return os.environ.get(settings.AZURE_SQL_VARIABLES[field], "")

    def sqlalchemy_url(self) -> str | sa.URL:
        """Configured ``url``, else configured Azure parts, else ``MSD_DATABASE_URL``, else the
        ``MSD_AZURE_SQL_*`` parts, else SQLite under ``MSD_HOME``."""
        url = self.url or ("" if self.azure_server else os.environ.get(settings.MSD_DATABASE_URL))
        if url:
            return url
        if self._azure("azure_server"):
            return azure_sql_url(
                self._azure("azure_server"),
                self._azure("azure_database"),
                self._azure("azure_user") or None,
                self._azure("azure_password") or None,
                driver=self._azure("azure_driver") or settings.DEFAULT_AZURE_SQL_DRIVER,
                access_token=self._azure("azure_access_token") or None,
            )
        return settings.default_database_url()

    @property
    def password(self) -> str:
        """The Azure SQL password, if one is used (to mask it in messages)."""
        return self._azure("azure_password")

    def engine(self) -> sa.Engine:
        return _engine(
            self.sqlalchemy_url(),
            pool_size=self.pool_size,
            pool_recycle=self.pool_recycle_seconds,
        )

    def display_url(self) -> str:
        return mask_url(self.sqlalchemy_url())

    def without_secrets(self, text: str) -> str:
        """``text`` with the database's secrets (and any ``user:password@`` part) masked."""
        try:
            known = url_secrets(self.sqlalchemy_url())
        except Exception:  # noqa: BLE001 - an unparsable URL: mask_text still hides userinfo
            known = []
        return mask_text(text, known=[*known, self.password])

    def describe_error(self, exc: BaseException) -> str:
        """One masked line for a database error: ``Type: first line of the driver's text``."""
        return self.without_secrets(error_line(exc))

    @contextlib.contextmanager
    def errors_without_secrets(self) -> Iterator[None]:
        """Database errors inside leave as a ``dg.Failure`` with a masked description, not
        chained to the driver's exception (whose text the event log would keep)."""
        try:
            yield
        except dg.Failure:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised, masked
            raise dg.Failure(
                description=self.describe_error(exc),
                allow_retries=is_transient_database_error(exc),
            ) from None

    def catalog_kind(self) -> str:
        """The database's kind as the catalog shows it (``postgres``, ``sqlserver`` ...)."""
        return catalog_kind(self.sqlalchemy_url())


class FrameStoreResource(dg.ConfigurableResource):
    """Where the normalized frames are kept (:class:`msd_dagster.frame_store.FrameStore`)."""

    base_dir: str = Field(
        default="", description="A folder. Empty: MSD_PARQUET_DIR, else $MSD_HOME/parquet."
    )

    def store(self) -> FrameStore:
        base = settings.setting(self.base_dir, settings.MSD_PARQUET_DIR)
        return FrameStore(base or settings.default_parquet_dir())


@functools.cache
def _engine(url: str | sa.URL, **pool_options: int) -> sa.Engine:
    # One engine (and pool) per process and URL: steps of the same process share it.
    if (folder := database_folder(url, settings.msd_home())) is not None and folder.creatable:
        folder.path.mkdir(parents=True, exist_ok=True)
    return create_engine_for_url(url, **pool_options)
