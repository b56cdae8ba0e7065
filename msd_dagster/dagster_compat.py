"""Every use of Dagster's private modules and members in msd-dagster, in one place.

Dagster 1.13 has no public API for what these do. Each entry says why it is needed and which
public API was tried first. ``msd_dagster_tests/test_dagster_compat.py`` holds the behaviour
tests of what relies on them (live events seen by a watcher during a run, per-folder check
records of a ranged run, a CLI run re-executed from the UI);
``scripts/check_dagster_upgrade.sh`` runs them against the newest Dagster 1.13.x in a fresh
environment, so that an upgrade is a measured decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

# Why: a check result yielded for one folder of a ranged run must name the materialization it
# is about (the UI counts it as current only then). Public API tried: `dg.AssetCheckResult`
# resolves its target by `context.partition_key`, which a ranged run does not have, and may be
# yielded once per check and step only.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

# Why: executes an already created run (the code location's own, above) in this process.
# Public API tried: `dg.execute_job` always creates a new run; `instance.launch_run` starts a
# `dagster api execute_run` process that imports everything again (~2 s per run).
from dagster._core.execution.api import execute_run

# Why: a run created by `msd-dagster load` must carry the origin of the code location that
# `dagster dev` loads, so that the UI re-executes it as its own. Public API tried:
# `DagsterInstance.create_run_for_job(remote_job_origin=...)` takes these objects, but Dagster
# exports no constructor for them; `dg.execute_job` records the run with no remote origin.
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

# Why: the base classes of `msd_dagster.instance`'s storage (Dagster's SQLite storage with its
# connections kept open). Public API tried: `storage: sqlite` in dagster.yaml opens an engine
# and a connection per event: 0.42 s per folder against 0.16-0.18 s (docs/benchmarks.md,
# target 4). Dagster exports none of these classes.
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

# Why: part of the code location origin above (how `dagster dev` loads `workspace.yaml`).
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

# Why: the type of `inst_data` that Dagster passes to a configurable storage class. Public API
# tried: none exists (`dagster_shared.serdes` holds the same class, no more public).
from dagster._serdes import ConfigurableClassData

# Why: turns off the capture of each run's stdout/stderr (a helper process per run) in the
# recommended dagster.yaml. Public API tried: `compute_logs:` accepts only a module path, and
# Dagster's no-op manager lives in a private module.
NOOP_COMPUTE_LOGS = ("dagster._core.storage.noop_compute_log_manager", "NoOpComputeLogManager")

__all__ = [
    "INDEX_SHARD_NAME",
    "NOOP_COMPUTE_LOGS",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "AssetCheckEvaluationTargetMaterializationData",
    "ConfigurableClassData",
    "DagsterSqliteStorage",
    "EventLogStorageWithEngines",
    "LoadableTargetOrigin",
    "ManagedGrpcPythonEnvCodeLocationOrigin",
    "RemoteJobOrigin",
    "RemoteRepositoryOrigin",
    "SqliteRunStorage",
    "SqliteScheduleStorage",
    "execute_run",
    "init_sqlite_storage",
    "sqlite_storage_folders",
]


def sqlite_storage_folders(base_dir: str) -> tuple[str, str, str]:
    """Where `storage: sqlite` keeps runs, event logs and schedules under ``base_dir``.

    Why: the pooled storage writes the very same files. Public API tried: none (Dagster's
    own helpers are private)."""
    return _runs_directory(base_dir), _event_logs_directory(base_dir), _schedule_directory(base_dir)


def init_sqlite_storage(
    storage: DagsterSqliteStorage,
    base_dir: str,
    run_storage: Any,
    event_log_storage: Any,
    schedule_storage: Any,
    inst_data: ConfigurableClassData | None,
) -> None:
    """``DagsterSqliteStorage.__init__`` with the given storages instead of its own.

    Why: its constructor builds Dagster's storages, which would open the same files a second
    time. Public API tried: calling it, then replacing the storages (each file is opened and
    migrated twice per process)."""
    storage.base_dir = base_dir
    storage._run_storage = run_storage
    storage._event_log_storage = event_log_storage
    storage._schedule_storage = schedule_storage
    storage._inst_data = inst_data
    super(DagsterSqliteStorage, storage).__init__()


class EventLogStorageWithEngines(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose connections come from :meth:`engine_for` (``None``:
    Dagster's own, an engine per connection).

    Why: Dagster opens a new engine in ``_connect`` for every event; this overrides that one
    private method (and uses the ``_db_lock``, ``_initialized_dbs`` and ``_initdb`` it uses).
    Public API tried: none lets a storage reuse connections."""

    def engine_for(self, conn_string: str) -> sa.Engine | None:
        return None

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        engine = self.engine_for(self.conn_string_for_shard(shard))
        if engine is None:
            with super()._connect(shard) as conn:
                yield conn
            return
        with self._db_lock:
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn
