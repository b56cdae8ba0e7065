"""Database URLs: Azure SQL URLs, masking secrets for display, engines with dialect options.

Nothing here imports pyodbc at module import time: it is imported lazily by
:func:`create_engine_for_url` for ``mssql+pyodbc`` URLs only, because ``import pyodbc`` fails on
machines without the unixODBC library.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import sqlalchemy as sa

from msd_dagster.warehouse.ddl import DEFAULT_SQLITE_BUSY_TIMEOUT_S, install_sqlite_pragmas

# pyodbc connection attribute SQL_COPT_SS_ACCESS_TOKEN (msodbcsql.h).
SQL_COPT_SS_ACCESS_TOKEN = 1256
ACCESS_TOKEN_QUERY_KEYS = ("accesstoken", "access_token")
SECRET_QUERY_KEYS = frozenset({"pwd", "password", "accesstoken", "access_token", "token"})
MASK = "***"

_SECRET_IN_TEXT = re.compile(
    r"(?i)\b(pwd|password|accesstoken|access_token|token)(\s*=\s*)(\{(?:[^}]|\}\})*\}|[^;&]*)"
)
_SENTINEL = "MSDMASKEDSECRETSENTINEL"


class OdbcDriverMissingError(ImportError):
    """pyodbc (or the unixODBC library it links against) is not installed."""


def azure_access_token_connect_args(token: str) -> dict[str, Any]:
    """``connect_args`` passing an Entra ID access token to pyodbc / mssql-python.

    The ODBC driver wants the token as a length-prefixed UTF-16-LE byte string (the
    ``ACCESSTOKEN`` struct) in connection attribute 1256 (``SQL_COPT_SS_ACCESS_TOKEN``), set
    before connecting: ``create_engine(url, connect_args={"attrs_before": {1256: struct}})``.
    """
    if not token:
        raise ValueError("empty access token")
    encoded = token.encode("utf-16-le")
    token_struct = struct.pack(f"<I{len(encoded)}s", len(encoded), encoded)
    return {"attrs_before": {SQL_COPT_SS_ACCESS_TOKEN: token_struct}}


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
) -> sa.URL:
    """An ``mssql+pyodbc`` URL for Azure SQL Database (or any SQL Server).

    ``server``: ``name.database.windows.net``, optionally ``tcp:`` prefixed and with ``,port``
    (default 1433). Encryption is on and the certificate verified unless told otherwise.
    ``timeout`` is the login timeout in seconds (``ConnectTimeout``, ODBC Driver >= 18.7;
    :func:`create_engine_for_url` also passes it to pyodbc for older drivers).

    Authentication, one of:

    * SQL login: ``user`` and ``password`` (or an Entra ID user with
      ``Authentication=ActiveDirectoryPassword`` added to the query by the caller);
    * Entra ID access token: ``access_token`` (e.g. from ``azure.identity``; scope
      ``https://database.windows.net/.default``), with neither user nor password. The token
      cannot go into the ODBC connection string: pyodbc must receive it as connection attribute
      1256 (``SQL_COPT_SS_ACCESS_TOKEN``) through
      ``connect_args={"attrs_before": {1256: token_struct}}`` — see
      :func:`azure_access_token_connect_args`. The URL carries it in an ``accesstoken`` query
      parameter that :func:`create_engine_for_url` removes and turns into those
      ``connect_args``, and that :func:`mask_url` hides; do not pass such a URL to
      ``sqlalchemy.create_engine`` directly. Tokens expire (about an hour): build a new engine,
      or use a ``do_connect`` event that fetches a fresh token, for long runs.
    """
    if access_token and (user or password):
        raise ValueError("give either user/password or access_token, not both")
    host, port = _split_server(server)
    query: dict[str, str] = {
        "driver": driver,
        "Encrypt": "yes" if encrypt else "no",
        "TrustServerCertificate": "yes" if trust_server_certificate else "no",
        "ConnectTimeout": str(int(timeout)),
    }
    if access_token:
        query["accesstoken"] = access_token
    return sa.URL.create(
        "mssql+pyodbc",
        username=user or None,
        password=password or None,
        host=host,
        port=port or 1433,
        database=database,
        query=query,
    )


# user:password@ in a URL that SQLAlchemy could not parse (e.g. a bad port).
_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")


def _mask_text(text: str) -> str:
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    return _SECRET_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def mask_url(url: str | sa.URL) -> str:
    """``url`` rendered for display with its password and secret query values shown as ``***``.

    Covers the URL password, ``pwd=`` / ``password=`` / ``accesstoken=`` query parameters and
    the same keys inside an ``odbc_connect`` string; text that is not a URL (a raw ODBC
    connection string) is masked by pattern.
    """
    try:
        parsed = sa.make_url(url) if isinstance(url, str) else url
        parsed.port  # noqa: B018 - a bad port only fails when read
    except Exception:
        return _mask_text(str(url))
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parsed.query.items():
        if key.lower() in SECRET_QUERY_KEYS:
            query[key] = _SENTINEL
        elif key.lower() == "odbc_connect":
            values = value if isinstance(value, tuple) else (value,)
            masked = tuple(_mask_text(unquote_plus(v)) for v in values)
            query[key] = masked if isinstance(value, tuple) else masked[0]
        else:
            query[key] = value
    if parsed.password is not None:
        parsed = parsed.set(password=_SENTINEL)
    rendered = parsed.set(query=query).render_as_string(hide_password=False)
    return rendered.replace(_SENTINEL, MASK)


def _import_pyodbc() -> Any:
    import pyodbc  # noqa: PLC0415 - deliberately lazy

    return pyodbc


def _require_pyodbc(driver_name: str | None) -> None:
    try:
        pyodbc = _import_pyodbc()
    except ImportError as exc:
        detail = str(exc)
        if "pyodbc" in detail and "No module named" in detail:
            cause = "the pyodbc package is not installed (pip install pyodbc)"
        else:
            cause = f"pyodbc cannot load the unixODBC library ({detail})"
        raise OdbcDriverMissingError(
            f"mssql+pyodbc: {cause}. Install the ODBC driver manager and Microsoft ODBC Driver "
            "18 for SQL Server - on Debian/Ubuntu add Microsoft's package repository "
            "(https://learn.microsoft.com/sql/connect/odbc/linux-mac/installing-the-microsoft-"
            "odbc-driver-for-sql-server), then `sudo ACCEPT_EULA=Y apt-get install -y "
            "msodbcsql18 unixodbc` - or use an mssql+mssqlpython:// URL "
            "(pip install mssql-python), whose driver needs no system ODBC installation."
        ) from exc
    if driver_name:
        installed = list(pyodbc.drivers())
        if driver_name not in installed:
            raise OdbcDriverMissingError(
                f"mssql+pyodbc: ODBC driver {driver_name!r} is not installed (installed: "
                f"{installed or 'none'}). On Debian/Ubuntu: `sudo ACCEPT_EULA=Y apt-get install -y "
                "msodbcsql18` from Microsoft's package repository, or use mssql+mssqlpython://."
            )


def _pop_query(url: sa.URL, keys: tuple[str, ...]) -> tuple[sa.URL, str | None]:
    found = None
    remaining: dict[str, Any] = {}
    for key, value in url.query.items():
        if key.lower() in keys:
            found = value[-1] if isinstance(value, tuple) else value
        else:
            remaining[key] = value
    return url.set(query=remaining), found


def create_engine_for_url(
    url: str | sa.URL,
    *,
    mysql_local_infile: bool = True,
    sqlite_busy_timeout_s: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S,
    **pool_options: Any,
) -> sa.Engine:
    """A SQLAlchemy engine with the options each dialect needs for correct, fast loading.

    * every dialect: ``pool_pre_ping`` (a connection killed by the server or a failover is
      replaced instead of failing the next load);
    * ``mssql+pyodbc``: ``fast_executemany``; pyodbc is imported here, and a missing unixODBC
      library or ODBC driver raises :class:`OdbcDriverMissingError` saying what to install; an
      ``accesstoken`` query parameter becomes ``attrs_before`` (see :func:`azure_sql_url`);
    * MySQL/MariaDB: ``charset=utf8mb4`` (refuses another charset), strict SQL mode (bad data
      is an error, not a warning with a silently changed value), ``pool_recycle`` below the
      server's ``wait_timeout``, and ``local_infile`` so the loader can use LOAD DATA LOCAL
      INFILE (2x faster). ``mysql_local_infile=False`` turns the latter off: a malicious server
      could ask a local-infile client for any readable file, so only enable it for servers you
      trust;
    * SQLite: busy timeout, foreign keys, WAL
      (:func:`~msd_dagster.warehouse.ddl.install_sqlite_pragmas`).

    ``pool_options`` go to :func:`sqlalchemy.create_engine` (``pool_size``, ``pool_recycle``,
    ``connect_args``, ``echo`` ...).
    """
    parsed = sa.make_url(url) if isinstance(url, str) else url
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    options: dict[str, Any] = {"pool_pre_ping": True, **pool_options}
    connect_args: dict[str, Any] = dict(options.pop("connect_args", None) or {})

    if backend == "mssql":
        parsed, token = _pop_query(parsed, ACCESS_TOKEN_QUERY_KEYS)
        if driver == "pyodbc":
            _require_pyodbc(_query_value(parsed.query, "driver"))
            options.setdefault("fast_executemany", True)
            timeout = _query_value(parsed.query, "ConnectTimeout")
            if timeout and "timeout" not in connect_args:
                connect_args["timeout"] = int(timeout)
        if token:
            attrs = dict(connect_args.get("attrs_before") or {})
            attrs.update(azure_access_token_connect_args(token)["attrs_before"])
            connect_args["attrs_before"] = attrs
    elif backend in ("mysql", "mariadb"):
        charset = _query_value(parsed.query, "charset")
        if charset is None:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        elif charset.lower() != "utf8mb4":
            raise ValueError(
                f"charset={charset} cannot store every character of the dataset; use utf8mb4"
            )
        options.setdefault("pool_recycle", 3600)
        if driver in ("pymysql", "mysqldb"):
            connect_args.setdefault("local_infile", mysql_local_infile)
            connect_args.setdefault(
                "init_command",
                "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', "
                "CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))",
            )
    elif backend == "sqlite":
        connect_args.setdefault("timeout", sqlite_busy_timeout_s)

    if connect_args:
        options["connect_args"] = connect_args
    engine = sa.create_engine(parsed, **options)
    if backend == "sqlite":
        install_sqlite_pragmas(engine, busy_timeout_s=sqlite_busy_timeout_s)
    return engine


def _query_value(query: Mapping[str, Any], key: str) -> str | None:
    for k, v in query.items():
        if k.lower() == key.lower():
            return v[-1] if isinstance(v, tuple) else v
    return None
