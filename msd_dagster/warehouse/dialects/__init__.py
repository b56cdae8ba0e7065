"""The database backends: one folder each, registered once in :data:`BACKENDS`.

A backend's folder holds everything that differs for it, behind the :class:`Backend`
interface (:mod:`.base`): its column types and table options (which the table definitions of
:mod:`msd_dagster.warehouse.schema` ask every registered backend for), whether its types are
part of the schema fingerprint, its engine options and URL rules, its bulk path, upserts,
locks and lock errors. Adding a backend is a new folder and its entry in :data:`BACKENDS`.

``backend_for(engine)`` resolves the backend of an engine once (engines made by
:func:`msd_dagster.warehouse.urls.create_engine_for_url` carry their options, e.g. the lock
timeout); ``backend_for_url(url)`` and :func:`catalog_kind` resolve it from a URL string
without connecting or importing a driver.

==============  ==============================  ============  =================================
backend         folder                          catalog kind  bulk path
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
from collections.abc import Mapping
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

# The registry: the one place that names every backend.
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
    "split_backend_options",
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


def split_backend_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(backend options, the others)``: a backend option is named after a registered
    backend, ``<name>_<field>`` (``mysql_local_infile``, ``mssql_bulkcopy``), like SQLAlchemy's
    dialect-prefixed keywords; a field that backend does not have is a :class:`TypeError`."""
    by_prefix = {f"{b.name}_": b for b in BACKENDS}
    backend_options: dict[str, Any] = {}
    others: dict[str, Any] = {}
    for key, value in options.items():
        owner = next((b for p, b in by_prefix.items() if key.startswith(p)), None)
        if owner is None:
            others[key] = value
            continue
        if key.removeprefix(f"{owner.name}_") not in _own_fields(owner):
            raise TypeError(f"{owner.display_name} has no option {key!r}")
        backend_options[key] = value
    return backend_options, others


def _own_fields(cls: type[Backend]) -> set[str]:
    """The options a backend adds to those every backend has (driver, lock timeout)."""
    return {f.name for f in dataclasses.fields(cls)} - {f.name for f in dataclasses.fields(Backend)}


def backend_for_url(
    url: str | sa.URL, *, lock_timeout_s: float | None = None, **options: Any
) -> Backend:
    """The backend of ``url`` (nothing connected, no driver imported), with its options: the
    lock timeout, and the backend options (:func:`split_backend_options`) named after it;
    those of other backends are ignored. An option given as None keeps its default."""
    parsed = make_url(url)
    cls = backend_class(parsed.get_backend_name())
    _, others = split_backend_options(options)  # a misspelt option fails whatever the URL
    if others:
        raise TypeError(f"not backend options: {', '.join(others)}")
    prefix = f"{cls.name}_"
    given = {
        k.removeprefix(prefix): v
        for k, v in options.items()
        if k.startswith(prefix) and v is not None
    }
    return cls(driver=parsed.get_driver_name(), lock_timeout_s=lock_timeout_s, **given)


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
