"""Which folders go into which run: ranges of consecutive partitions, sized for the workers."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

# Folders per run: enough runs for every worker to stay busy to the end, few enough that
# Dagster's cost per run is shared; never more than this.
MAX_FOLDERS_PER_RUN = 32
RUNS_PER_WORKER = 4


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
