"""pytest plugin: real databases for the warehouse tests.

Register with ``pytest_plugins = ["msd_dagster_tests.db_fixtures"]`` in conftest.py.

* ``server_database`` (session): ``server_database("postgresql" | "mariadb")`` gives a
  ``ServerDatabase`` (URL and engine) on a fresh database with a random name on the local
  server, made on first use and dropped at the end of the session; the test asking is skipped,
  with the reason, when the server is unreachable. Admin URLs: ``MSD_TEST_POSTGRES_URL``
  (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) and
  ``MSD_TEST_MARIADB_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/``).
* ``fresh_database``: the same fresh database as a context manager, for other prefixes/scopes.
* ``engine`` (per test, parametrized over sqlite / postgresql / mariadb): an engine whose
  ``msd_*`` tables are as defined and empty (recreated with drop_all + ``ensure_schema`` when a
  previous test altered them, else emptied). SQLite: a new file in ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from msd_dagster.secrets import mask_url
from msd_dagster.warehouse.ddl import (
    SchemaMismatchError,
    drop_schema,
    ensure_schema,
    warehouse_table,
)
from msd_dagster.warehouse.schema import MSD_TABLES
from msd_dagster.warehouse.urls import create_engine_for_url


@dataclass(frozen=True)
class Server:
    """A local database server the tests make their own databases on."""

    label: str
    admin_url: str
    create_options: str  # after CREATE DATABASE <name>
    drop_options: str  # after DROP DATABASE IF EXISTS <name>


SERVERS = {
    "postgresql": Server(
        "PostgreSQL",
        os.environ.get(
            "MSD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        create_options="ENCODING 'UTF8' TEMPLATE template0",
        drop_options="WITH (FORCE)",  # other sessions (a test's leftover pool) must not block it
    ),
    "mariadb": Server(
        "MariaDB",
        os.environ.get("MSD_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"),
        create_options="CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        drop_options="",
    ),
}
BACKENDS = ["sqlite", *SERVERS]


@dataclass(frozen=True)
class ServerDatabase:
    url: sa.URL
    engine: sa.Engine


def _admin_engine(server: Server) -> sa.Engine:
    connect_args = {"connect_timeout": 3}
    engine = sa.create_engine(
        server.admin_url, isolation_level="AUTOCOMMIT", connect_args=connect_args
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any driver or network error means "no server here"
        engine.dispose()
        pytest.skip(f"{server.label} server not reachable at {mask_url(server.admin_url)}: {exc}")
    return engine


@contextlib.contextmanager
def fresh_database(backend: str, prefix: str = "msd_test") -> Iterator[sa.URL]:
    """The URL of a new database ``<prefix>_<random>`` on the server, dropped on exit.

    Skips the calling test, with the reason, when the server is unreachable.
    """
    server = SERVERS[backend]
    admin = _admin_engine(server)
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} {server.create_options}")
    try:
        yield sa.make_url(server.admin_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} {server.drop_options}")
        admin.dispose()


@contextlib.contextmanager
def _server_database(backend: str) -> Iterator[ServerDatabase]:
    with fresh_database(backend) as url:
        engine = create_engine_for_url(url)
        try:
            yield ServerDatabase(url, engine)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def server_database() -> Iterator[Callable[[str], ServerDatabase]]:
    """One database per server for the whole session, made when a test first asks for it."""
    opened: dict[str, ServerDatabase | str] = {}  # a str: why that server is skipped
    with contextlib.ExitStack() as stack:

        def get(backend: str) -> ServerDatabase:
            if backend not in opened:
                try:
                    opened[backend] = stack.enter_context(_server_database(backend))
                except pytest.skip.Exception as unreachable:
                    opened[backend] = unreachable.msg  # no second wait for the same server
            database = opened[backend]
            if isinstance(database, str):
                pytest.skip(database)
            return database

        yield get


def empty_schema(engine: sa.Engine) -> None:
    """Leave the msd_* tables as defined and empty.

    Tables a previous test altered (ensure_schema refuses them) are dropped and recreated;
    intact ones are only emptied, which is ten times faster than DDL on MariaDB.
    """
    try:
        ensure_schema(engine)
    except SchemaMismatchError:
        drop_schema(engine)
        ensure_schema(engine)
    with engine.begin() as conn:
        for table in reversed(MSD_TABLES):  # children first
            conn.execute(sa.delete(warehouse_table(conn, table)))


@pytest.fixture(params=BACKENDS)
def engine(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    server_database: Callable[[str], ServerDatabase],
) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        sqlite_engine = create_engine_for_url(f"sqlite:///{tmp_path / 'msd.sqlite'}")
        ensure_schema(sqlite_engine)
        yield sqlite_engine
        sqlite_engine.dispose()
        return
    server_engine = server_database(request.param).engine
    empty_schema(server_engine)
    yield server_engine
