"""The discovery sensor: adds new second-level folders as partitions and requests their runs."""

import dagster as dg

from msd_dagster.defs.jobs import msd_partition_job
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import MsdSourceResource
from msd_dagster.source.discovery import DiscoveryState, discover

FINGERPRINTS_PER_TICK = 25


@dg.sensor(
    job=msd_partition_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Lists the dataset's second-level folders (data/<c3>/<c4>/), adds new ones as "
        f"partitions and requests runs for new folders and for folders whose files changed "
        f"(up to {FINGERPRINTS_PER_TICK} known folders re-fingerprinted per tick, round-robin)."
    ),
)
def msd_discovery_sensor(
    context: dg.SensorEvaluationContext, msd_source: MsdSourceResource
) -> dg.SensorResult:
    dataset = msd_source.dataset()
    state = DiscoveryState.from_cursor(context.cursor)
    result = discover(
        state, dataset.list_partitions(), dataset.partition_fingerprint, FINGERPRINTS_PER_TICK
    )
    known = set(context.instance.get_dynamic_partitions(msd_folders.name))
    to_add = [key for key in result.new_partitions if key not in known]
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
            f"{len(result.new_partitions)} new, {len(result.changed_partitions)} changed partitions"
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[msd_folders.build_add_request(to_add)] if to_add else [],
        cursor=result.state.to_cursor(),
    )
