"""``msd-dagster`` whose folder runs hold K folders each (``benchmarks.run --folders-per-run K``).

    python -m benchmarks.fixed_runs K load --source ... --database-url ... --workers 2

The CLI plans about four runs per worker of at most 32 folders each
(``msd_dagster.runs.plan.plan_folder_runs``); this replaces that plan by runs of K consecutive
folders (fewer at a gap in the selection and at the end), everything else unchanged, to measure
what the size of a run costs: K = 1 is one run per folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence

from msd_dagster.cli import main
from msd_dagster.commands import load_steps

Plan = Callable[[Sequence[str], Collection[str], int], list[list[str]]]


def runs_of(size: int) -> Plan:
    """A planner with the signature of ``plan_folder_runs`` that makes runs of ``size``."""

    def plan(
        order: Sequence[str], selected: Collection[str], workers: int, max_per_run: int = size
    ) -> list[list[str]]:
        wanted = set(selected)
        runs: list[list[str]] = []
        current: list[str] = []
        for key in order:  # a run is a key range of the partitions: no gaps inside
            if key not in wanted:
                if current:
                    runs.append(current)
                current = []
                continue
            current.append(key)
            if len(current) == size:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        return runs

    return plan


if __name__ == "__main__":
    load_steps.plan_folder_runs = runs_of(int(sys.argv[1]))  # where the load command plans
    raise SystemExit(main(sys.argv[2:]))
