"""SQL Server partition loads at the DB-API level, without a server (see mssql_fake).

With ``mssql+mssqlpython`` the analysis rows go through ``cursor.bulkcopy()`` into ``##``
staging tables created and committed before the load transaction, and are moved into the
``dbo`` tables inside it. These tests check the statement sequence, the transaction
boundaries, and that a failure or a lost session at any call leaves the previous contents and
no staging table behind. None of this ran against a SQL Server.
"""

from __future__ import annotations

import io
import re
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from msd_dagster.commands import verify_azure_sql
from msd_dagster.secrets import mask_url
from msd_dagster.warehouse.dialects import mssql as mssql_backend
from msd_dagster.warehouse.dialects.mssql import StaticAccessToken
from msd_dagster.warehouse.dialects.mssql.urls import azure_sql_url
from msd_dagster.warehouse.partition_load import load_partition
from msd_dagster.warehouse.rows import BulkInsertError
from msd_dagster.warehouse.schema import ANALYSIS_TABLES, TABLES_BY_NAME, load_columns
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster_tests.mssql_fake import FakeCursor, FakeServer
from msd_dagster_tests.test_warehouse_loading import frames_aa

URL = "mssql+mssqlpython://loader:S3cret@PW@msd.database.windows.net:1433/msd?Encrypt=yes"
ANALYSIS = [t.name for t in ANALYSIS_TABLES]


def fake_engine(server: FakeServer, url: str = URL, **options: Any) -> sa.Engine:
    return create_engine_for_url(url, module=server.module(), **options)


def load_with(server: FakeServer, frames: dict[str, pd.DataFrame], **options: Any) -> Any:
    engine = fake_engine(server, **options)
    try:
        return load_partition(engine, "A/A", frames, deadlock_retries=0)
    finally:
        engine.dispose()


def load_session(server: FakeServer) -> int:
    """The session that ran the partition load (the one that bulk-copied)."""
    return next(s for s, e, _ in server.log if e == "bulkcopy")


def positions(events: list[tuple[str, str]], pattern: str) -> list[int]:
    return [i for i, (e, d) in enumerate(events) if re.match(pattern, f"{e} {d}")]


def test_a_partition_lock_that_times_out_stops_the_load_before_it_writes() -> None:
    """sp_getapplock raises nothing on a timeout: it returns -1, and the load must not go on."""
    server = FakeServer(applock_result=-1)
    with pytest.raises(Exception) as raised:
        load_with(server, frames_aa(), lock_timeout_s=1)
    assert "sp_getapplock returned -1" in str(raised.value)
    assert server.committed == []  # no dbo table was written


def test_statement_sequence_and_transaction_boundaries() -> None:
    server = FakeServer()
    frames = frames_aa()
    written = load_with(server, frames)
    for name in ("msd_track", *ANALYSIS):  # (the fake counts no shared upserts)
        assert written[name] == len(frames[name]) > 0, name
    events = server.events(load_session(server))
    creates = positions(events, r"execute CREATE TABLE \[##msd_load_")
    copies = positions(events, r"bulkcopy ##msd_load_")
    commits = positions(events, r"commit")
    writes = positions(events, r"execute (INSERT INTO|DELETE FROM|MERGE INTO) dbo\.")
    moves = positions(events, r"execute INSERT INTO dbo\.msd_\w+ \(.*\) SELECT .* FROM \[##")
    drops = positions(events, r"execute DROP TABLE \[##msd_load_")
    rollbacks = positions(events, r"rollback")
    assert len(creates) == len(copies) == len(moves) == len(drops) == len(ANALYSIS)
    # 1. the staging tables are created, then committed, before any bulk copy ...
    first_commit = commits[0]
    assert max(creates) < first_commit < min(copies)
    # 2. ... and every bulk copy happens before the load transaction writes anything;
    assert max(copies) < min(writes)
    # 3. one transaction: the shared MERGEs, the DELETEs, msd_track's INSERT, the moves from
    #    staging and the DROPs of the staging tables, then one COMMIT, no rollback between.
    last_commit = next(c for c in commits if c > max(drops))
    assert [c for c in commits if min(writes) < c < last_commit] == []
    assert [r for r in rollbacks if first_commit < r < last_commit] == []
    assert max(moves) < last_commit and max(drops) < last_commit
    deletes = positions(events, r"execute DELETE FROM dbo\.")
    assert max(deletes) < min(moves)  # replaced, not added to
    assert len(server.committed) == 1  # the only transaction that wrote dbo tables
    assert server.global_temp == {} and server.staged_rows == {}
    # The stage of each table receives exactly that table's rows, by name.
    for options in server.bulkcopy_options:
        table = re.match(r"##msd_load_(msd_[a-z]+)_[0-9a-f]{12}$", options["table_name"])[1]
        assert options["column_mappings"] == load_columns(TABLES_BY_NAME[table])
        assert options["table_lock"] is True and options["keep_nulls"] is True
        assert options["timeout"] == mssql_backend.DEFAULT_BULKCOPY_TIMEOUT_S
        assert options["batch_size"] == mssql_backend.SQLServerBackend.default_chunk_rows
    assert {re.sub(r"_[0-9a-f]{12}$", "", o["table_name"]) for o in server.bulkcopy_options} == {
        f"##msd_load_{name}" for name in ANALYSIS
    }


def test_bulk_copied_rows_are_the_frame_values() -> None:
    server = FakeServer()
    frames = frames_aa()
    frames["msd_segment"].loc[frames["msd_segment"].index[0], "p3"] = np.nan
    rows_by_table: dict[str, list[tuple[Any, ...]]] = {}
    real_bulkcopy = server.bulkcopy

    def keep_rows(session: Any, table_name: str, data: Any, **options: Any) -> dict:
        rows = list(data)
        rows_by_table[re.match(r"##msd_load_(msd_[a-z]+)_", table_name)[1]] = rows
        return real_bulkcopy(session, table_name, rows, **options)

    server.bulkcopy = keep_rows  # type: ignore[method-assign]
    load_with(server, frames)
    for name in ANALYSIS:
        frame = frames[name][load_columns(TABLES_BY_NAME[name])]
        expected = [
            tuple(None if pd.isna(v) else v for v in row)
            for row in frame.itertuples(index=False, name=None)
        ]
        assert rows_by_table[name] == expected, name
        assert all(type(row) is tuple for row in rows_by_table[name])
    assert (
        rows_by_table["msd_segment"][0][load_columns(TABLES_BY_NAME["msd_segment"]).index("p3")]
        is None
    )


def _calls_of_a_load() -> tuple[int, int]:
    """(first, last) log position of a load's own calls on a new engine: from the first
    CREATE ## to the COMMIT."""
    server = FakeServer()
    load_with(server, frames_aa())
    first = next(i for i, (_, e, d) in enumerate(server.log, 1) if "CREATE TABLE [##" in d)
    last = max(i for i, (_, e, _) in enumerate(server.log, 1) if e == "commit")
    return first, last


FIRST_CALL, LAST_CALL = _calls_of_a_load()


@pytest.mark.parametrize("how", ["fail", "die"])
def test_a_failure_at_any_call_keeps_the_previous_contents_and_no_staging_table(how: str) -> None:
    """For every call of a load, from the first CREATE ## to the COMMIT: an error there
    ("fail": the session stays) or the session ending there ("die": the process died, the
    server rolled back) leaves the committed contents as they were and no ## table; a rerun
    on the same engine (so on the same pooled session after a "fail") then succeeds."""
    frames = frames_aa(title="second")
    for call in range(FIRST_CALL, LAST_CALL + 1):
        server = FakeServer(**{f"{how}_at": call})
        server.committed.append(["the previous load"])
        engine = fake_engine(server)
        try:
            with pytest.raises((sa.exc.DBAPIError, BulkInsertError)):
                load_partition(engine, "A/A", frames, deadlock_retries=0)
            assert server.committed == [["the previous load"]], server.log[call - 1]
            assert server.global_temp == {} and server.staged_rows == {}, server.log[call - 1]
            failed = {d for _, e, d in server.log if e == "bulkcopy"}
            load_partition(engine, "A/A", frames, deadlock_retries=0)
        finally:
            engine.dispose()
        assert len(server.committed) == 2 and server.global_temp == {}
        rerun = {d for _, e, d in server.log if e == "bulkcopy"} - failed
        assert len(rerun) == len(ANALYSIS)  # new names: nothing left over to trip on
    calls = LAST_CALL - FIRST_CALL + 1
    assert calls > 6 * len(ANALYSIS)


def test_an_error_of_the_bulk_copy_session_is_a_masked_bulk_insert_error() -> None:
    server = FakeServer()

    def refused(*_: Any, **__: Any) -> dict:
        raise RuntimeError("Login failed: Server=msd;UID=loader;PWD=S3cret@PW;")

    server.bulkcopy = refused  # type: ignore[method-assign]
    with pytest.raises(BulkInsertError) as raised:
        load_with(server, frames_aa())
    message = str(raised.value)
    assert message.startswith("bulk copy into ##msd_load_msd_bar_") and "S3cret" not in message
    assert "PWD=***" in message
    assert server.committed == [] and server.global_temp == {}


def test_without_bulkcopy_the_rows_stay_in_the_transaction() -> None:
    for server, options in [
        (FakeServer(), {"mssql_bulkcopy": False}),
        (FakeServer(has_bulkcopy=False), {}),  # an mssql-python without cursor.bulkcopy
    ]:
        load_with(server, frames_aa(), **options)
        events = server.events()
        assert positions(events, r"bulkcopy") == []
        assert positions(events, r"execute CREATE TABLE \[##") == []
        inserts = positions(events, r"execute INSERT INTO dbo\.msd_segment \(.*\) VALUES \(\?")
        assert inserts and len(server.committed) == 1


class PyodbcShape(types.SimpleNamespace):
    """pyodbc's shape on top of the fake module: the pyodbc dialect reads SQL_* type codes."""

    def __getattr__(self, name: str) -> int:
        if name.startswith("SQL_"):
            return 0
        raise AttributeError(name)


def test_pyodbc_keeps_fast_executemany(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer()
    module = PyodbcShape(**vars(server.module()))
    module.drivers = lambda: ["ODBC Driver 18 for SQL Server"]
    module.Cursor, module.version = FakeCursor, "5.2.0"
    monkeypatch.setattr(mssql_backend, "_import_pyodbc", lambda: module)
    url = azure_sql_url("msd.database.windows.net", "msd", "loader", "pw", python_driver="pyodbc")
    engine = create_engine_for_url(url, module=module)
    try:
        load_partition(engine, "A/A", frames_aa(), deadlock_retries=0)
    finally:
        engine.dispose()
    events = server.events()
    assert positions(events, r"bulkcopy") == [] and len(server.committed) == 1
    segments = [e for e, d in events if d.startswith("INSERT INTO dbo.msd_segment")]
    assert segments == ["executemany"]  # fast_executemany, in the one transaction


def test_connection_options_of_mssql_python() -> None:
    server = FakeServer()
    token_url = azure_sql_url(
        "tcp:msd.database.windows.net,1433",
        "msd",
        access_token="eyJ0eXAi.secret",
        timeout=12,
        python_driver="mssqlpython",
    )
    assert token_url.drivername == "mssql+mssqlpython" and "driver" not in token_url.query
    assert "eyJ0eXAi" not in mask_url(token_url)
    engine = fake_engine(server, token_url.render_as_string(hide_password=False), lock_timeout_s=5)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        engine.dispose()
    connection_string = next(d for _, e, d in server.log if e == "connect")
    # mssql-python refuses Driver= and ConnectTimeout=; the login timeout is connect(timeout=).
    assert "Driver" not in connection_string and "ConnectTimeout" not in connection_string
    assert "accesstoken" not in connection_string.lower() and "eyJ0eXAi" not in connection_string
    assert "Encrypt=yes" in connection_string
    assert server.connect_kwargs["timeout"] == 12
    provider = server.connect_kwargs["token_provider"]
    assert isinstance(provider, StaticAccessToken) and "secret" not in repr(provider)
    assert provider.get_token("https://database.windows.net/.default").token == "eyJ0eXAi.secret"
    assert ("execute", "SET LOCK_TIMEOUT 5000") in server.events()
    # The password with an unencoded '@' reaches the driver whole.
    server = FakeServer()
    engine = fake_engine(server)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
    assert "PWD=S3cret@PW;" in next(d for _, e, d in server.log if e == "connect")
    assert ("execute", "SET LOCK_TIMEOUT 60000") in server.events()


def test_azure_verification_run_reports_rows_per_second_and_log_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeServer()
    monkeypatch.setattr(verify_azure_sql, "ensure_schema", lambda engine: None)  # no catalog here
    key, frames = verify_azure_sql.partition_frames(None, None, 6)
    assert key == "A/A" and len(frames["msd_segment"]) > 0
    out = io.StringIO()
    engine = fake_engine(server)
    try:
        result = verify_azure_sql.run(engine, key, frames, loads=2, wait_s=0, out=out)
    finally:
        engine.dispose()
    text = out.getvalue()
    assert "S3cret" not in text and "loader:***@msd.database.windows.net" in text
    assert "bulk path for analysis rows: cursor.bulkcopy() into ## staging" in text
    assert text.count(" rows/s)") == 2 and len(result["rows_per_second"]) == 2
    assert "peak log write: 87.2% of the limit" in text
    assert len(server.committed) == 2 and server.global_temp == {}


def test_azure_verification_takes_the_database_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from msd_dagster import cli

    monkeypatch.setenv("MSD_DATABASE_URL", "postgresql+psycopg://u:S3cret@PW@h/db")
    assert cli.main(["verify-azure-sql"]) == 2
    err = capsys.readouterr().err
    assert "is not a SQL Server URL" in err and "S3cret" not in err and "PW" not in err
    with pytest.raises(SystemExit):
        cli.main(["verify-azure-sql", "--database-url", "mssql+pyodbc://u:p@h/db"])
