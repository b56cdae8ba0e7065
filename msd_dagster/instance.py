"""The Dagster instance msd-dagster recommends: Dagster's SQLite storage with open connections.

Dagster's default SQLite storage opens a new SQLAlchemy engine, a new SQLite connection and a
cold statement cache for every event it stores, and closes them again (in WAL mode the last
close of a file also checkpoints it). A partition load records a few dozen events per folder,
so that per-event cost, ~8 ms of CPU and more when the disk is busy, was most of a small
folder's load time. :class:`PooledSqliteStorage` keeps one engine per database file and its
connections open, and commits without waiting for the disk (``synchronous=NORMAL``, safe in
WAL mode: a power loss may drop the last events, never corrupt a file).

It writes the very same files as ``storage: sqlite`` (``history/runs.db``,
``history/runs/<run id>.db``, ``history/runs/index.db``, ``schedules/schedules.db``) with the
same schema, so removing it from ``dagster.yaml`` leaves every record readable by the default
storage, and the other way round.

It overrides ``SqliteEventLogStorage._connect``, ``SqliteRunStorage.connect`` (the methods
that open connections) and ``has_table`` (cached), and builds on ``DagsterSqliteStorage``'s
folder layout; ``msd_dagster_tests/test_instance.py`` pins what it relies on, so a Dagster
upgrade that changes them fails loudly instead of silently falling back.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData

# What `msd-dagster load` writes into a new DAGSTER_HOME (and the README recommends for one's own).
RECOMMENDED_DAGSTER_YAML = """\
# Written by msd-dagster (see the README, "Open the UI").
# Dagster's SQLite storage, same files and records, with its connections kept open.
storage:
  custom:
    module: msd_dagster.instance
    class: PooledSqliteStorage
    config:
      base_dir: {base_dir}
# Runs' stdout/stderr are not captured: every event the assets report is in the event log.
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def recommended_dagster_yaml(home: str | os.PathLike[str]) -> str:
    """The recommended ``dagster.yaml`` for the instance folder ``home`` (absolute path)."""
    return RECOMMENDED_DAGSTER_YAML.format(base_dir=json.dumps(os.path.abspath(home)))


def write_recommended_config(home: str | os.PathLike[str]) -> Path:
    """Write :func:`recommended_dagster_yaml` to ``home/dagster.yaml``; return its path."""
    config = Path(home) / "dagster.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(recommended_dagster_yaml(home))
    return config


# Run shards kept open per process besides the index: a worker writes one run at a time, a
# webserver reads a few.
OPEN_RUN_SHARDS = 8


def _sqlite_engine(conn_string: str) -> sa.Engine:
    """An engine whose connections stay open and commit without fsync (WAL mode)."""
    engine = sa.create_engine(
        conn_string,
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=8,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _wal_without_fsync(dbapi_connection: Any, _record: Any) -> None:
        # WAL before anything is written: a new run's database is created without a single
        # fsync (Dagster switches a new file to WAL only after creating its tables).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class _EngineCache:
    """Engines by connection string, least recently used dropped beyond ``size`` (``keep`` is
    never dropped); rebuilt in a forked child, which must not share its parent's sockets."""

    def __init__(self, size: int, keep: str | None = None) -> None:
        self._size = size
        self._keep = keep
        self._engines: OrderedDict[str, sa.Engine] = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self, conn_string: str) -> sa.Engine:
        with self._lock:
            if self._pid != os.getpid():
                for engine in self._engines.values():
                    engine.dispose(close=False)  # the parent's connections stay the parent's
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.get(conn_string)
            if engine is None:
                engine = self._engines[conn_string] = _sqlite_engine(conn_string)
            self._engines.move_to_end(conn_string)
            while len(self._engines) > self._size:
                oldest = next(k for k in self._engines if k != self._keep)
                self._engines.pop(oldest).dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` (one database per run plus an index) with open connections."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engine_cache: _EngineCache | None = None
        super().__init__(base_dir, inst_data)
        self._engine_cache = _EngineCache(
            OPEN_RUN_SHARDS + 1, keep=self.conn_string_for_shard(INDEX_SHARD_NAME)
        )
        self._tables: set[str] = set()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        if self._engine_cache is None:  # during the base class's __init__
            with super()._connect(shard) as conn:
                yield conn
            return
        with self._db_lock:
            engine = self._engine_cache.get(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        # Asked before every asset check event, sometimes inside an index transaction (so not
        # through _connect, whose lock is held then); Dagster creates tables, never drops them.
        if table_name in self._tables or self._engine_cache is None:
            return table_name in self._tables or super().has_table(table_name)
        engine = self._engine_cache.get(self.conn_string_for_shard(INDEX_SHARD_NAME))
        with engine.connect() as conn:
            found = bool(conn.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def dispose(self) -> None:
        if self._engine_cache is not None:
            self._engine_cache.dispose()
        super().dispose()


class PooledSqliteRunStorage(SqliteRunStorage):
    """``SqliteRunStorage`` (``history/runs.db``) with open connections."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engine_cache = _EngineCache(1)
        super().__init__(conn_string, inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteRunStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        engine = self._engine_cache.get(self._conn_string)
        with engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self._engine_cache.dispose()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """``storage: sqlite`` with open connections; configured as ``storage: custom:`` in
    ``dagster.yaml`` (:data:`RECOMMENDED_DAGSTER_YAML`)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteStorage:
        os.makedirs(config_value["base_dir"], exist_ok=True)
        return cls(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(
            __name__,
            PooledSqliteEventLogStorage.__name__,
            f"base_dir: {_event_logs_directory(self.base_dir)!r}\n",
        )

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(
            __name__,
            PooledSqliteRunStorage.__name__,
            f"base_dir: {_runs_directory(self.base_dir)!r}\n",
        )
