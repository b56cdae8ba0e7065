"""SQL Server / Azure SQL URLs built from their parts (server, database, credentials).

The URL rules of a connection (access tokens, ODBC keywords) are the backend's
``engine_options`` in :mod:`msd_dagster.warehouse.dialects.mssql`.
"""

from __future__ import annotations

import importlib.util

import sqlalchemy as sa

__all__ = ["azure_sql_url", "preferred_mssql_driver"]


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
    the login timeout in seconds (``ConnectTimeout``, ODBC Driver >= 18.7; ``create_engine_for_url``
    also passes it to the driver's ``connect()``).

    Authentication, one of:

    * SQL login: ``user`` and ``password`` (or an Entra ID user with
      ``Authentication=ActiveDirectoryPassword`` added to the query by the caller);
    * Entra ID access token: ``access_token`` (e.g. from ``azure.identity``; scope
      ``https://database.windows.net/.default``), with neither user nor password. The token
      cannot go into the ODBC connection string: pyodbc must receive it as connection attribute
      1256 (``SQL_COPT_SS_ACCESS_TOKEN``) through
      ``connect_args={"attrs_before": {1256: token_struct}}`` — see
      ``azure_access_token_connect_args`` in this folder — and mssql-python as a
      ``token_provider``. The URL carries it in an ``accesstoken`` query parameter that
      :func:`msd_dagster.warehouse.urls.create_engine_for_url` removes and turns into those
      ``connect_args``, and that :func:`msd_dagster.secrets.mask_url` hides; do not pass such
      a URL to ``sqlalchemy.create_engine`` directly. Tokens expire (about an hour): build a
      new engine, or use a ``do_connect`` event that fetches a fresh token, for long runs.
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
