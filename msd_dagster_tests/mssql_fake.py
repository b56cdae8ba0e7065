"""A recording stand-in for a SQL Server DB-API driver (mssql-python's shape), for tests that
check statement sequences and transaction boundaries without a server.

``FakeServer.module()`` is passed to SQLAlchemy as the DB-API module
(``create_engine("mssql+mssqlpython://...", module=...)``). The server keeps what a real one
would, as far as atomicity goes: per session the statements of its open transaction, the
committed ``##`` global temp tables and who owns them, the rows bulk-copied into them, and the
committed transactions that wrote ``dbo`` tables. A session that ends (closed, or killed with
``die_at``) has its open transaction rolled back and its ``##`` tables dropped, as SQL Server
does. Every call is recorded in ``log``; ``fail_at`` / ``die_at`` make the n-th call fail
(the session stays) or end the session (as if the client process died there).
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Error(Exception):
    def __init__(self, message: str, driver_error: str = "") -> None:
        super().__init__(message)
        self.driver_error = driver_error


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


# The DB-API's exception names: those the fake raises, the others as their base DatabaseError.
_RAISED = (Error, InterfaceError, DatabaseError, OperationalError, ProgrammingError, IntegrityError)
DBAPI_ERRORS: dict[str, type[Error]] = {error.__name__: error for error in _RAISED} | dict.fromkeys(
    ("DataError", "InternalError", "NotSupportedError"), DatabaseError
)

LINK_FAILURE = "Communication link failure"  # what SQLAlchemy's dialect treats as a disconnect

_GLOBAL_TEMP = r"\[?(##\w+)\]?"


@dataclass
class Session:
    id: int
    pending: list[tuple[str, str]] = field(default_factory=list)  # (effect, detail)
    alive: bool = True


@dataclass
class FakeServer:
    fail_at: int | None = None
    die_at: int | None = None
    log: list[tuple[int, str, str]] = field(default_factory=list)  # (session, event, detail)
    global_temp: dict[str, int] = field(default_factory=dict)  # committed ## table -> owner
    staged_rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    committed: list[list[str]] = field(default_factory=list)  # dbo writes per transaction
    bulkcopy_options: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    has_bulkcopy: bool = True
    applock_result: int = 0  # sp_getapplock's return code: 0 granted, -1 timed out

    # -- DB-API module ------------------------------------------------------------------------

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            paramstyle="qmark",
            __version__="1.16.0",
            Warning=Exception,
            **DBAPI_ERRORS,
            pooling=lambda **_: None,
            connect=self.connect,
        )

    def connect(self, connection_string: str = "", **kwargs: Any) -> FakeConnection:
        session = Session(len(self.sessions) + 1)
        self.sessions.append(session)
        self.log.append((session.id, "connect", connection_string))
        self.connect_kwargs = kwargs
        return FakeConnection(self, session)

    # -- what the server does -----------------------------------------------------------------

    def step(self, session: Session, event: str, detail: str = "") -> None:
        self.log.append((session.id, event, detail))
        if not session.alive:
            raise OperationalError("the session is gone", LINK_FAILURE)
        if len(self.log) == self.die_at:
            self.end_session(session)
            raise OperationalError(f"session ended at call {len(self.log)}", LINK_FAILURE)
        if len(self.log) == self.fail_at:
            raise ProgrammingError(f"injected failure at call {len(self.log)}: {event}")

    def end_session(self, session: Session) -> None:
        """What SQL Server does when a session ends: roll back, drop its ## tables."""
        session.alive = False
        session.pending.clear()
        for name in [n for n, owner in self.global_temp.items() if owner == session.id]:
            del self.global_temp[name]
            self.staged_rows.pop(name, None)

    def visible(self, session: Session, name: str) -> bool:
        created = any(e == "create" and d == name for e, d in session.pending)
        dropped = any(e == "drop" and d == name for e, d in session.pending)
        return (name in self.global_temp or created) and not dropped

    def execute(
        self, session: Session, sql: str, event: str = "execute"
    ) -> tuple[list[tuple[Any, ...]], int]:
        """(rows, rowcount) of ``sql``; its effects join the session's open transaction."""
        self.step(session, event, sql)
        text = " ".join(sql.split())
        low = text.lower()
        if match := re.match(rf"CREATE TABLE {_GLOBAL_TEMP}", text):
            session.pending.append(("create", match[1]))
        elif match := re.search(rf"DROP TABLE {_GLOBAL_TEMP}", text):
            if self.visible(session, match[1]):
                session.pending.append(("drop", match[1]))
        elif re.match(r"(INSERT INTO|DELETE FROM|MERGE INTO) dbo\.", text):
            session.pending.append(("write", text))
            if match := re.search(rf"FROM {_GLOBAL_TEMP}", text):
                if not self.visible(session, match[1]):
                    raise ProgrammingError(f"Invalid object name '{match[1]}'.")
                return [], len(self.staged_rows.get(match[1], []))
        if "sp_getapplock" in low:
            return [(self.applock_result,)], -1
        return self._answer(low), -1

    @staticmethod
    def _answer(low: str) -> list[tuple[Any, ...]]:
        if "serverproperty('productversion')" in low:
            return [("16.0.1000.6",)]
        if "@@version" in low:
            return [("Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64)",)]
        if "schema_name()" in low:
            return [("dbo",)]
        if "system_views" in low:
            return [("dm_exec_sessions",)]
        if "transaction_isolation_level" in low:
            return [("READ COMMITTED",)]
        if "dm_db_resource_stats" in low:
            return [(datetime(2026, 1, 1, 12, 0, 15), 12.5, 20.0, 87.25)]
        if low.startswith("select count"):
            return [(0,)]
        if low.startswith("select"):
            return [(1,)]
        return []

    def commit(self, session: Session) -> None:
        self.step(session, "commit")
        writes = [d for e, d in session.pending if e == "write"]
        for effect, name in session.pending:
            if effect == "create":
                self.global_temp[name] = session.id
            elif effect == "drop":
                self.global_temp.pop(name, None)
                self.staged_rows.pop(name, None)
        if writes:
            self.committed.append(writes)
        session.pending.clear()

    def rollback(self, session: Session) -> None:
        self.step(session, "rollback")
        session.pending.clear()

    def bulkcopy(self, session: Session, table_name: str, data: Any, **options: Any) -> dict:
        """mssql-python opens its own connection: only committed tables are visible, and the
        rows are committed by that session at once."""
        self.step(session, "bulkcopy", table_name)
        if table_name not in self.global_temp:
            raise RuntimeError(f"Failed to retrieve destination metadata: '{table_name}'")
        rows = list(data)
        self.staged_rows[table_name] = rows
        self.bulkcopy_options.append({"table_name": table_name, **options})
        return {"rows_copied": len(rows), "batch_count": 1, "elapsed_time": 0.0}

    # -- views for assertions -----------------------------------------------------------------

    def events(self, session_id: int | None = None) -> list[tuple[str, str]]:
        """(event, statement on one line) of a session, or of all."""
        return [(e, " ".join(d.split())) for s, e, d in self.log if session_id in (None, s)]


class FakeCursor:
    def __init__(self, server: FakeServer, session: Session) -> None:
        self.server, self.session = server, session
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self._rows: list[tuple[Any, ...]] = []
        if server.has_bulkcopy:
            self.bulkcopy = self._bulkcopy

    def execute(self, sql: str, params: Any = ()) -> FakeCursor:
        self._rows, self.rowcount = self.server.execute(self.session, sql)
        self.description = [("c", None, None, None, None, None, None)] if self._rows else None
        return self

    def executemany(self, sql: str, rows: Any) -> None:
        self.server.execute(self.session, sql, "executemany")

    def setinputsizes(self, sizes: Any) -> None:  # pyodbc's shape
        pass

    def _bulkcopy(self, table_name: str, data: Any, **options: Any) -> dict:
        return self.server.bulkcopy(self.session, table_name, data, **options)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        return self.fetchall()

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass


class FakeConnection:
    autocommit = False

    def __init__(self, server: FakeServer, session: Session) -> None:
        self.server, self.session = server, session

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.server, self.session)

    def add_output_converter(self, *_: Any) -> None:  # pyodbc's shape
        pass

    def commit(self) -> None:
        self.server.commit(self.session)

    def rollback(self) -> None:
        self.server.rollback(self.session)

    def close(self) -> None:
        self.server.log.append((self.session.id, "close", ""))
        self.server.end_session(self.session)
