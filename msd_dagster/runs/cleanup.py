"""Runs left unfinished by a process that is gone, recorded as failed (as Dagster's run
monitoring would), so that the UI does not show them started forever."""

from __future__ import annotations

import os

import dagster as dg

from msd_dagster.runs.tags import LAUNCHED_BY_CLI, LAUNCHED_BY_TAG, launcher_on_this_host


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
    unfinished = instance.get_runs(
        filters=dg.RunsFilter(
            tags={LAUNCHED_BY_TAG: LAUNCHED_BY_CLI},
            statuses=[
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        )
    )
    failed = []
    for run in unfinished:
        pid = launcher_on_this_host(run.tags)
        if pid is not None and not _alive(pid):
            instance.report_run_failed(
                run, f"the msd-dagster load that ran it (process {pid}) ended without finishing it"
            )
            failed.append(run.run_id)
    return failed


def record_unfinished(
    instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str
) -> dg.DagsterRun:
    """The run as stored, recorded failed first if its process ended without finishing it
    (killed, out of memory), so that the UI does not show it started forever."""
    current = instance.get_run_by_id(run.run_id)
    if current is not None and not current.is_finished:
        instance.report_run_failed(current, reason)
        current = instance.get_run_by_id(run.run_id)
    return current or run
