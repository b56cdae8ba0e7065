"""``workers`` runs at a time, each in its own process, followed to the end; stopped and
recorded on Ctrl-C or SIGTERM (:mod:`msd_dagster.stopping`)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from msd_dagster import stopping
from msd_dagster.runs.cleanup import record_unfinished
from msd_dagster.runs.launch import RunTarget, create_run, start_run_process
from msd_dagster.runs.progress import FolderOutcome, RunProgress
from msd_dagster.runs.tags import launcher_tags, partition_tags


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

    def _start(
        self, target: RunTarget, tags: dict[str, str]
    ) -> tuple[dg.DagsterRun, multiprocessing.process.BaseProcess]:
        run = create_run(
            self.instance, target, self.location_name, {**launcher_tags(self.load_id), **tags}
        )
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
            record_unfinished(
                self.instance, run, "interrupted: msd-dagster load was stopped (Ctrl-C or SIGTERM)"
            )
        return killed

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
                    record_unfinished(self.instance, entry.run, ended)
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
        return record_unfinished(
            self.instance, run, f"its process ended with exit code {process.exitcode}"
        )
