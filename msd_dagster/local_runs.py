"""How ``msd-dagster load`` runs jobs: created as the UI creates them, executed in local processes.

* A run is created in the Dagster instance with the origin of the code location that
  ``dagster dev`` loads from ``workspace.yaml`` and with the same job snapshot, so the UI treats
  it as one of its own ("Re-execute", "From failure"). A folder run is what the asset graph
  launches for ``load_folders``' assets: a run of the implicit asset job with the same asset
  and check selection (:class:`RunTarget`), so it has the same snapshot and steps.
* The folders to load are split into runs over contiguous ranges of partitions
  (:func:`plan_folder_runs`): Dagster's fixed cost per run is shared by several folders.
* Each run executes in a forked process (the parent has imported everything already), which
  dies with its parent (``PR_SET_PDEATHSIG``) and gives its memory back when the run ends.
* The parent follows every running run through the instance's event log
  (:class:`RunProgress`): a folder is reported as soon as its twelve tables are loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from msd_dagster import event_metadata as em
from msd_dagster import stopping
from msd_dagster.dagster_compat import (
    LoadableTargetOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
    ReconstructableJob,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    code_location_job,
    create_run_like_the_ui,
    execute_run,
)
from msd_dagster.defs.assets.folders import RAW_KEY
from msd_dagster.defs.tables import normalized_key, warehouse_key
from msd_dagster.warehouse.schema import MSD_TABLES

DEFINITIONS_MODULE = "msd_dagster.definitions"
DEFINITIONS_ATTRIBUTE = "defs"
REPOSITORY_NAME = "__repository__"  # what a Definitions object is called in a code location
LOAD_TAG = "msd/load"  # one id per `msd-dagster load`, on each of its runs
LAUNCHED_BY_TAG = "msd/launched_by"
PID_TAG = "msd/pid"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Folders per run: enough runs for every worker to stay busy to the end, few enough that
# Dagster's cost per run is shared; never more than this.
MAX_FOLDERS_PER_RUN = 32
RUNS_PER_WORKER = 4
_PR_SET_PDEATHSIG = 1


def code_location_origin(location_name: str) -> ManagedGrpcPythonEnvCodeLocationOrigin:
    """The origin ``dagster dev`` gives the location of ``workspace.yaml``."""
    return ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=os.getcwd(),
        ),
        location_name=location_name,
    )


def job_origin(location_name: str, job_name: str) -> RemoteJobOrigin:
    return RemoteRepositoryOrigin(
        code_location_origin(location_name), REPOSITORY_NAME
    ).get_job_origin(job_name)


def plan_folder_runs(
    order: Sequence[str],
    selected: Collection[str],
    workers: int,
    max_per_run: int = MAX_FOLDERS_PER_RUN,
) -> list[list[str]]:
    """The selected folders as runs of consecutive partitions (a run targets a key range of
    the partitions definition, in ``order``, the instance's order), about
    ``RUNS_PER_WORKER`` runs per worker, each at most ``max_per_run`` folders."""
    wanted = set(selected)
    size = max(1, min(max_per_run, math.ceil(len(wanted) / (RUNS_PER_WORKER * max(1, workers)))))
    runs: list[list[str]] = []
    current: list[str] = []
    for key in order:
        if key in wanted and len(current) < size:
            current.append(key)
            continue
        if current:
            runs.append(current)
        current = [key] if key in wanted else []
    if current:
        runs.append(current)
    return runs


def partition_tags(folders: Sequence[str]) -> dict[str, str]:
    """The tags by which a run targets one folder or a range of them."""
    if len(folders) == 1:
        return {PARTITION_TAG: folders[0]}
    return {RANGE_START_TAG: folders[0], RANGE_END_TAG: folders[-1]}


@dataclass(frozen=True)
class RunTarget:
    """What a run executes: the job ``job_fn()`` returns (a module-level function, which
    ``dg.reconstructable`` re-imports in the run's process), or, with a selection, these assets
    and checks of that job of the code location, as the UI selects them."""

    job_fn: Callable[[], dg.JobDefinition]
    asset_selection: frozenset[dg.AssetKey] | None = None
    asset_check_selection: frozenset[dg.AssetCheckKey] = frozenset()

    def reconstructable(self) -> ReconstructableJob:
        """The job as a run's process re-imports it (Dagster then subsets it by the run's
        selection)."""
        if self.asset_selection is None:
            return dg.reconstructable(self.job_fn)
        return code_location_job(DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, self.job_fn().name)


def folder_runs_target() -> RunTarget:
    """Folder runs: ``load_folders``' assets and checks in the implicit asset job, exactly as
    the asset graph (global, or the warehouse group) and asset backfills launch them."""
    from msd_dagster.definitions import asset_job, folder_load_selection

    assets, checks = folder_load_selection()
    return RunTarget(asset_job, assets, checks)


# The whole event log goes to the instance (and the UI); the terminal gets progress.
CLI_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def create_run(
    instance: dg.DagsterInstance,
    target: RunTarget,
    location_name: str,
    tags: dict[str, str],
) -> dg.DagsterRun:
    """A run of ``target`` recorded as the code location's own (origin and snapshot)."""
    job = target.job_fn()
    remote_origin = job_origin(location_name, job.name)
    code_origin = target.reconstructable().get_python_origin()
    if target.asset_selection is None:
        return instance.create_run_for_job(
            job_def=job,
            run_config=CLI_RUN_CONFIG,
            tags=tags,
            remote_job_origin=remote_origin,
            job_code_origin=code_origin,
        )
    from msd_dagster.definitions import defs

    return create_run_like_the_ui(
        instance,
        job,
        defs.get_repository_def(),
        asset_selection=target.asset_selection,
        asset_check_selection=target.asset_check_selection,
        run_config=CLI_RUN_CONFIG,
        tags=tags,
        remote_job_origin=remote_origin,
        job_code_origin=code_origin,
    )


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (a killed CLI leaves no
    worker behind holding database connections)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent terminates its workers itself
        pass


def _execute(target: RunTarget, run_id: str, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # Its own process group: Ctrl-C in the terminal reaches the CLI only, which stops the
    # runs itself (and records them).
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stopping.install_worker_handler()
    instance = dg.DagsterInstance.get()
    run = instance.get_run_by_id(run_id)
    result = execute_run(target.reconstructable(), run, instance)
    sys.stdout.flush()
    os._exit(0 if result.success else 1)


def start_run_process(target: RunTarget, run: dg.DagsterRun) -> multiprocessing.process.BaseProcess:
    """Execute ``run`` in a forked child process; returns the started process. (Dagster
    subsets the job by the run's asset and check selection.)"""
    process = multiprocessing.get_context("fork").Process(
        target=_execute, args=(target, run.run_id, os.getpid()), daemon=True
    )
    process.start()
    return process


@dataclass
class FolderOutcome:
    """What the CLI reports per folder."""

    partition: str
    success: bool
    seconds: float = 0.0
    tracks: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # em.REJECTED_LISTED
    rejected_files: int = 0  # all of them
    failed_checks: list[str] = field(default_factory=list)
    error: str = ""
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM before its commit


_WAREHOUSE_TABLES = {warehouse_key(t.name): t.name for t in MSD_TABLES}
_SONGS_KEY = normalized_key("songs")


class RunProgress:
    """Follows one folder run through the event log: which folders finished, and how."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, folders: Sequence[str]):
        self.instance = instance
        self.run_id = run_id
        self.folders = list(folders)
        self.reported: set[str] = set()
        self._cursor: str | None = None
        self._outcomes: dict[str, FolderOutcome] = {}
        self._started: dict[str, float] = {}
        self._failures: dict[str, str] = {}
        self._run_error = ""

    def _outcome(self, partition: str) -> FolderOutcome:
        return self._outcomes.setdefault(partition, FolderOutcome(partition, success=False))

    def _records(self) -> Iterator[Any]:
        while True:
            page = self.instance.get_records_for_run(
                self.run_id,
                cursor=self._cursor,
                of_type={
                    dg.DagsterEventType.ASSET_MATERIALIZATION,
                    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                    dg.DagsterEventType.STEP_FAILURE,
                    dg.DagsterEventType.RUN_FAILURE,
                },
                limit=1000,
            )
            yield from page.records
            self._cursor = page.cursor
            if not page.has_more:
                return

    def poll(self) -> list[FolderOutcome]:
        """The folders whose tables were all loaded since the last poll."""
        finished = []
        for record in self._records():
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None:
                continue
            if event.is_step_materialization:
                materialization = event.step_materialization_data.materialization
                partition = str(materialization.partition)
                outcome = self._outcome(partition)
                metadata = materialization.metadata
                key = materialization.asset_key
                if key == RAW_KEY:
                    listed = metadata.get(em.LIST_SECONDS)
                    self._started[partition] = entry.timestamp - (listed.value if listed else 0)
                elif key == _SONGS_KEY:
                    outcome.tracks = int(metadata[em.TRACKS].value)
                    outcome.rejected = em.rejected_from_entries(metadata[em.REJECTED_LIST].value)
                    outcome.rejected_files = int(metadata[em.REJECTED_FILES].value)
                elif key in _WAREHOUSE_TABLES:
                    outcome.rows[_WAREHOUSE_TABLES[key]] = int(metadata[em.ROWS_WRITTEN].value)
                    if len(outcome.rows) == len(_WAREHOUSE_TABLES):
                        outcome.success = True
                        outcome.seconds = entry.timestamp - self._started.get(
                            partition, entry.timestamp
                        )
                        finished.append(outcome)
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                if not evaluation.passed and evaluation.partition:
                    self._outcome(evaluation.partition).failed_checks.append(
                        f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} "
                        f"({evaluation.description})"
                    )
            elif event.is_step_failure:
                failure = event.step_failure_data
                user = failure.user_failure_data
                if user is not None and em.FAILED_FOLDERS in user.metadata:
                    self._failures.update(
                        em.failures_by_folder(user.metadata[em.FAILED_FOLDERS].value)
                    )
                self._run_error = (
                    (user.description if user is not None else None)
                    or (failure.error.message.strip() if failure.error else "")
                    or event.message
                    or "step failed"
                )
            elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not self._run_error:
                self._run_error = event.message or "run failed"
        self.reported.update(o.partition for o in finished)
        return finished

    @property
    def error(self) -> str:
        return self._run_error

    def finish(self, exit_note: str = "") -> list[FolderOutcome]:
        """After the run's process ended: the folders still unreported, as failures."""
        done = self.poll()
        for partition in self.folders:
            if partition in self.reported:
                continue
            outcome = self._outcome(partition)
            outcome.error = (
                self._failures.get(partition)
                or self._run_error
                or exit_note
                or "not loaded (the run ended before this folder)"
            )
            done.append(outcome)
            self.reported.add(partition)
        return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs of ``msd-dagster load`` on this machine left unfinished by a load that is gone
    (killed with SIGKILL, machine lost power): recorded as failed, as Dagster's run monitoring
    would. Their folders' transactions were rolled back by the database. Returns their ids."""
    host = socket.gethostname()
    unfinished = instance.get_runs(
        filters=dg.RunsFilter(
            tags={LAUNCHED_BY_TAG: "cli"},
            statuses=[
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        )
    )
    failed = []
    for run in unfinished:
        owner_host, _, pid = run.tags.get(PID_TAG, "").rpartition(":")
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            instance.report_run_failed(
                run, f"the msd-dagster load that ran it (process {pid}) ended without finishing it"
            )
            failed.append(run.run_id)
    return failed


@dataclass
class _ActiveRun:
    run: dg.DagsterRun
    process: multiprocessing.process.BaseProcess
    progress: RunProgress


# A stopped worker finishes the records of a folder it has just committed; then it is killed.
STOP_GRACE_SECONDS = 3.0
INTERRUPTED = "interrupted: rolled back"
INTERRUPTED_KILLED = (
    f"interrupted: its process did not stop within {STOP_GRACE_SECONDS:.0f} s and was killed; "
    "if it was committing this folder, the folder may be loaded: run the same command again"
)


class LoadInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the load; the runs in progress were stopped and recorded."""


class LocalRunner:
    """Creates runs as the code location's own and executes them, ``workers`` at a time."""

    POLL_SECONDS = 0.25

    def __init__(
        self,
        instance: dg.DagsterInstance,
        workers: int,
        load_id: str,
        stop_requested: Callable[[], str | None],
        location_name: str = "msd_dagster",
    ) -> None:
        self.instance = instance
        self.workers = max(1, workers)
        self.load_id = load_id
        self.location_name = location_name
        # The command's stop requests (msd_dagster.stopping): the signal's name, once asked.
        self._stop_requested = stop_requested

    def _tags(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            LAUNCHED_BY_TAG: "cli",
            LOAD_TAG: self.load_id,
            PID_TAG: f"{socket.gethostname()}:{os.getpid()}",
            **extra,
        }

    def _start(
        self, target: RunTarget, tags: dict[str, str]
    ) -> tuple[dg.DagsterRun, multiprocessing.process.BaseProcess]:
        run = create_run(self.instance, target, self.location_name, self._tags(tags))
        return run, start_run_process(target, run)

    def _stop(
        self, runs: Sequence[tuple[dg.DagsterRun, multiprocessing.process.BaseProcess]]
    ) -> set[str]:
        """Stop the processes (a folder in progress rolls back; one just committed is recorded
        first), kill those still there after ``STOP_GRACE_SECONDS``, and record their runs
        failed. Returns the ids of the runs whose process had to be killed."""
        for _run, process in runs:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, stopping.WORKER_STOP_SIGNAL)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        waiting = [process.sentinel for _run, process in runs if process.is_alive()]
        while waiting and time.monotonic() < deadline:
            ended = multiprocessing.connection.wait(waiting, deadline - time.monotonic())
            waiting = [sentinel for sentinel in waiting if sentinel not in ended]
        killed = set()
        for run, process in runs:
            if process.is_alive():
                process.kill()
                killed.add(run.run_id)
        for run, process in runs:
            process.join(5)
            self._record_unfinished(
                run, "interrupted: msd-dagster load was stopped (Ctrl-C or SIGTERM)"
            )
        return killed

    def _record_unfinished(self, run: dg.DagsterRun, reason: str) -> dg.DagsterRun:
        """The run as stored, recorded failed first if its process ended without finishing it
        (killed, out of memory), so that the UI does not show it started forever."""
        current = self.instance.get_run_by_id(run.run_id)
        if current is not None and not current.is_finished:
            self.instance.report_run_failed(current, reason)
            current = self.instance.get_run_by_id(run.run_id)
        return current or run

    def _check_stop(self) -> None:
        """Act on a stop at the runner's own check points, at most ``POLL_SECONDS`` after it
        was asked for (never from a signal handler, whose exception could land in a finalizer
        or a library's cleanup, where Python swallows it)."""
        if name := self._stop_requested():
            raise LoadInterrupted(name)

    def run_folders(
        self,
        plan: Sequence[Sequence[str]],
        target: RunTarget,
        report: Callable[[FolderOutcome], None],
    ) -> None:
        """Execute one run per planned folder list; ``report`` each folder when it is done."""
        pending = list(plan)
        active: dict[Any, _ActiveRun] = {}
        try:
            while pending or active:
                while pending and len(active) < self.workers:
                    self._check_stop()
                    folders = pending.pop(0)
                    run, process = self._start(target, partition_tags(folders))
                    progress = RunProgress(self.instance, run.run_id, folders)
                    active[process.sentinel] = _ActiveRun(run, process, progress)
                ready = multiprocessing.connection.wait(list(active), timeout=self.POLL_SECONDS)
                self._check_stop()
                for entry in active.values():
                    for outcome in entry.progress.poll():
                        report(outcome)
                for sentinel in ready:
                    entry = active.pop(sentinel)
                    entry.process.join()
                    code = entry.process.exitcode
                    ended = f"its process ended with exit code {code}"
                    note = "" if code in (0, 1) else ended
                    self._record_unfinished(entry.run, ended)
                    for outcome in entry.progress.finish(note):
                        report(outcome)
            self._check_stop()  # a stop asked for while the last folders were reported
        except LoadInterrupted:
            killed = self._stop([(entry.run, entry.process) for entry in active.values()])
            for entry in active.values():
                forced = entry.run.run_id in killed
                for outcome in entry.progress.finish(INTERRUPTED_KILLED if forced else INTERRUPTED):
                    outcome.interrupted = not forced and not outcome.success
                    report(outcome)
            raise

    def run_unpartitioned(self, job_fn: Callable[[], dg.JobDefinition]) -> dg.DagsterRun:
        """Execute one run of an unpartitioned job and wait for it; the finished run."""
        run, process = self._start(RunTarget(job_fn), {})
        try:
            while process.is_alive():
                process.join(self.POLL_SECONDS)
                self._check_stop()
            self._check_stop()
        except LoadInterrupted:
            self._stop([(run, process)])
            raise
        return self._record_unfinished(run, f"its process ended with exit code {process.exitcode}")

    def run_error(self, run: dg.DagsterRun) -> str:
        """Why a finished run failed: its step failure's description, else the run's."""
        progress = RunProgress(self.instance, run.run_id, [])
        progress.poll()
        return progress.error or "failed"

    def _events(self, run: dg.DagsterRun, event_type: dg.DagsterEventType) -> list[Any]:
        records = self.instance.get_records_for_run(run.run_id, of_type=event_type).records
        return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event]

    def materializations(self, run: dg.DagsterRun) -> list[dg.AssetMaterialization]:
        return [
            e.step_materialization_data.materialization
            for e in self._events(run, dg.DagsterEventType.ASSET_MATERIALIZATION)
        ]

    def check_evaluations(self, run: dg.DagsterRun) -> list[dg.AssetCheckEvaluation]:
        return [
            e.asset_check_evaluation_data
            for e in self._events(run, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
