"""pytest plugin: real databases for the warehouse tests.

Register with ``pytest_plugins = ["msd_dagster_tests.db_fixtures"]`` in conftest.py.

* ``postgresql_url`` / ``mariadb_url`` (session): a fresh database with a random name on the
  local server, dropped at the end of the session; the tests using them are skipped, with the
  reason, when the server is unreachable. Admin URLs: ``MSD_TEST_POSTGRES_URL`` (default
  ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) and ``MSD_TEST_MARIADB_URL``
  (default ``mysql+pymysql://root@127.0.0.1:3306/``).
* ``postgresql_engine`` / ``mariadb_engine`` (session): engines on those databases.
* ``engine`` (per test, parametrized over sqlite / postgresql / mariadb): an engine whose
  ``msd_*`` tables are as defined and empty (recreated with drop_all + ``ensure_schema`` when a
  previous test altered them, else emptied). SQLite: a new file in ``tmp_path``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

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

POSTGRES_ADMIN_URL = os.environ.get(
    "MSD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("MSD_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
BACKENDS = ["sqlite", "postgresql", "mariadb"]


def _admin_engine(url: str, backend: str) -> sa.Engine:
    connect_args = {"connect_timeout": 3}
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any driver or network error means "no server here"
        engine.dispose()
        pytest.skip(f"{backend} server not reachable at {mask_url(url)}: {exc}")
    return engine


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[sa.URL]:
    admin = _admin_engine(POSTGRES_ADMIN_URL, "PostgreSQL")
    name = f"msd_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    try:
        yield sa.make_url(POSTGRES_ADMIN_URL).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[sa.URL]:
    admin = _admin_engine(MARIADB_ADMIN_URL, "MariaDB")
    name = f"msd_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield sa.make_url(MARIADB_ADMIN_URL).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


@pytest.fixture(scope="session")
def postgresql_engine(postgresql_url: sa.URL) -> Iterator[sa.Engine]:
    engine = create_engine_for_url(postgresql_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mariadb_engine(mariadb_url: sa.URL) -> Iterator[sa.Engine]:
    engine = create_engine_for_url(mariadb_url)
    yield engine
    engine.dispose()


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
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        sqlite_engine = create_engine_for_url(f"sqlite:///{tmp_path / 'msd.sqlite'}")
        ensure_schema(sqlite_engine)
        yield sqlite_engine
        sqlite_engine.dispose()
        return
    server_engine: sa.Engine = request.getfixturevalue(f"{request.param}_engine")
    empty_schema(server_engine)
    yield server_engine
