"""Which folders of a run are loaded already: a retried step, and a "From failure"
re-execution, skip them (read from the event log of this run and of the runs it resumes)."""

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from msd_dagster.defs.check_names import ROWS_CHECK
from msd_dagster.defs.tables import warehouse_key


def resumed_run_ids(context: dg.AssetExecutionContext) -> list[str]:
    """This run, and for a "From failure" re-execution the runs it resumes, newest first."""
    run_ids = [context.run.run_id]
    run = context.run
    while run.parent_run_id and run.is_resume_retry:
        run_ids.append(run.parent_run_id)
        parent = context.instance.get_run_by_id(run.parent_run_id)
        if parent is None:
            break
        run = parent
    return run_ids


@dataclass
class EarlierLoad:
    """A folder loaded already: by which run, with the check results that load recorded."""

    run_id: str
    evaluations: list[dg.AssetCheckEvaluation]


def folders_loaded_already(
    instance: dg.DagsterInstance, run_ids: Sequence[str]
) -> dict[str, EarlierLoad]:
    """Folders whose tables these runs loaded already (a retried step, or the runs a "From
    failure" re-execution resumes); the newest load of each."""
    track_key = warehouse_key("msd_track")
    done: dict[str, EarlierLoad] = {}
    for run_id in run_ids:
        loaded: set[str] = set()
        evaluations: dict[str, list[dg.AssetCheckEvaluation]] = {}
        records = instance.get_records_for_run(
            run_id,
            of_type={
                dg.DagsterEventType.ASSET_MATERIALIZATION,
                dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            },
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                if evaluation.partition and evaluation.check_name == ROWS_CHECK:
                    evaluations.setdefault(evaluation.partition, []).append(evaluation)
            elif event.step_materialization_data.materialization.asset_key == track_key:
                loaded.add(str(event.step_materialization_data.materialization.partition))
        for partition in loaded - done.keys():
            done[partition] = EarlierLoad(run_id, evaluations.get(partition, []))
    return done
