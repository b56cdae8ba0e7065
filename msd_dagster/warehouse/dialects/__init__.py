"""One module per database backend, behind the :class:`Backend` interface.

``backend_for(engine)`` resolves the backend of an engine once (engines made by
:func:`msd_dagster.warehouse.urls.create_engine_for_url` carry their options, e.g. the lock
timeout); ``backend_for_url(url)`` and :func:`catalog_kind` resolve it from a URL string
without connecting or importing a driver.

==============  ==============================  ============  =================================
backend         module                          catalog kind  bulk path
==============  ==============================  ============  =================================
SQLite          :mod:`.sqlite`                  sqlite        executemany
PostgreSQL      :mod:`.postgresql`              postgres      binary COPY (psycopg 3)
MySQL/MariaDB   :mod:`.mysql`                   mysql         LOAD DATA LOCAL INFILE / INSERTs
SQL Server      :mod:`.mssql`                   sqlserver     fast_executemany (pyodbc),
                                                              bulkcopy + VALUES (mssql-python)
==============  ==============================  ============  =================================
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Any

import sqlalchemy as sa

from msd_dagster.secrets import mask_text, split_userinfo
from msd_dagster.warehouse.dialects.base import (
    Backend,
    DatabaseEncodingError,
    LockErrorKind,
    PartitionLockTimeout,
    StagedCopy,
)
from msd_dagster.warehouse.dialects.mssql import SQLServerBackend
from msd_dagster.warehouse.dialects.mysql import MySQLBackend
from msd_dagster.warehouse.dialects.postgresql import PostgreSQLBackend
from msd_dagster.warehouse.dialects.sqlite import SQLiteBackend

BACKENDS: tuple[type[Backend], ...] = (
    SQLiteBackend,
    PostgreSQLBackend,
    MySQLBackend,
    SQLServerBackend,
)
_BY_DIALECT: dict[str, type[Backend]] = {n: b for b in BACKENDS for n in b.dialect_names}
_BY_DRIVER_PACKAGE: dict[str, type[Backend]] = {p: b for b in BACKENDS for p in b.driver_packages}
_ENGINE_BACKENDS: weakref.WeakKeyDictionary[sa.Engine, Backend] = weakref.WeakKeyDictionary()

__all__ = [
    "BACKENDS",
    "Backend",
    "DatabaseEncodingError",
    "LockErrorKind",
    "PartitionLockTimeout",
    "MySQLBackend",
    "PostgreSQLBackend",
    "SQLServerBackend",
    "SQLiteBackend",
    "UnsupportedDatabaseError",
    "supported_backend_class",
    "StagedCopy",
    "backend_class",
    "backend_for",
    "backend_for_url",
    "backend_of_error",
    "catalog_kind",
    "make_url",
    "register_engine",
]


def make_url(url: str | sa.URL) -> sa.URL:
    """``url`` parsed by SQLAlchemy, except that the password runs to the last ``@``: an
    unencoded ``@`` in it (``postgres:S3cret@PW@host/db``) stays in the password instead of
    becoming part of the host name (which a driver would then repeat in its errors)."""
    if isinstance(url, sa.URL):
        return url
    parts = split_userinfo(url)
    if parts is not None and parts.password and "@" in parts.password:
        url = f"{parts.scheme}{parts.user}:{parts.password.replace('@', '%40')}@{parts.rest}"
    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 - a bad port only fails when read
    except Exception as exc:
        raise ValueError(f"not a database URL: {mask_text(url)} ({type(exc).__name__})") from None
    return parsed


class UnsupportedDatabaseError(ValueError):
    """A database URL of a kind msd-dagster has no backend for."""


def supported_backend_class(url: str | sa.URL) -> type[Backend]:
    """The backend class of ``url``; :class:`UnsupportedDatabaseError` for an unknown kind."""
    parsed = make_url(url)
    cls = _BY_DIALECT.get(parsed.get_backend_name())
    if cls is None:
        kinds = ", ".join(f"{b.display_name} ({b.dialect_names[0]}://)" for b in BACKENDS)
        raise UnsupportedDatabaseError(
            f"unsupported database {parsed.get_backend_name()!r} ({mask_text(str(url))}); "
            f"supported are {kinds}"
        )
    return cls


def backend_class(dialect_name: str) -> type[Backend]:
    """The backend of a SQLAlchemy dialect name; the generic one for an unknown dialect."""
    return _BY_DIALECT.get(dialect_name, Backend)


def backend_for_url(url: str | sa.URL, **options: Any) -> Backend:
    """The backend of ``url`` (nothing connected, no driver imported), with the ``options``
    its class has as fields (``lock_timeout_s``, ``local_infile``, ``bulkcopy`` ...); options
    other backends have are ignored."""
    parsed = make_url(url)
    cls = backend_class(parsed.get_backend_name())
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in options.items() if k in fields and v is not None}
    return cls(driver=parsed.get_driver_name(), **given)


def catalog_kind(url: str | sa.URL) -> str:
    """Dagster's catalog kind of a database URL ("postgres", "sqlserver", "mysql", "sqlite"),
    without connecting; an Azure SQL URL built from parts (``azure_sql_url``) is "sqlserver"."""
    return backend_for_url(url).catalog_kind


@functools.cache
def _default_backend(dialect_name: str, driver: str) -> Backend:
    return backend_class(dialect_name)(driver=driver)


def register_engine(engine: sa.Engine, backend: Backend) -> None:
    """Make ``backend`` (with its options) the one ``backend_for`` returns for ``engine``."""
    _ENGINE_BACKENDS[engine] = backend


def backend_for(bind: sa.Engine | sa.Connection | sa.Dialect) -> Backend:
    """The backend of an engine, connection or dialect: the one registered for the engine by
    ``create_engine_for_url``, else the backend's defaults."""
    if isinstance(bind, sa.Dialect):
        dialect = bind
    else:
        engine = getattr(bind, "engine", bind)  # a Connection's engine
        if isinstance(engine, sa.Engine) and engine in _ENGINE_BACKENDS:
            return _ENGINE_BACKENDS[engine]
        dialect = bind.dialect
    return _default_backend(dialect.name, dialect.driver)


def backend_of_error(orig: BaseException) -> type[Backend] | None:
    """The backend whose DB-API driver raised ``orig`` (by the exception's package)."""
    package = type(orig).__module__.split(".", 1)[0]
    return _BY_DRIVER_PACKAGE.get(package)
