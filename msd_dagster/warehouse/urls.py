"""Database engines with each backend's options, and where a file database lives.

Nothing here imports a driver at module import time: a backend imports its driver (pyodbc for
``mssql+pyodbc``) when its engine is created, because ``import pyodbc`` fails on machines
without the unixODBC library. Masking is :mod:`msd_dagster.secrets`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from msd_dagster.warehouse.dialects import (
    backend_for_url,
    make_url,
    register_engine,
    split_backend_options,
    supported_backend_class,
)

__all__ = [
    "DatabaseFolder",
    "create_engine_for_url",
    "database_folder",
]


def create_engine_for_url(
    url: str | sa.URL, *, lock_timeout_s: float | None = None, **options: Any
) -> sa.Engine:
    """A SQLAlchemy engine with the options its backend needs for correct, fast loading.

    * every backend: ``pool_pre_ping`` (a connection killed by the server or a failover is
      replaced instead of failing the next load), and a lock timeout: a statement waits at
      most ``lock_timeout_s`` for a lock another session holds, then fails with a lock
      timeout that loads retry (default per backend: 60 s; SQLite's busy timeout 300 s);
    * the backend's own engine options and URL rules (``Backend.engine_options`` and
      ``configure_engine`` in its folder under :mod:`msd_dagster.warehouse.dialects`: e.g.
      MySQL's utf8mb4 and strict mode, SQLite's pragmas, an Azure SQL access token);
    * backend options, named after their backend (:func:`split_backend_options`):
      ``mysql_local_infile=False`` turns LOAD DATA LOCAL INFILE off (a malicious server could
      ask a local-infile client for any readable file: only keep it on for servers you
      trust), ``mssql_bulkcopy=False`` keeps mssql-python's analysis rows on multi-row
      INSERTs; those of other backends are ignored.

    An unencoded ``@`` in the password is kept in it (:func:`make_url`). The other
    ``options`` go to :func:`sqlalchemy.create_engine` (``pool_size``, ``pool_recycle``,
    ``connect_args``, ``echo`` ...).
    """
    parsed = make_url(url)
    supported_backend_class(parsed)  # an unknown kind is refused before any driver is imported
    backend_options, pool_options = split_backend_options(options)
    backend = backend_for_url(parsed, lock_timeout_s=lock_timeout_s, **backend_options)
    engine_options: dict[str, Any] = {"pool_pre_ping": True, **pool_options}
    connect_args: dict[str, Any] = dict(engine_options.pop("connect_args", None) or {})
    parsed = backend.engine_options(parsed, engine_options, connect_args)
    if connect_args:
        engine_options["connect_args"] = connect_args
    engine = sa.create_engine(parsed, **engine_options)
    backend.configure_engine(engine)
    register_engine(engine, backend)
    return engine


class DatabaseFolder(NamedTuple):
    """The local folder of a file database, and whether it may be created."""

    path: Path
    creatable: bool


def database_folder(url: str | sa.URL, default_root: Path) -> DatabaseFolder | None:
    """The folder a file database (SQLite) of ``url`` lives in, and whether it may be created:
    only under ``default_root`` (where the default database lives); a URL's own folder must
    exist (a mistyped one must not create folders elsewhere, e.g. at the file system's root).
    None for a server database, or a URL that is none."""
    try:
        parsed = make_url(url)
    except ValueError:
        return None  # connecting reports it
    folder = backend_for_url(parsed).database_folder(parsed)
    if folder is None:
        return None
    return DatabaseFolder(folder, folder.resolve().is_relative_to(default_root))
