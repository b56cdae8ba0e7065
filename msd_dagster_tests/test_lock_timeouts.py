"""Lock timeouts and lost connections, on real databases (SQLite, PostgreSQL, MariaDB).

A lock held by another session ends a load after the backend's lock timeout with an error that
names the wait (and is transient), instead of stalling it; a connection killed during the
schema check is retried like one lost during a load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from msd_dagster.warehouse import ddl
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.dialects import backend_for
from msd_dagster.warehouse.partition_load import load_partition
from msd_dagster.warehouse.transactions import (
    LockTimeoutError,
    is_transient_database_error,
    lock_error_kind,
)
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster_tests.test_warehouse_loading import (
    _killer,
    assert_same,
    frames_aa,
    row_of,
    snapshot,
    track_id,
)

pytest_plugins = ["msd_dagster_tests.db_fixtures"]

SETTING = {
    "sqlite": "SQLite busy_timeout = 1 s",
    "postgresql": "PostgreSQL lock_timeout = 1 s",
    "mysql": "MySQL/MariaDB innodb_lock_wait_timeout = 1 s",
}


@contextmanager
def lock_held_by_another_session(engine: sa.Engine) -> Iterator[None]:
    """A row of the partition's msd_track locked (SQLite: the database write lock) by another
    session until the block ends."""
    holder = create_engine_for_url(engine.url)
    try:
        with holder.connect() as conn:
            if engine.dialect.name == "sqlite":
                backend_for(holder).writer(conn).begin()  # BEGIN IMMEDIATE: the write lock
            else:  # psycopg and PyMySQL both take %s parameters
                conn.begin()
                locked = conn.exec_driver_sql(
                    "SELECT track_id FROM msd_track WHERE track_id = %s FOR UPDATE",
                    (track_id("A/A", 1),),
                ).all()
                assert len(locked) == 1
            try:
                yield
            finally:
                conn.rollback()
    finally:
        holder.dispose()


def test_a_held_row_lock_ends_the_load_after_the_lock_timeout(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    load_partition(engine, "A/A", frames_aa())
    before = snapshot(engine)
    impatient = create_engine_for_url(engine.url, lock_timeout_s=1)
    try:
        with lock_held_by_another_session(engine), caplog.at_level(logging.WARNING):
            started = time.monotonic()
            with pytest.raises(LockTimeoutError) as raised:
                load_partition(impatient, "A/A", frames_aa(title="blocked"), deadlock_retries=1)
            waited = time.monotonic() - started
        # Two attempts of ~1 s each plus the backoff: seconds, not a stall.
        assert 1.5 < waited < 20, waited
        message = str(raised.value)
        setting = SETTING[backend_for(impatient).name]
        assert message.startswith("partition A/A: gave up after 2 attempt(s) in ")
        assert setting in message and "held by another session" in message
        if engine.dialect.name != "sqlite":  # SQLite waits at BEGIN IMMEDIATE
            assert "on `DELETE FROM msd_track" in message
        assert is_transient_database_error(raised.value)
        assert lock_error_kind(raised.value.__cause__) == "lock timeout"
        retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
        assert len(retried) == 1 and setting in retried[0], retried
        assert_same(snapshot(engine), before)
        # The lock released, the same engine loads.
        load_partition(impatient, "A/A", frames_aa(title="unblocked"))
    finally:
        impatient.dispose()
    after = snapshot(engine, ["msd_track"])
    assert row_of(after, "msd_track", (track_id("A/A", 1),))["title"] == "unblocked"


def test_lock_timeouts_are_set_for_every_session(engine: sa.Engine) -> None:
    impatient = create_engine_for_url(engine.url, lock_timeout_s=2.5)
    try:
        with impatient.connect() as conn:
            name = engine.dialect.name
            if name == "postgresql":
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "2500ms"
                conn.rollback()  # a SET would be undone by a rollback; the startup option is not
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "2500ms"
            elif name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
            else:
                values = conn.exec_driver_sql(
                    "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.lock_wait_timeout"
                ).one()
                assert tuple(values) == (2, 2)  # whole seconds on MySQL/MariaDB
        defaults = {"sqlite": 300, "postgresql": 60, "mysql": 60}
        assert backend_for(engine).lock_timeout_s == defaults[backend_for(engine).name]
    finally:
        impatient.dispose()


def test_a_connection_killed_during_the_schema_check_is_retried(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("no server connection to kill")
    kill = _killer(engine)
    real_state = ddl._schema_state
    kills: list[BaseException | None] = []

    def killed_once(conn: sa.Connection):  # type: ignore[no-untyped-def]
        if not kills:
            kill(conn)
            kills.append(None)
        return real_state(conn)

    monkeypatch.setattr(ddl, "_schema_state", killed_once)
    with caplog.at_level(logging.WARNING):
        ensure_schema(engine)  # retried on a new connection: no error
    assert len(kills) == 1
    assert any("schema check" in r.getMessage() for r in caplog.records)

    def killed_always(conn: sa.Connection):  # type: ignore[no-untyped-def]
        kill(conn)
        return real_state(conn)

    monkeypatch.setattr(ddl, "_schema_state", killed_always)
    monkeypatch.setattr(ddl, "SCHEMA_CHECK_RETRIES", 1)
    with pytest.raises(sa.exc.DBAPIError) as raised:
        ensure_schema(engine)
    # What the partition step's retry policy looks at: the same verdict as during a load.
    assert is_transient_database_error(raised.value)
    monkeypatch.undo()
    ensure_schema(engine)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (SimpleNamespace(sqlstate="40P01"), "deadlock"),
        (SimpleNamespace(sqlstate="55P03"), "lock timeout"),
        (SimpleNamespace(args=(1213, "Deadlock found")), "deadlock"),
        (SimpleNamespace(args=(1205, "Lock wait timeout exceeded")), "lock timeout"),
        (
            Exception("[40001] ... chosen as the deadlock victim. Rerun the transaction. (1205)"),
            "deadlock",
        ),
        (Exception("[HYT00] ... Lock request time out period exceeded. (1222)"), "lock timeout"),
        (Exception("database is locked"), "lock timeout"),
        (Exception("UNIQUE constraint failed"), None),
    ],
)
def test_lock_errors_of_every_backend(error: object, kind: str | None) -> None:
    assert lock_error_kind(error) == kind  # type: ignore[arg-type]
