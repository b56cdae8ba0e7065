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

Dagster's watcher of a run's events (the UI's run page) waits for a change of the run's
``<run id>.db`` file; with connections kept open, new events stay in the WAL file until a
checkpoint, so the storage touches the run's file after each event it stores
(:func:`wake_watchers`).

What it needs of Dagster's internals is in :mod:`msd_dagster.dagster_compat`, with the
behaviour tests that an upgrade must pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from msd_dagster.dagster_compat import (
    INDEX_SHARD_NAME,
    NOOP_COMPUTE_LOGS,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    ConfigurableClassData,
    DagsterSqliteStorage,
    EventLogStorageWithEngines,
    SqliteRunStorage,
    SqliteScheduleStorage,
    init_sqlite_storage,
    sqlite_storage_folders,
)

# What `msd-dagster load` writes into a new DAGSTER_HOME (and docs/deployment.md recommends for
# one's own).
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
  module: {compute_logs_module}
  class: {compute_logs_class}
"""


def recommended_dagster_yaml(home: str | os.PathLike[str]) -> str:
    """The recommended ``dagster.yaml`` for the instance folder ``home`` (absolute path)."""
    module, cls = NOOP_COMPUTE_LOGS
    return RECOMMENDED_DAGSTER_YAML.format(
        base_dir=json.dumps(os.path.abspath(home)),
        compute_logs_module=module,
        compute_logs_class=cls,
    )


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


class PooledSqliteEventLogStorage(EventLogStorageWithEngines):
    """``SqliteEventLogStorage`` (one database per run plus an index) with open connections,
    which wakes Dagster's event watchers after every event it stores."""

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

    def engine_for(self, conn_string: str) -> sa.Engine | None:
        # None during the base class's __init__: Dagster's own connection then.
        return self._engine_cache.get(conn_string) if self._engine_cache is not None else None

    def store_event(self, event: Any) -> None:
        super().store_event(event)
        if event.run_id:
            wake_watchers(self.path_for_shard(event.run_id))

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


def wake_watchers(run_database: str) -> None:
    """Tell Dagster's event watchers of a run (the UI's run page) that it has new events.

    They wait for a change of the run's ``<run id>.db`` file (inotify through ``watchdog``),
    but with the connections kept open in WAL mode new events stay in the ``-wal`` file until a
    checkpoint; touching the file is the change they wait for (an attribute change, which
    ``watchdog`` reports as a modification), at the cost of one system call."""
    # A file of another user: the watchers then see the next checkpoint.
    with contextlib.suppress(OSError):
        os.utime(run_database)


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
        runs, event_logs, schedules = sqlite_storage_folders(base_dir)
        init_sqlite_storage(
            self,
            base_dir,
            run_storage=PooledSqliteRunStorage.from_local(runs),
            event_log_storage=PooledSqliteEventLogStorage(event_logs),
            schedule_storage=SqliteScheduleStorage.from_local(schedules),
            inst_data=inst_data,
        )

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteStorage:
        os.makedirs(config_value["base_dir"], exist_ok=True)
        return cls(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return _part_data(PooledSqliteEventLogStorage, sqlite_storage_folders(self.base_dir)[1])

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        return _part_data(PooledSqliteRunStorage, sqlite_storage_folders(self.base_dir)[0])


def _part_data(storage: type, base_dir: str) -> ConfigurableClassData:
    """How Dagster rebuilds one part of :class:`PooledSqliteStorage` on its own."""
    return ConfigurableClassData(__name__, storage.__name__, f"base_dir: {base_dir!r}\n")
