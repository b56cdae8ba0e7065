"""Declarative automation: when a raw partition changes, its normalized and warehouse
partitions (and their checks) follow.

The partition job and the discovery sensor materialize all three layers in one run, which
``eager`` recognises (no second run). The condition acts when a layer is updated alone: e.g.
``raw/song_files`` of a partition re-materialized from the UI after its files changed, or a
partition whose warehouse step never succeeded once its inputs exist. The sensor is stopped by
default, like Dagster's own automation sensor: turn it on under Automation.
"""

import dagster as dg

FOLLOW_UPSTREAM = dg.AutomationCondition.eager()
# A check runs in the same run as its asset. (``eager`` on a partitioned check treats every
# evaluation as its first one in Dagster 1.13, so it would never be requested.)
WITH_ITS_ASSET = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.will_be_requested()
).with_label("with its asset")

msd_follow_upstream = dg.AutomationConditionSensorDefinition(
    "msd_follow_upstream",
    target=dg.AssetSelection.groups("normalized", "warehouse"),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description=(
        "Evaluates the eager automation condition of the normalized and warehouse assets: a "
        "partition whose upstream was updated outside a run of its own is materialized again."
    ),
)
