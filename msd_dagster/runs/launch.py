"""Creating a run as the code location's own and executing it in a forked process.

A run is recorded with the origin of the code location that ``dagster dev`` loads from
``workspace.yaml`` and with the same job snapshot, so the UI treats it as one of its own
("Re-execute", "From failure"). Each run executes in a forked process (the parent has imported
everything already), which dies with its parent (``PR_SET_PDEATHSIG``) and gives its memory
back when the run ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

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

DEFINITIONS_MODULE = "msd_dagster.definitions"
DEFINITIONS_ATTRIBUTE = "defs"
REPOSITORY_NAME = "__repository__"  # what a Definitions object is called in a code location
_PR_SET_PDEATHSIG = 1

# The whole event log goes to the instance (and the UI); the terminal gets progress.
CLI_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


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
    """The origin of a job of that code location, as the UI records it on its runs."""
    return RemoteRepositoryOrigin(
        code_location_origin(location_name), REPOSITORY_NAME
    ).get_job_origin(job_name)


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
