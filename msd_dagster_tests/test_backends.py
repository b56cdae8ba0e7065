"""The backend registry: what a backend contributes to the table definitions and the engines,
and what it must leave as it is (the schema fingerprint every existing database recorded).

No database is needed: everything here is compiled offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, get_args

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from msd_dagster import settings
from msd_dagster.commands.load_steps import database_problem
from msd_dagster.defs.resources import WarehouseResource
from msd_dagster.warehouse.ddl import (
    ALL_TABLES,
    fingerprint_dialects,
    schema_fingerprint,
    tables_fingerprint,
)
from msd_dagster.warehouse.dialects import (
    BACKENDS,
    Backend,
    MySQLBackend,
    PostgreSQLBackend,
    backend_for_url,
    split_backend_options,
)
from msd_dagster.warehouse.dialects.base import ColumnKind
from msd_dagster.warehouse.urls import DatabaseFolder, database_folder

# The fingerprint recorded in msd_schema_version by every database created since schema
# version 2. It changes only with the table definitions (then SCHEMA_VERSION is bumped too):
# a new backend, or a new column type variant of one, must leave it as it is.
RECORDED_FINGERPRINT = "33cd505f3cbce3278a086edbb9b296d24f65482c59df3abea33540569b0ddca8"


class NewBackend(Backend):
    """A backend registered after databases were created: its own type for every kind."""

    name = "newdb"
    dialect_names = ("newdb",)
    column_types: ClassVar = {kind: (lambda _: sa.Text()) for kind in get_args(ColumnKind)}


def test_the_fingerprint_is_the_one_existing_databases_recorded() -> None:
    assert schema_fingerprint() == RECORDED_FINGERPRINT


def test_a_new_backend_leaves_the_fingerprint_unless_it_opts_in() -> None:
    registered = (*BACKENDS, NewBackend)
    # Its variants on every column, as the table definitions would carry them.
    copy = sa.MetaData()
    tables = [t.to_metadata(copy) for t in ALL_TABLES]
    for table in tables:
        for column in table.columns:
            column.type = column.type.with_variant(sa.Text(), *NewBackend.dialect_names)
    assert tables_fingerprint(tables, fingerprint_dialects(registered)) == RECORDED_FINGERPRINT

    class OptedIn(NewBackend):
        fingerprint_dialect = sqlite.dialect()

    opted = fingerprint_dialects((*BACKENDS, OptedIn))
    assert tables_fingerprint(tables, opted) != RECORDED_FINGERPRINT


def test_backend_options_are_named_after_their_backend() -> None:
    options = {"mysql_local_infile": False, "mssql_bulkcopy": False, "pool_size": 3}
    assert split_backend_options(options) == (
        {"mysql_local_infile": False, "mssql_bulkcopy": False},
        {"pool_size": 3},
    )
    backend_options, _ = split_backend_options(options)
    mysql = backend_for_url("mysql+pymysql://u:p@h/db", lock_timeout_s=5, **backend_options)
    assert mysql == MySQLBackend(driver="pymysql", lock_timeout_s=5, local_infile=False)
    # Another backend's options are ignored; None keeps the default.
    postgres = backend_for_url("postgresql+psycopg://u:p@h/db", mssql_bulkcopy=False)
    assert postgres == PostgreSQLBackend(driver="psycopg")
    assert backend_for_url("mysql://h/db", mysql_local_infile=None).local_infile is True
    with pytest.raises(TypeError, match="mysql_local_infle"):
        split_backend_options({"mysql_local_infle": False})
    with pytest.raises(TypeError, match="mysql_lock_timeout_s"):  # every backend's option
        split_backend_options({"mysql_lock_timeout_s": 3})
    with pytest.raises(TypeError, match="pool_size"):
        backend_for_url("mysql://h/db", pool_size=3)


def test_only_a_sqlite_file_has_a_folder_created_only_under_the_default_root(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    inside = home / "db" / "msd.sqlite"
    outside = tmp_path / "elsewhere" / "msd.sqlite"
    assert database_folder(f"sqlite:///{inside}", home) == DatabaseFolder(inside.parent, True)
    assert database_folder(f"sqlite:///{outside}", home) == DatabaseFolder(outside.parent, False)
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql://u:p@h/db", "not a url"):
        assert database_folder(url, home) is None


def test_the_cli_refuses_a_missing_folder_and_the_engine_creates_the_default_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.MSD_HOME, str(tmp_path / "home"))
    mistyped = WarehouseResource(url=f"sqlite:///{tmp_path}/no/such/folder/msd.sqlite")
    problem = database_problem(mistyped)
    assert problem is not None and problem.endswith("does not exist; create it first")
    assert not (tmp_path / "no").exists()
    default = WarehouseResource(url=f"sqlite:///{tmp_path}/home/db/msd.sqlite")
    assert database_problem(default) is None
    assert (tmp_path / "home" / "db").is_dir()
