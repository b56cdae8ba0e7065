"""The steps of ``msd-dagster load`` once Dagster is imported, in order: the source and the
database are checked before any run starts (:func:`source_problem`, :func:`selected_folders`,
:func:`database_problem`); the survey is recorded in the instance and the folders planned into
runs (:func:`record_survey`); the runs execute (:mod:`msd_dagster.runs`), each folder printed
as it is done; then the AdditionalFiles, the whole-dataset check and the profile, each one
run; the summary ends it (:mod:`msd_dagster.commands.load_report`).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

from msd_dagster import settings, stopping
from msd_dagster.commands.load_report import LoadState, print_summary
from msd_dagster.commands.profile import profile_after_load
from msd_dagster.defs.assets.additional_files import LOAD_KEY, find_additional_files
from msd_dagster.defs.check_names import TOTAL_TRACKS
from msd_dagster.defs.outside_layout import outside_layout_observation
from msd_dagster.defs.partitions import msd_folders, new_folders_request
from msd_dagster.event_metadata import ROWS_WRITTEN
from msd_dagster.runs.cleanup import fail_orphaned_runs
from msd_dagster.runs.launch import folder_runs_target
from msd_dagster.runs.plan import plan_folder_runs
from msd_dagster.runs.progress import check_evaluations, materializations, run_error
from msd_dagster.runs.runner import LoadInterrupted, LocalRunner
from msd_dagster.source.layout import DatasetSurvey, SourceError
from msd_dagster.source.s3 import S3SourceError
from msd_dagster.warehouse.dialects import UnsupportedDatabaseError
from msd_dagster.warehouse.urls import database_folder

if TYPE_CHECKING:
    from msd_dagster.defs.resources import MsdSourceResource, WarehouseResource
    from msd_dagster.source.local import LocalDataset
    from msd_dagster.source.s3 import S3Dataset

    Dataset = LocalDataset | S3Dataset


def source_problem(
    source: MsdSourceResource,
) -> tuple[Dataset | None, DatasetSurvey | None, str | None]:
    """``(dataset, its survey, None)``, or ``(None, None, what to print)`` in one line when
    the source cannot be used (missing bucket, wrong prefix, rejected credentials, endpoint
    down, unreadable folder), before any run starts."""
    try:
        dataset = source.dataset()
        return dataset, dataset.survey(), None
    except dg.Failure as exc:
        return None, None, exc.description or str(exc)
    except (S3SourceError, SourceError, OSError) as exc:
        return None, None, str(exc)


def selected_folders(
    partitions: Sequence[str] | None, survey: DatasetSurvey, where: str
) -> tuple[list[str], str | None]:
    """The folders to load (``partitions``, else every folder of the survey), or what to print
    when there are none or some do not exist at the source (``where``)."""
    available = survey.partitions
    selected = list(partitions or available)
    unknown = sorted(set(selected) - set(available))
    if unknown:
        return [], f"no such partition(s) at {where}: {', '.join(unknown)}"
    if not selected:
        outside = survey.outside_text() if survey.outside else ""
        skipped = f" ({outside} outside the layout, not loaded)" if outside else ""
        return [], f"no song files under {where}/data{skipped}"
    return selected, None


def database_problem(warehouse: WarehouseResource) -> str | None:
    """None when the database answers; else what to print, in one line, without any secret.

    Checked before any run starts: an unusable URL would otherwise fail every folder's load
    only after its retries (minutes), then end in a traceback.
    """
    folder = database_folder(warehouse.sqlalchemy_url(), settings.msd_home())
    if folder is not None and not folder.path.is_dir() and not folder.creatable:
        return (
            f"cannot open the database {warehouse.display_url()}: the folder {folder.path} "
            "does not exist; create it first"
        )
    try:
        with warehouse.engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except UnsupportedDatabaseError as exc:
        return warehouse.without_secrets(str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver, network or URL error
        return f"cannot connect to the database {warehouse.display_url()}: " + (
            warehouse.describe_error(exc)
        )
    return None


def record_survey(instance: dg.DagsterInstance, survey: DatasetSurvey, where: str) -> list[str]:
    """What the instance learns before the runs: what lies outside the layout, which runs of
    a killed load never finished, which folders are new partitions. The partitions' order."""
    instance.report_runless_asset_event(outside_layout_observation(survey.outside, where))
    for run_id in fail_orphaned_runs(instance):
        print(f"marked run {run_id} failed: the msd-dagster load that ran it was killed")
    if (add_new := new_folders_request(instance, survey.partitions)) is not None:
        instance.add_dynamic_partitions(add_new.partitions_def_name, add_new.partition_keys)
    return instance.get_dynamic_partitions(msd_folders.name)


def load_folders(
    source: MsdSourceResource,
    warehouse: WarehouseResource,
    partitions: Sequence[str] | None,
    workers: int,
    skip_additional_files: bool,
    state: LoadState,
    requests: stopping.StopRequests,
) -> int:
    """Every step after startup, with the resources the runs will use; the exit status (2 for
    a source or database that cannot be used, 1 when anything failed)."""
    dataset, survey, problem = source_problem(source)
    if problem:
        print(f"error: cannot read the source: {problem}", file=sys.stderr)
        return 2
    selected, problem = selected_folders(partitions, survey, dataset.describe())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    problem = database_problem(warehouse)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # Runs execute in forked processes: none may inherit this process's connections.
    warehouse.engine().dispose()
    instance = dg.DagsterInstance.get()
    order = record_survey(instance, survey, dataset.describe())
    plan = plan_folder_runs(order, selected, workers)
    for entry in survey.outside:
        print(f"not loaded: {entry.describe()}")
    print(
        f"loading {len(selected)} folder(s) in {len(plan)} run(s) from {dataset.describe()} "
        f"into {warehouse.display_url()} ({workers} run(s) at a time); runs are recorded "
        f"in DAGSTER_HOME={os.environ['DAGSTER_HOME']}",
        flush=True,
    )
    started = time.perf_counter()
    runner = LocalRunner(
        instance,
        workers,
        load_id=uuid.uuid4().hex[:12],
        stop_requested=lambda: requests.signal_name,
    )
    state.selected = selected
    outcomes = state.outcomes
    try:
        with requests.supervising():
            runner.run_folders(plan, folder_runs_target(), state.folder_done)
            extra = (
                [] if skip_additional_files else load_additional_files(dataset, runner, warehouse)
            )
            # Nothing to total when no folder loaded (e.g. the source failed mid-way).
            totals = (
                runner.run_unpartitioned(_totals_job_fn)
                if any(o.success for o in outcomes)
                else None
            )
            profiled, counted = profile_after_load(runner, warehouse) if totals else (None, None)
    except LoadInterrupted as exc:
        print(f"\n{state.interrupted_line(str(exc))}")
        return stopping.exit_code(str(exc))
    print_summary(outcomes, warehouse, time.perf_counter() - started, survey.outside, counted)
    totals_ok = report_totals(runner, totals, warehouse)
    if profiled:
        print(profiled)
    failed = [o for o in outcomes if not o.success or o.failed_checks]
    return 1 if failed or not all(extra) or not totals_ok else 0


def load_additional_files(
    dataset: Dataset, runner: LocalRunner, warehouse: WarehouseResource
) -> list[bool]:
    """After the folders (song-file rows win, AdditionalFiles rows only fill), load the side
    files when any are present; one unpartitioned run. ``[success]``, or ``[]`` if none."""
    try:
        found = find_additional_files(dataset)
    except (S3SourceError, OSError) as exc:
        print(f"[AdditionalFiles] FAILED: cannot list them: {exc}", flush=True)
        return [False]
    if not found:
        return []
    started = time.perf_counter()
    run = runner.run_unpartitioned(_additional_files_job_fn)
    rows = 0
    for materialization in materializations(runner.instance, run):
        if materialization.asset_key == LOAD_KEY:
            rows = int(materialization.metadata[ROWS_WRITTEN].value)
    ok = run.is_success
    print(
        f"[AdditionalFiles] {len(found)} file(s): {'ok' if ok else 'FAILED'}, {rows:,} rows, "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    if not ok:
        error = run_error(runner.instance, run)
        print(f"AdditionalFiles FAILED: {warehouse.without_secrets(error)}")
    return [ok]


def _additional_files_job_fn() -> dg.JobDefinition:
    from msd_dagster.definitions import additional_files_job

    return additional_files_job()


def _totals_job_fn() -> dg.JobDefinition:
    from msd_dagster.definitions import totals_job

    return totals_job()


def report_totals(
    runner: LocalRunner, run: dg.DagsterRun | None, warehouse: WarehouseResource
) -> bool:
    """Print the whole-dataset check's numbers when it fails; True when it passed."""
    if run is None:
        print(f"check {TOTAL_TRACKS} not run: no folder was loaded")
        return False
    evaluations = check_evaluations(runner.instance, run)
    if run.is_success and evaluations and all(e.passed for e in evaluations):
        return True
    for evaluation in evaluations:
        if not evaluation.passed:
            print(f"check failed: {evaluation.check_name}: {evaluation.description}")
    if not evaluations:
        error = run_error(runner.instance, run)
        print(f"check {TOTAL_TRACKS} did not run: " + warehouse.without_secrets(error))
    return False
