"""Per-stage times of a ``msd-dagster load``, read back from the Dagster event log.

For every partition run: the duration of each step (STEP_START -> STEP_SUCCESS), the
``parse_seconds`` / ``load_seconds`` metadata, and the time of the "parsed N/N files" log line
(end of read+parse, start of building the frames). Stages:

* list: the ``raw__song_files`` step;
* read+parse: ``normalized_tables`` start -> "parsed N/N files";
* normalize: the rest of ``parse_seconds`` (building the DataFrames);
* write: ``load_seconds`` (the partition's transaction);
* checks: the ``warehouse_checks`` step;
* parquet I/O: the steps' remaining time (IO manager writes/reads of the intermediate frames,
  ``ensure_schema``, outputs and check results);
* Dagster: run time not spent in a step (run creation, planning, events between steps), plus
  the CLI's per-run time outside the run (``execute_job`` setup and reading its events).
"""

from __future__ import annotations

import os
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

PARSED = re.compile(r"^parsed (\d+)/(\d+) files$")
STEP_STAGE = {
    "raw__song_files": "raw",
    "normalized_tables": "normalized",
    "warehouse_tables": "warehouse",
    "warehouse_checks": "checks",
}


def run_stages(dagster_home: Path, cli_seconds: dict[str, float]) -> dict[str, Any]:
    """Stage seconds per partition run and summed; ``cli_seconds``: partition -> seconds the
    CLI reported for the whole ``execute_job`` call."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    per_run: list[dict[str, Any]] = []
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            partition = run.tags.get("dagster/partition")
            if not partition:
                continue
            per_run.append(_one_run(instance, run.run_id, partition, cli_seconds.get(partition)))
    per_run.sort(key=lambda r: r["partition"])
    totals: dict[str, float] = defaultdict(float)
    for run in per_run:
        for key, value in run.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] += value
    median_run = statistics.median(r["cli_seconds"] for r in per_run) if per_run else 0.0
    return {"runs": per_run, "totals": dict(totals), "median_run_seconds": median_run}


def _one_run(instance: Any, run_id: str, partition: str, cli: float | None) -> dict[str, Any]:
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    run_start = run_end = None
    parsed_at = None
    files = 0
    parse_seconds = load_seconds = 0.0
    events = 0
    for entry in instance.all_logs(run_id):
        events += 1
        if not entry.is_dagster_event:
            match = PARSED.match(entry.user_message or "")
            if match and match[1] == match[2]:
                parsed_at, files = entry.timestamp, int(match[2])
            continue
        event = entry.dagster_event
        kind = event.event_type_value
        if kind == "PIPELINE_START":
            run_start = entry.timestamp
        elif kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"):
            run_end = entry.timestamp
        elif kind == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[entry.step_key] = entry.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            metadata = event.step_materialization_data.materialization.metadata
            if "parse_seconds" in metadata:
                parse_seconds = float(metadata["parse_seconds"].value)
            if "load_seconds" in metadata:
                load_seconds = float(metadata["load_seconds"].value)
    step = {STEP_STAGE.get(key, key): ends[key] - starts[key] for key in starts if key in ends}
    normalized_start = starts.get("normalized_tables")
    read_parse = (parsed_at - normalized_start) if parsed_at and normalized_start else 0.0
    in_steps = sum(step.values())
    run_seconds = (run_end - run_start) if run_start and run_end else 0.0
    result = {
        "partition": partition,
        "files": files,
        "events": events,
        "cli_seconds": cli or run_seconds,
        "run_seconds": run_seconds,
        "list": step.get("raw", 0.0),
        "read_parse": read_parse,
        "normalize": max(0.0, parse_seconds - read_parse),
        "write": load_seconds,
        "checks": step.get("checks", 0.0),
        "step_normalized": step.get("normalized", 0.0),
        "step_warehouse": step.get("warehouse", 0.0),
        "parquet_io_other": max(0.0, step.get("normalized", 0.0) - parse_seconds)
        + max(0.0, step.get("warehouse", 0.0) - load_seconds),
        "dagster_in_run": max(0.0, run_seconds - in_steps),
    }
    result["dagster_outside_run"] = max(0.0, result["cli_seconds"] - run_seconds)
    result["dagster"] = result["dagster_in_run"] + result["dagster_outside_run"]
    return result
