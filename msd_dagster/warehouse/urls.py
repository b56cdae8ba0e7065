"""Database URLs and engines: Azure SQL URLs, engines with each backend's options, masking.

Nothing here imports pyodbc at module import time: it is imported by
:func:`create_engine_for_url` for ``mssql+pyodbc`` URLs only, because ``import pyodbc`` fails on
machines without the unixODBC library. Masking is :mod:`msd_dagster.secrets`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import sqlalchemy as sa

from msd_dagster.warehouse.dialects import (
    backend_for_url,
    make_url,
    register_engine,
    supported_backend_class,
)

__all__ = [
    "azure_sql_url",
    "create_engine_for_url",
    "preferred_mssql_driver",
]


def _split_server(server: str) -> tuple[str, int | None]:
    host = server.strip()
    if host.lower().startswith("tcp:"):
        host = host[4:]
    port: int | None = None
    for separator in (",", ":"):
        if separator in host:
            host, _, port_text = host.rpartition(separator)
            port = int(port_text)
            break
    return host, port


def preferred_mssql_driver() -> str:
    """``mssqlpython`` when mssql-python is installed (``pip install '.[mssql]'``: bulk copy,
    no system ODBC needed), else ``pyodbc``."""
    return "mssqlpython" if importlib.util.find_spec("mssql_python") else "pyodbc"


def azure_sql_url(
    server: str,
    database: str,
    user: str | None = None,
    password: str | None = None,
    *,
    driver: str = "ODBC Driver 18 for SQL Server",
    access_token: str | None = None,
    encrypt: bool = True,
    trust_server_certificate: bool = False,
    timeout: int = 30,
    python_driver: str | None = None,
) -> sa.URL:
    """An ``mssql+pyodbc`` or ``mssql+mssqlpython`` URL for Azure SQL Database (or any SQL
    Server).

    ``python_driver``: ``"pyodbc"`` (ODBC driver ``driver``, e.g. msodbcsql18) or
    ``"mssqlpython"``; None picks :func:`preferred_mssql_driver`. ``server``:
    ``name.database.windows.net``, optionally ``tcp:`` prefixed and with ``,port`` (default
    1433). Encryption is on and the certificate verified unless told otherwise. ``timeout`` is
    the login timeout in seconds (``ConnectTimeout``, ODBC Driver >= 18.7;
    :func:`create_engine_for_url` also passes it to the driver's ``connect()``).

    Authentication, one of:

    * SQL login: ``user`` and ``password`` (or an Entra ID user with
      ``Authentication=ActiveDirectoryPassword`` added to the query by the caller);
    * Entra ID access token: ``access_token`` (e.g. from ``azure.identity``; scope
      ``https://database.windows.net/.default``), with neither user nor password. The token
      cannot go into the ODBC connection string: pyodbc must receive it as connection attribute
      1256 (``SQL_COPT_SS_ACCESS_TOKEN``) through
      ``connect_args={"attrs_before": {1256: token_struct}}`` — see
      :func:`azure_access_token_connect_args` — and mssql-python as a ``token_provider``. The
      URL carries it in an ``accesstoken`` query parameter that :func:`create_engine_for_url`
      removes and turns into those ``connect_args``, and that :func:`mask_url` hides; do not
      pass such a URL to ``sqlalchemy.create_engine`` directly. Tokens expire (about an hour):
      build a new engine, or use a ``do_connect`` event that fetches a fresh token, for long
      runs.
    """
    if access_token and (user or password):
        raise ValueError("give either user/password or access_token, not both")
    python_driver = python_driver or preferred_mssql_driver()
    if python_driver not in ("pyodbc", "mssqlpython"):
        raise ValueError(f"python_driver must be pyodbc or mssqlpython, not {python_driver!r}")
    host, port = _split_server(server)
    query: dict[str, str] = {
        "Encrypt": "yes" if encrypt else "no",
        "TrustServerCertificate": "yes" if trust_server_certificate else "no",
        "ConnectTimeout": str(int(timeout)),
    }
    if python_driver == "pyodbc":
        query["driver"] = driver
    if access_token:
        query["accesstoken"] = access_token
    return sa.URL.create(
        f"mssql+{python_driver}",
        username=user or None,
        password=password or None,
        host=host,
        port=port or 1433,
        database=database,
        query=query,
    )


def create_engine_for_url(
    url: str | sa.URL,
    *,
    lock_timeout_s: float | None = None,
    mysql_local_infile: bool = True,
    mssql_bulkcopy: bool = True,
    **pool_options: Any,
) -> sa.Engine:
    """A SQLAlchemy engine with the options its backend needs for correct, fast loading.

    * every backend: ``pool_pre_ping`` (a connection killed by the server or a failover is
      replaced instead of failing the next load), and a lock timeout: a statement waits at
      most ``lock_timeout_s`` for a lock another session holds, then fails with a lock
      timeout that loads retry (default per backend: 60 s; SQLite's busy timeout 300 s);
    * ``mssql+pyodbc``: ``fast_executemany``; pyodbc is imported here, and a missing unixODBC
      library or ODBC driver raises :class:`OdbcDriverMissingError` saying what to install; an
      ``accesstoken`` query parameter becomes ``attrs_before`` (see :func:`azure_sql_url`);
    * ``mssql+mssqlpython``: partition loads bulk-copy analysis rows (``mssql_bulkcopy=False``
      keeps them on multi-row INSERTs); an access token becomes a ``token_provider``;
    * MySQL/MariaDB: ``charset=utf8mb4`` (refuses another charset), strict SQL mode (bad data
      is an error, not a warning with a silently changed value), ``pool_recycle`` below the
      server's ``wait_timeout``, and ``local_infile`` so the loader can use LOAD DATA LOCAL
      INFILE (2x faster). ``mysql_local_infile=False`` turns the latter off: a malicious server
      could ask a local-infile client for any readable file, so only enable it for servers you
      trust;
    * SQLite: busy timeout, foreign keys, WAL
      (:func:`~msd_dagster.warehouse.dialects.sqlite.install_sqlite_pragmas`).

    An unencoded ``@`` in the password is kept in it (:func:`make_url`). ``pool_options`` go
    to :func:`sqlalchemy.create_engine` (``pool_size``, ``pool_recycle``, ``connect_args``,
    ``echo`` ...).
    """
    parsed = make_url(url)
    supported_backend_class(parsed)  # an unknown kind is refused before any driver is imported
    backend = backend_for_url(
        parsed,
        lock_timeout_s=lock_timeout_s,
        local_infile=mysql_local_infile,
        bulkcopy=mssql_bulkcopy,
    )
    options: dict[str, Any] = {"pool_pre_ping": True, **pool_options}
    connect_args: dict[str, Any] = dict(options.pop("connect_args", None) or {})
    parsed = backend.engine_options(parsed, options, connect_args)
    if connect_args:
        options["connect_args"] = connect_args
    engine = sa.create_engine(parsed, **options)
    backend.configure_engine(engine)
    register_engine(engine, backend)
    return engine
