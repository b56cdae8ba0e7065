"""Following runs through the instance's event log: which folders finished, and how, and
what a finished run materialized, checked or failed with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from msd_dagster import event_metadata as em
from msd_dagster.defs.tables import RAW_KEY, TABLE_ORDER, normalized_key, warehouse_key


@dataclass
class FolderOutcome:
    """What the CLI reports per folder."""

    partition: str
    success: bool
    seconds: float = 0.0
    tracks: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # the first em.REJECTED_LISTED
    rejected_files: int = 0  # all of them
    failed_checks: list[str] = field(default_factory=list)
    error: str = ""
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM before its commit


_WAREHOUSE_TABLES = {warehouse_key(table): table for table in TABLE_ORDER}
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


def run_error(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Why a finished run failed: its step failure's description, else the run's."""
    progress = RunProgress(instance, run.run_id, [])
    progress.poll()
    return progress.error or "failed"


def _events(
    instance: dg.DagsterInstance, run: dg.DagsterRun, event_type: dg.DagsterEventType
) -> list[Any]:
    records = instance.get_records_for_run(run.run_id, of_type=event_type).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event]


def materializations(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> list[dg.AssetMaterialization]:
    """What the run materialized."""
    return [
        e.step_materialization_data.materialization
        for e in _events(instance, run, dg.DagsterEventType.ASSET_MATERIALIZATION)
    ]


def check_evaluations(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> list[dg.AssetCheckEvaluation]:
    """The check results the run recorded."""
    return [
        e.asset_check_evaluation_data
        for e in _events(instance, run, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
