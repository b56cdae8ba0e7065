"""The discovery sensor: adds new second-level folders as partitions and requests their runs.

A tick must stay cheap on the full set (676 folders, a million objects) and within the sensor
timeout: it lists only the second-level folders (on S3: 1 + <= 26 delimiter listings, no
object listing, plus one listing of each folder outside the layout, whose files it counts up
to a limit), fingerprints at most ``NEW_PARTITIONS_PER_TICK`` new folders (the rest are
picked up by the next ticks) and re-fingerprints ``FINGERPRINTS_PER_TICK`` known folders,
round-robin (:mod:`msd_dagster.source.discovery`). A fingerprint is one listing of the folder
(no reads); they run ``FINGERPRINT_WORKERS`` at a time.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from msd_dagster.defs.assets.folders import load_folders
from msd_dagster.defs.check_names import TOTAL_TRACKS
from msd_dagster.defs.jobs import (
    msd_additional_files_job,
    msd_partition_job,
    msd_profile_job,
    msd_totals_job,
)
from msd_dagster.defs.outside_layout import (
    outside_layout_digest,
    outside_layout_lines,
    outside_layout_observation,
)
from msd_dagster.defs.partitions import new_folders_request
from msd_dagster.defs.resources import MsdSourceResource
from msd_dagster.defs.tables import warehouse_key
from msd_dagster.source.discovery import DiscoveryState, discover

FINGERPRINTS_PER_TICK = 25
NEW_PARTITIONS_PER_TICK = 50
FINGERPRINT_WORKERS = 8
TRACK_KEY = warehouse_key("msd_track")


def _prefetched(
    fingerprint: Callable[[str], str], keys: list[str], workers: int
) -> Callable[[str], str]:
    """``fingerprint``, with the values for ``keys`` computed up front, concurrently.

    A key that was not prefetched is computed on demand, so a wrong guess costs time only.
    """
    cache: dict[str, str] = {}
    if keys:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
            cache = dict(zip(keys, pool.map(fingerprint, keys), strict=True))

    def lookup(key: str) -> str:
        return cache[key] if key in cache else fingerprint(key)

    return lookup


def plan_tick(
    state: DiscoveryState, current: list[str], new_budget: int, budget: int
) -> tuple[list[str], list[str]]:
    """``(partitions shown to discover(), keys it will fingerprint)`` for one tick.

    All known partitions are shown, plus at most ``new_budget`` new ones (in key order); the
    fingerprinted keys are those new ones and the round-robin window of known ones.
    """
    current = sorted(set(current))
    known = [k for k in current if k in state.fingerprints]
    new = [k for k in current if k not in state.fingerprints][: max(0, new_budget)]
    window: list[str] = []
    if known:
        start = state.next_index % len(known)
        window = [known[(start + i) % len(known)] for i in range(min(budget, len(known)))]
    return sorted(known + new), new + window


@dg.sensor(
    # The load's assets (and so their checks), as the asset graph launches them: Dagster runs
    # each request in its implicit asset job, the run shape of every folder run.
    asset_selection=dg.AssetSelection.assets(load_folders),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Lists the dataset's second-level folders (data/<c3>/<c4>/), adds new ones as "
        f"partitions (up to {NEW_PARTITIONS_PER_TICK} per tick) and requests runs for new "
        f"folders and for folders whose files changed (up to {FINGERPRINTS_PER_TICK} known "
        "folders re-fingerprinted per tick, round-robin). Files under data/ that no partition "
        "takes are named in the tick's log and, when they change, in an observation of "
        "raw/song_files."
    ),
)
def msd_discovery_sensor(
    context: dg.SensorEvaluationContext, msd_source: MsdSourceResource
) -> dg.SensorResult:
    dataset = msd_source.dataset()  # one client for the whole tick
    state = DiscoveryState.from_cursor(context.cursor)
    survey = dataset.survey()
    visible, planned = plan_tick(
        state, survey.partitions, NEW_PARTITIONS_PER_TICK, FINGERPRINTS_PER_TICK
    )
    fingerprint = _prefetched(dataset.partition_fingerprint, planned, FINGERPRINT_WORKERS)
    result = discover(state, visible, fingerprint, FINGERPRINTS_PER_TICK)
    add_new = new_folders_request(context.instance, result.new_partitions)
    requests = [
        dg.RunRequest(
            partition_key=key,
            run_key=f"{key}:{result.state.fingerprints[key]}",
            tags={"msd/reason": "new" if key in result.new_partitions else "changed"},
        )
        for key in [*result.new_partitions, *result.changed_partitions]
    ]
    if requests:
        context.log.info(
            f"{len(result.new_partitions)} new, {len(result.changed_partitions)} changed "
            f"partitions at {dataset.describe()}"
        )
    if survey.outside:
        context.log.warning(
            f"{survey.outside_text()} outside the layout, not loaded:\n"
            + "\n".join(outside_layout_lines(survey.outside))
        )
    # Recorded when the list changes (and on the first tick): the latest observation of
    # raw/song_files is always the current list, without one event every tick.
    digest = outside_layout_digest(survey.outside)
    events = []
    if digest != state.outside_digest:
        events.append(outside_layout_observation(survey.outside, dataset.describe()))
    result.state.outside_digest = digest
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[add_new] if add_new else [],
        cursor=result.state.to_cursor(),
        asset_events=events,
    )


_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def loads_folders(run: dg.DagsterRun) -> bool:
    """Whether ``run`` loaded folders: a run of the load's assets in Dagster's implicit asset
    job (the asset graph, asset backfills, the discovery sensor, ``msd-dagster load``) or a
    run of ``msd_partition_job`` (its Jobs page)."""
    if run.job_name == msd_partition_job.name:
        return True
    return bool(run.asset_selection) and TRACK_KEY in run.asset_selection


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_jobs=[msd_totals_job, msd_profile_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description=(
        "After partition runs succeed, re-evaluates the whole-dataset check "
        f"{TOTAL_TRACKS} on warehouse/all_folders (msd_totals_job); after those "
        "and after AdditionalFiles runs, refreshes the dataset profile profile/dataset "
        "(msd_profile_job). Each at most once a minute. Running by default."
    ),
)
def msd_totals_after_loads(
    context: dg.RunStatusSensorContext,
) -> list[dg.RunRequest] | dg.SkipReason:
    # Every job of the location is watched: folder runs are runs of the implicit asset job.
    run = context.dagster_run
    folders = loads_folders(run)
    if not folders and run.job_name != msd_additional_files_job.name:
        return dg.SkipReason(f"run {run.run_id} loaded no folder and no AdditionalFiles")
    # A folder still loading may have committed rows it has not recorded yet: totals taken now
    # would disagree. The success of the last of them comes here again.
    going = context.instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS))
    if folders and any(loads_folders(r) for r in going if r.run_id != run.run_id):
        return dg.SkipReason("folder runs are still in progress: the last of them triggers this")
    # One request per job and minute at most: the run key folds the loads of a minute together.
    minute = int(time.time() // 60)
    profile = dg.RunRequest(run_key=f"profile:{minute}", job_name=msd_profile_job.name)
    if not folders:
        return [profile]
    return [dg.RunRequest(run_key=f"totals:{minute}", job_name=msd_totals_job.name), profile]
