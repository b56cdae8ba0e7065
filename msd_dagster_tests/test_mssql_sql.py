"""SQL Server / Azure SQL paths, checked offline (no server and no ODBC library needed).

The DDL, the staging/MERGE statements and the bulk-insert batches are compiled with
SQLAlchemy's mssql dialects and run against a recording fake connection.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.mssql.mssqlpython import MSDialect_mssqlpython
from sqlalchemy.dialects.mssql.pyodbc import MSDialect_pyodbc

from msd_dagster.secrets import mask_url
from msd_dagster.warehouse import urls
from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.ddl import warehouse_metadata, warehouse_table
from msd_dagster.warehouse.dialects import mssql as mssql_backend
from msd_dagster.warehouse.dialects.mssql import (
    SQL_BIGINT,
    SQL_DOUBLE,
    SQL_INTEGER,
    SQL_TYPE_TIMESTAMP,
    SQL_VARCHAR,
    SQL_WVARCHAR,
    OdbcDriverMissingError,
    azure_access_token_connect_args,
    mssql_fast_chunk_rows,
    mssql_input_sizes,
    mssql_rows_per_statement,
    mssql_values_statements,
)
from msd_dagster.warehouse.dialects.mssql.urls import azure_sql_url
from msd_dagster.warehouse.queries import partition_filter
from msd_dagster.warehouse.schema import MSD_TABLES, TABLES_BY_NAME, load_columns
from msd_dagster.warehouse.staging import stage_table, upsert_statement
from msd_dagster.warehouse.urls import create_engine_for_url

TEXT_COLUMNS_1024 = {
    "msd_track": ["release", "title", "genre"],
    "msd_artist": ["artist_name", "artist_location"],
}


def pyodbc_dialect(fast: bool) -> MSDialect_pyodbc:
    dialect = MSDialect_pyodbc(fast_executemany=fast)
    dialect.paramstyle = "qmark"  # what pyodbc reports once loaded
    return dialect


@pytest.fixture(scope="module")
def mssql_ddl() -> dict[str, str]:
    """CREATE statements emitted by create_all through a mock mssql+pyodbc engine."""
    statements: list[str] = []

    def record(sql: Any, *_: Any, **__: Any) -> None:
        statements.append(str(sql.compile(dialect=engine.dialect)))

    engine = sa.create_mock_engine("mssql+pyodbc://", record)
    warehouse_metadata(engine.dialect).create_all(engine, checkfirst=False)
    ddl = {}
    for statement in statements:
        match = re.search(r"CREATE TABLE (\S+)", statement)
        if match:
            ddl[match.group(1)] = statement
    return ddl


def test_tables_are_created_in_dbo(mssql_ddl: dict[str, str]) -> None:
    assert set(mssql_ddl) == {f"dbo.{t.name}" for t in MSD_TABLES} | {"dbo.msd_schema_version"}
    assert "REFERENCES dbo.msd_artist (artist_id)" in mssql_ddl["dbo.msd_track"]
    assert "REFERENCES" not in mssql_ddl["dbo.msd_segment"]  # a checked reference only


def test_text_is_nvarchar_and_keys_are_binary(mssql_ddl: dict[str, str]) -> None:
    for table, columns in TEXT_COLUMNS_1024.items():
        ddl = mssql_ddl[f"dbo.{table}"]
        for column in columns:
            assert re.search(rf"\b{column} NVARCHAR\(1024\) NULL", ddl), (table, column)
    for ddl in mssql_ddl.values():
        assert not re.search(r"(?<!N)VARCHAR\((256|1024)\)", ddl)  # no non-Unicode text columns
    assert (
        "term_name NVARCHAR(256) COLLATE Latin1_General_100_BIN2 NOT NULL"
        in mssql_ddl["dbo.msd_r_term"]
    )
    assert (
        "mbtag_name NVARCHAR(256) COLLATE Latin1_General_100_BIN2 NOT NULL"
        in mssql_ddl["dbo.msd_artist_mbtag"]
    )
    assert (
        "track_id CHAR(18) COLLATE Latin1_General_100_BIN2 NOT NULL" in mssql_ddl["dbo.msd_tatum"]
    )
    assert (
        "artist_id CHAR(18) COLLATE Latin1_General_100_BIN2 NOT NULL" in mssql_ddl["dbo.msd_artist"]
    )


def test_identity_float_and_timestamp_types(mssql_ddl: dict[str, str]) -> None:
    for name in [
        "msd_bar",
        "msd_beat",
        "msd_section",
        "msd_tatum",
        "msd_segment",
        "msd_r_term",
        "msd_r_mbtag",
        "msd_artist_term",
        "msd_artist_mbtag",
        "msd_artist_similarity",
    ]:
        table = TABLES_BY_NAME[name]
        identity = next(c.name for c in table.columns if c.identity is not None)
        assert f"{identity} BIGINT NOT NULL IDENTITY(1,1)" in mssql_ddl[f"dbo.{name}"]
    track = mssql_ddl["dbo.msd_track"]
    for column in ["danceability", "loudness", "song_hotness", "tempo"]:
        assert re.search(rf"\b{column} (DOUBLE PRECISION|FLOAT\(53\)|FLOAT) NULL", track)
    assert "upload_timestamp DATETIME2(6) NULL" in track  # microseconds kept, not DATETIME
    assert "[key] INTEGER NULL" in track  # reserved word quoted
    segment = mssql_ddl["dbo.msd_segment"]
    assert segment.count("DOUBLE PRECISION NULL") == 2 + 3 + 24
    assert "CONSTRAINT uq_msd_segment_position UNIQUE (track_id, track_segment_id)" in segment


def test_stage_table_is_a_session_temp_table() -> None:
    dialect = pyodbc_dialect(fast=True)
    stage = stage_table(dialect, warehouse_table(dialect, "msd_artist_term"))
    ddl = str(sa.schema.CreateTable(stage).compile(dialect=dialect))
    assert "CREATE TABLE [#msd_stage_msd_artist_term]" in ddl
    # Same collations as the target: no tempdb collation conflict in the MERGE join.
    assert "term_name NVARCHAR(256) COLLATE Latin1_General_100_BIN2 NOT NULL" in ddl
    assert "artist_id CHAR(18) COLLATE Latin1_General_100_BIN2 NOT NULL" in ddl
    assert "PRIMARY KEY (artist_id, term_name)" in ddl
    assert "artist_term_id" not in ddl


def test_merge_statements() -> None:
    dialect = pyodbc_dialect(fast=True)
    target = warehouse_table(dialect, "msd_artist")
    merge = upsert_statement(dialect, target, stage_table(dialect, target))
    assert isinstance(merge, str)
    wins = (
        "s.source_track_id IS NOT NULL AND "
        "(t.source_track_id IS NULL OR s.source_track_id <= t.source_track_id)"
    )
    assert merge.startswith(
        "MERGE INTO dbo.msd_artist WITH (HOLDLOCK) AS t USING [#msd_stage_msd_artist] AS s "
        "ON t.artist_id = s.artist_id WHEN MATCHED THEN UPDATE SET "
        f"t.artist_mbid = CASE WHEN {wins} THEN COALESCE(s.artist_mbid, t.artist_mbid) "
        "ELSE COALESCE(t.artist_mbid, s.artist_mbid) END, "
    )
    assert f"t.source_track_id = CASE WHEN {wins} THEN s.source_track_id" in merge
    assert "t.artist_id = s.artist_id," not in merge  # the key is never updated
    assert merge.endswith(";")  # MERGE must be terminated
    insert_part = merge[merge.index("WHEN NOT MATCHED BY TARGET THEN INSERT") :]
    assert insert_part.count("s.") == len(load_columns(TABLES_BY_NAME["msd_artist"]))

    for name in [
        "msd_r_term",
        "msd_r_mbtag",
        "msd_artist_term",
        "msd_artist_mbtag",
        "msd_artist_similarity",
    ]:
        target = warehouse_table(dialect, name)
        merge = upsert_statement(dialect, target, stage_table(dialect, target))
        assert merge.startswith(
            f"MERGE INTO dbo.{name} WITH (HOLDLOCK) AS t USING [#msd_stage_{name}] AS s ON "
        )
        if name in ("msd_r_term", "msd_r_mbtag"):
            assert "WHEN MATCHED" not in merge  # insert-only: existing rows are never touched
        else:  # existing pairs only gain values where they are NULL
            assert "WHEN MATCHED AND ((t." in merge and "IS NULL AND s." in merge
            assert " = COALESCE(t." in merge and "THEN DELETE" not in merge
        assert "WHEN NOT MATCHED BY TARGET THEN INSERT" in merge and merge.endswith(");")
    similarity = upsert_statement(
        dialect,
        warehouse_table(dialect, "msd_artist_similarity"),
        stage_table(dialect, warehouse_table(dialect, "msd_artist_similarity")),
    )
    assert "ON t.artist_id_1 = s.artist_id_1 AND t.artist_id_2 = s.artist_id_2 " in similarity


def test_delete_and_check_queries_compile_for_dbo() -> None:
    dialect = pyodbc_dialect(fast=True)
    bar = warehouse_table(dialect, "msd_bar")
    delete = sa.delete(bar).where(bar.c.track_id >= "TRAB", bar.c.track_id < "TRAC")
    assert str(delete.compile(dialect=dialect)) == (
        "DELETE FROM dbo.msd_bar WHERE dbo.msd_bar.track_id >= ? AND dbo.msd_bar.track_id < ?"
    )
    term = warehouse_table(dialect, "msd_artist_term")
    count = (
        sa.select(sa.func.count()).select_from(term).where(partition_filter(dialect, term, "A/B"))
    )
    sql = str(count.compile(dialect=dialect))
    assert "FROM dbo.msd_artist_term" in sql
    assert "IN (SELECT dbo.msd_track.artist_id" in sql


def test_values_batches_stay_under_2100_parameters() -> None:
    for table in MSD_TABLES:
        n = len(load_columns(table))
        rows = mssql_rows_per_statement(n)
        assert rows * n < 2100 and rows <= 1000, table.name
        assert (rows + 1) * n >= 2100 or rows == 1000  # and no smaller than needed
    assert mssql_rows_per_statement(4) == 524
    assert mssql_rows_per_statement(31) == 67
    assert mssql_rows_per_statement(1) == 1000


class FakeCursor:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log
        self.fast_executemany = False

    def setinputsizes(self, sizes: list[tuple[int, int, int]]) -> None:
        self.log.append(("setinputsizes", list(sizes)))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.log.append(("executemany", sql, list(rows), self.fast_executemany))

    def close(self) -> None:
        self.log.append(("close",))


class FakeConnection:
    """Just enough of sqlalchemy.Connection for bulk_insert's SQL Server paths."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.dialect = dialect
        self.log: list[tuple[Any, ...]] = []
        raw = SimpleNamespace(cursor=lambda: FakeCursor(self.log))
        self.connection = SimpleNamespace(dbapi_connection=raw, info={})

    def exec_driver_sql(self, sql: str, params: Any = None) -> None:
        self.log.append(("execute", sql, params))


def segment_frame(rows: int) -> pd.DataFrame:
    columns = load_columns(TABLES_BY_NAME["msd_segment"])
    data: dict[str, Any] = {c: np.linspace(0, 1, rows) for c in columns}
    data["track_id"] = pd.Series([f"TRAB{i // 10:04d}128F429CF4" for i in range(rows)], dtype="str")
    data["track_segment_id"] = np.arange(rows) % 10 + 1
    data["p3"] = np.where(np.arange(rows) % 3 == 0, np.nan, 0.5)
    return pd.DataFrame(data)[list(reversed(columns))]


@pytest.mark.parametrize(
    "dialect",
    [pyodbc_dialect(fast=False), MSDialect_mssqlpython()],
    ids=["pyodbc-without-fast-executemany", "mssql-python"],
)
def test_bulk_insert_values_path(dialect: sa.Dialect) -> None:
    frame = segment_frame(150)
    conn = FakeConnection(dialect)
    table = warehouse_table(dialect, "msd_segment")
    assert bulk_insert(conn, table, frame, chunk_rows=100) == 150  # type: ignore[arg-type]
    statements = [entry for entry in conn.log if entry[0] == "execute"]
    columns = load_columns(TABLES_BY_NAME["msd_segment"])
    width = len(columns)  # 31 parameters per row
    per_statement = mssql_rows_per_statement(width)  # 67 rows x 31 = 2,077 parameters
    assert per_statement == 67
    # chunk 1 (100 rows) -> 67 + 33 rows, chunk 2 -> 50 rows
    assert [len(params) // width for _, _, params in statements] == [67, 33, 50]
    sent = []
    for _, sql, params in statements:
        assert sql.startswith(f"INSERT INTO dbo.msd_segment ({', '.join(columns)}) VALUES (?")
        assert sql.count("?") == len(params) < 2100
        assert sql.count("(?") == len(params) // width <= per_statement
        sent.extend(params[i : i + width] for i in range(0, len(params), width))
    assert [row[0] for row in sent] == list(frame["track_id"])
    assert all(isinstance(row[1], int) for row in sent)
    p3 = columns.index("p3")
    assert [row[p3] for row in sent[:4]] == [None, 0.5, 0.5, None]  # NaN -> NULL


def test_bulk_insert_fast_executemany_path() -> None:
    dialect = pyodbc_dialect(fast=True)
    columns = load_columns(TABLES_BY_NAME["msd_track"])
    frame = pd.DataFrame({c: [None, None] for c in columns})
    frame["track_id"] = ["TRAB0001128F429CF4", "TRAB0002128F429CF4"]
    frame["artist_id"] = "ARSHARED0000000000"
    frame["title"] = pd.Series(["ਪੰਜਾਬੀ", "香港歌手 🎸"], dtype="str")
    frame["tempo"] = [120.5, np.nan]
    frame["year"] = pd.Series([1999, None], dtype="Int32")
    frame["upload_timestamp"] = pd.to_datetime(["2011-02-01 12:34:56.000123", None])
    conn = FakeConnection(dialect)
    assert bulk_insert(conn, warehouse_table(dialect, "msd_track"), frame) == 2  # type: ignore[arg-type]
    sizes = next(entry[1] for entry in conn.log if entry[0] == "setinputsizes")
    by_column = dict(zip(columns, sizes, strict=True))
    assert by_column["title"] == (SQL_WVARCHAR, 1024, 0)  # NVARCHAR, even for a #temp table
    assert by_column["track_id"] == (SQL_VARCHAR, 18, 0)
    assert by_column["tempo"] == (SQL_DOUBLE, 0, 0)
    assert by_column["year"] == (SQL_INTEGER, 0, 0)
    assert by_column["upload_timestamp"] == (SQL_TYPE_TIMESTAMP, 26, 6)
    _, sql, rows, fast = next(entry for entry in conn.log if entry[0] == "executemany")
    assert fast is True
    names = ", ".join("[key]" if c == "key" else c for c in columns)  # reserved word quoted
    marks = ", ".join("?" * len(columns))
    assert sql == f"INSERT INTO dbo.msd_track ({names}) VALUES ({marks})"
    first, second = (dict(zip(columns, row, strict=True)) for row in rows)
    assert first["title"] == "ਪੰਜਾਬੀ" and second["title"] == "香港歌手 🎸"
    assert first["tempo"] == 120.5 and second["tempo"] is None
    assert first["year"] == 1999 and type(first["year"]) is int and second["year"] is None
    assert first["upload_timestamp"] == datetime(2011, 2, 1, 12, 34, 56, 123)
    assert second["upload_timestamp"] is None


def test_fast_executemany_buffer_is_bounded() -> None:
    dialect = pyodbc_dialect(fast=True)
    track = warehouse_table(dialect, "msd_track")
    columns = [c for c in track.columns if c.identity is None]
    rows = mssql_fast_chunk_rows(columns, dialect, 1_000_000)
    assert 1_000 < rows < 20_000  # ~7 KB of declared widths per row, 64 MiB per call
    tatum_columns = [c for c in warehouse_table(dialect, "msd_tatum").columns if c.identity is None]
    assert mssql_fast_chunk_rows(tatum_columns, dialect, 50_000) == 50_000
    sizes = mssql_input_sizes([warehouse_table(dialect, "msd_bar").c.bar_id], dialect)
    assert sizes == [(SQL_BIGINT, 0, 0)]


def test_values_statements_cover_all_rows() -> None:
    dialect = MSDialect_mssqlpython()
    table = warehouse_table(dialect, "msd_bar")
    columns = [c for c in table.columns if c.identity is None]
    rows = [(f"TRAB{i:04d}128F429CF4", i, 0.5, None) for i in range(1200)]
    batches = list(mssql_values_statements(dialect, table, columns, rows))
    assert [len(p) // 4 for _, p in batches] == [524, 524, 152]
    assert [tuple(p[i : i + 4]) for _, p in batches for i in range(0, len(p), 4)] == rows


def test_azure_sql_url() -> None:
    url = azure_sql_url(
        "tcp:msd-sql.database.windows.net,1433",
        "msd",
        "loader",
        "p@ss;w{o}rd",
        python_driver="pyodbc",
    )
    assert url.drivername == "mssql+pyodbc"
    assert (url.host, url.port, url.database, url.username) == (
        "msd-sql.database.windows.net",
        1433,
        "msd",
        "loader",
    )
    assert url.query["driver"] == "ODBC Driver 18 for SQL Server"
    assert url.query["Encrypt"] == "yes" and url.query["TrustServerCertificate"] == "no"
    odbc = MSDialect_pyodbc().create_connect_args(url)[0][0]
    assert odbc.startswith(
        "DRIVER={ODBC Driver 18 for SQL Server};Server=msd-sql.database.windows.net,1433;"
        "Database=msd;UID=loader;PWD={p@ss;w{o}}rd}"  # ';' and '}' escaped by the dialect
    )
    assert (
        "Encrypt=yes" in odbc
        and "TrustServerCertificate=no" in odbc
        and "ConnectTimeout=30" in odbc
    )
    local = azure_sql_url(
        "localhost",
        "msd",
        "sa",
        "x",
        encrypt=False,
        trust_server_certificate=True,
        driver="ODBC Driver 17 for SQL Server",
        timeout=5,
        python_driver="pyodbc",
    )
    assert (
        local.port == 1433
        and local.query["Encrypt"] == "no"
        and local.query["TrustServerCertificate"] == "yes"
    )
    assert (
        local.query["driver"] == "ODBC Driver 17 for SQL Server"
        and local.query["ConnectTimeout"] == "5"
    )
    with pytest.raises(ValueError, match="not both"):
        azure_sql_url("s", "d", "u", "p", access_token="t")


def test_access_token() -> None:
    args = azure_access_token_connect_args("abc")
    assert args == {"attrs_before": {1256: b"\x06\x00\x00\x00a\x00b\x00c\x00"}}
    url = azure_sql_url(
        "msd-sql.database.windows.net", "msd", access_token="eyJ0eXAiOiJKV1QiLCJhbGci"
    )
    assert url.username is None and url.password is None
    assert "eyJ0eXAi" not in mask_url(url)


def test_mask_url_hides_secrets() -> None:
    url = azure_sql_url("msd-sql.database.windows.net", "msd", "loader", "Sup3r$ecret")
    for shown in (mask_url(url), mask_url(url.render_as_string(hide_password=False))):
        assert (
            "Sup3r$ecret" not in shown
            and "loader:***@msd-sql.database.windows.net:1433/msd" in shown
        )
        assert "Encrypt=yes" in shown
    assert (
        mask_url("postgresql+psycopg://postgres@127.0.0.1:5432/msd")
        == "postgresql+psycopg://postgres@127.0.0.1:5432/msd"
    )
    assert (
        mask_url("mysql+pymysql://root:hunter2@db/msd?charset=utf8mb4")
        == "mysql+pymysql://root:***@db/msd?charset=utf8mb4"
    )
    with_query = mask_url("mssql+pyodbc://h/db?driver=X&PWD=qwerty&AccessToken=tok123&Encrypt=yes")
    assert "qwerty" not in with_query and "tok123" not in with_query and "PWD=***" in with_query
    odbc_connect = (
        "mssql+pyodbc:///?odbc_connect="
        + "DRIVER%3D%7BODBC+Driver+18%7D%3BSERVER%3Dh%3BUID%3Du%3BPWD%3Dzz_top_secret%3B"
    )
    assert "zz_top_secret" not in mask_url(odbc_connect)
    raw = "Driver={ODBC Driver 18 for SQL Server};Server=h;UID=u;PWD={a;b=c};Encrypt=yes"
    assert (
        mask_url(raw) == "Driver={ODBC Driver 18 for SQL Server};Server=h;UID=u;PWD=***;Encrypt=yes"
    )


def test_no_pyodbc_import_at_module_import() -> None:
    code = (
        "import sys, msd_dagster.warehouse, msd_dagster.warehouse.urls, "
        "msd_dagster.warehouse.bulk, msd_dagster.warehouse.ddl, "
        "msd_dagster.warehouse.partition_load, msd_dagster.warehouse.queries; "
        "assert 'pyodbc' not in sys.modules, 'pyodbc imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _pyodbc_importable() -> bool:
    try:
        import pyodbc  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_pyodbc_importable(), reason="this machine has libodbc; see the simulated test")
def test_pyodbc_without_libodbc_gives_install_instructions() -> None:
    with pytest.raises(OdbcDriverMissingError) as raised:
        create_engine_for_url("mssql+pyodbc://u:p@h/db?driver=ODBC+Driver+18+for+SQL+Server")
    message = str(raised.value)
    assert "msodbcsql18" in message and "unixodbc" in message and "mssql+mssqlpython" in message
    assert isinstance(raised.value, ImportError)


def test_missing_odbc_library_simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libodbc() -> None:
        raise ImportError("libodbc.so.2: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(mssql_backend, "_import_pyodbc", no_libodbc)
    with pytest.raises(
        OdbcDriverMissingError, match=r"libodbc\.so\.2.*msodbcsql18 unixodbc.*mssql\+mssqlpython"
    ):
        create_engine_for_url(
            azure_sql_url("s.database.windows.net", "d", "u", "p", python_driver="pyodbc")
        )


def test_missing_odbc_driver_and_engine_options(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = ["FreeTDS"]
    monkeypatch.setattr(
        mssql_backend, "_import_pyodbc", lambda: SimpleNamespace(drivers=lambda: installed)
    )
    with pytest.raises(
        OdbcDriverMissingError, match="'ODBC Driver 18 for SQL Server' is not installed"
    ):
        create_engine_for_url(
            azure_sql_url("s.database.windows.net", "d", "u", "p", python_driver="pyodbc")
        )

    installed.append("ODBC Driver 18 for SQL Server")
    created: dict[str, Any] = {}
    real_create_engine = sa.create_engine

    def fake_create_engine(url: sa.URL, **options: Any) -> sa.Engine:
        created.update(url=url, **options)
        return real_create_engine("sqlite://")  # never connected

    monkeypatch.setattr(urls.sa, "create_engine", fake_create_engine)
    token_url = azure_sql_url(
        "s.database.windows.net", "d", access_token="tok", timeout=12, python_driver="pyodbc"
    )
    assert isinstance(create_engine_for_url(token_url, pool_size=3), sa.Engine)
    assert created["fast_executemany"] is True and created["pool_pre_ping"] is True
    assert created["pool_size"] == 3
    assert "accesstoken" not in created["url"].query  # moved out of the connection string
    assert (
        created["connect_args"]["attrs_before"]
        == azure_access_token_connect_args("tok")["attrs_before"]
    )
    assert created["connect_args"]["timeout"] == 12

    created.clear()
    create_engine_for_url("mysql+pymysql://root@db/msd")
    assert (
        created["url"].query["charset"] == "utf8mb4"
        and created["connect_args"]["local_infile"] is True
    )
    with pytest.raises(ValueError, match="utf8mb4"):
        create_engine_for_url("mysql+pymysql://root@db/msd?charset=latin1")


def test_mask_url_hides_the_password_of_an_unparsable_url() -> None:
    masked = mask_url("postgresql+psycopg://u:hunter2@h:notaport/x")
    assert "hunter2" not in masked and "u:***@h" in masked
