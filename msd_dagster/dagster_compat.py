"""Every use of Dagster's private modules and members in msd-dagster, in one place.

Dagster 1.13 has no public API for what these do. Each entry says why it is needed and which
public API was tried first. ``msd_dagster_tests/test_dagster_compat.py`` holds the behaviour
tests of what relies on them (live events seen by a watcher during a run, per-folder check
records of a ranged run, a CLI run re-executed from the UI);
``scripts/check_dagster_upgrade.sh`` runs them against the newest Dagster 1.13.x in a fresh
environment, so that an upgrade is a measured decision.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from typing import Any

import dagster as dg
import sqlalchemy as sa

# Why: a check result yielded for one folder of a ranged run must name the materialization it
# is about (the UI counts it as current only then). Public API tried: `dg.AssetCheckResult`
# resolves its target by `context.partition_key`, which a ranged run does not have, and may be
# yielded once per check and step only.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

# Why: the implicit asset job, reconstructed in a run's process from the code location (the
# module and its `Definitions`), as `dagster dev` reconstructs it. Public API tried:
# `dg.reconstructable(fn)` wraps the job in a repository of its own, where `__ASSET_JOB` is a
# reserved name and is refused.
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository

# Why: executes an already created run (the code location's own, above) in this process.
# Public API tried: `dg.execute_job` always creates a new run; `instance.launch_run` starts a
# `dagster api execute_run` process that imports everything again (~2 s per run).
# `create_execution_plan`: see `create_run_like_the_ui`.
from dagster._core.execution.api import create_execution_plan, execute_run

# Why: a run created by `msd-dagster load` must carry the origin of the code location that
# `dagster dev` loads, so that the UI re-executes it as its own. Public API tried:
# `DagsterInstance.create_run_for_job(remote_job_origin=...)` takes these objects, but Dagster
# exports no constructor for them; `dg.execute_job` records the run with no remote origin.
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

# Why: the execution plan snapshot stored with a run, as the code server builds it for the UI
# (see `create_run_like_the_ui`).
from dagster._core.snap import snapshot_from_execution_plan

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

# Why: the request by which the UI asks the code server for a job's subset; its serialization
# decides the type of each selection the code server subsets with (see
# `create_run_like_the_ui`).
from dagster._grpc.types import JobSubsetSnapshotArgs

# Why: the type of `inst_data` that Dagster passes to a configurable storage class. Public API
# tried: none exists (`dagster_shared.serdes` holds the same class, no more public).
from dagster._serdes import ConfigurableClassData, deserialize_value, serialize_value

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
    "ReconstructableJob",
    "RemoteRepositoryOrigin",
    "SqliteRunStorage",
    "SqliteScheduleStorage",
    "code_location_job",
    "create_run_like_the_ui",
    "job_subset_like_the_code_server",
    "execute_run",
    "init_sqlite_storage",
    "sqlite_storage_folders",
]


def code_location_job(module_name: str, attribute: str, job_name: str) -> ReconstructableJob:
    """The job ``job_name`` of the ``Definitions`` object ``module_name.attribute``, which a
    run's process re-imports (see the import of ``ReconstructableRepository`` for why)."""
    repository = ReconstructableRepository.for_module(module_name, attribute, os.getcwd())
    return repository.get_reconstructable_job(job_name)


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


def job_subset_like_the_code_server(
    job: dg.JobDefinition,
    asset_selection: AbstractSet[dg.AssetKey],
    asset_check_selection: AbstractSet[dg.AssetCheckKey],
    remote_job_origin: RemoteJobOrigin,
) -> dg.JobDefinition:
    """``job``'s subset as the code server builds it when the UI asks for one.

    The selections go through the request's serialization first, as they reach the code
    server: the subset's snapshot records the type of each set (a `set` of assets, a
    `frozenset` of checks), and so does its id."""
    received = deserialize_value(
        serialize_value(
            JobSubsetSnapshotArgs(
                job_origin=remote_job_origin,
                op_selection=None,
                asset_selection=frozenset(asset_selection),
                asset_check_selection=frozenset(asset_check_selection),
                include_parent_snapshot=False,
            )
        ),
        JobSubsetSnapshotArgs,
    )
    return job.get_subset(
        asset_selection=received.asset_selection,
        asset_check_selection=received.asset_check_selection,
    )


def create_run_like_the_ui(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    repository: dg.RepositoryDefinition,
    *,
    asset_selection: AbstractSet[dg.AssetKey],
    asset_check_selection: AbstractSet[dg.AssetCheckKey],
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    remote_job_origin: RemoteJobOrigin,
    job_code_origin: Any,
) -> dg.DagsterRun:
    """A run of the assets and checks selected in ``job``, recorded as the UI records one.

    The asset graph's "Materialize" (GraphQL ``launchPipelineExecution``) and an asset
    backfill (the backfill daemon) both ask the code server for the job's subset
    (``get_external_pipeline_subset_result``: ``job.get_subset`` and its snapshot; no parent
    snapshot for the implicit asset job) and its execution plan
    (``get_external_execution_plan_snapshot``: ``create_execution_plan`` with the repository's
    load data), then ``instance.create_run`` with both selections. This does the same in this
    process, so the run has the same job name, snapshot and steps.

    Why: ``DagsterInstance.create_run_for_job`` (the public path tried first) takes no check
    selection (every check of the assets then runs as an unselected subset, another snapshot)
    and stores the parent snapshot; the snapshot helper is private."""
    subset = job_subset_like_the_code_server(
        job, asset_selection, asset_check_selection, remote_job_origin
    )
    plan = create_execution_plan(
        subset,
        run_config=run_config,
        instance_ref=instance.get_ref() if instance.is_persistent else None,
        repository_load_data=repository.repository_load_data,
    )
    plan_snapshot = snapshot_from_execution_plan(plan, subset.get_job_snapshot_id())
    return instance.create_run(
        job_name=subset.name,
        run_id=None,
        run_config=run_config,
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags=tags,
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=plan_snapshot.step_keys_to_execute,
        execution_plan_snapshot=plan_snapshot,
        job_snapshot=subset.get_job_snapshot(),
        # The code server leaves out the implicit asset job's parent snapshot (too large).
        parent_job_snapshot=(
            None
            if job.name == repository.get_implicit_global_asset_job_def().name
            else subset.get_parent_job_snapshot()
        ),
        asset_selection=frozenset(asset_selection),
        asset_check_selection=frozenset(asset_check_selection),
        resolved_op_selection=None,
        op_selection=None,
        remote_job_origin=remote_job_origin,
        job_code_origin=job_code_origin,
        asset_graph=repository.asset_graph,
    )
