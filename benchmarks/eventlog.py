"""Per-stage times of a ``msd-dagster load``, read back from the Dagster event log.

A load executes folder runs (the load's assets in Dagster's implicit asset job) over ranges of
folders; each run has one step that
takes its folders one after the other and reports every folder with its own materializations
(``raw/song_files``, ``normalized/*``, the twelve ``warehouse/msd_*`` tables) and check
results. Per run:

* run seconds: ``PIPELINE_START`` -> ``PIPELINE_SUCCESS`` / ``PIPELINE_FAILURE``;
* before run: the run's creation (``create_timestamp`` of its record, before its planned
  events are written) -> ``PIPELINE_START`` (planned events, forking and starting the run);
* events: entries in the run's event log.

Per folder (from the materializations' ``partition`` and metadata):

* list: ``list_seconds`` of ``raw/song_files`` (listing the files and storing the listing);
* parse: ``parse_seconds`` of ``normalized/songs`` (read + parse + normalize);
* store: the last ``normalized/*`` materialization's time - the ``raw/song_files`` one's -
  parse (the Parquet writes of the frames, and recording those events);
* write: ``load_seconds`` of ``warehouse/msd_track`` (load and checks, one transaction);
* span: start of the listing -> the folder's last event (what the CLI reports per folder).

Dagster = run time not in any folder's list / parse / store / write (recording the events,
step and resource start-up, the schema check) + the time before the run started. Of it,
"folder events" is the part inside folder spans (recording each folder's materializations and
check results). Every figure of a run adds up: before run + run seconds = the run's time from
creation to end = its folders' list + parse + store + write + Dagster.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from msd_dagster import event_metadata as em

RAW = "raw/song_files"
SONGS = "normalized/songs"
TRACK = "warehouse/msd_track"
FOLDER_STAGES = ("list", "parse", "store", "write")


def run_stages(dagster_home: Path) -> dict[str, Any]:
    """Stage seconds per run and per folder of the folder runs recorded in ``dagster_home``,
    and their sums (``totals``)."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    from msd_dagster.defs.sensors import loads_folders

    runs: list[dict[str, Any]] = []
    folders: list[dict[str, Any]] = []
    with dg.DagsterInstance.get() as instance:
        for run in filter(loads_folders, instance.get_runs()):
            record = instance.get_run_record_by_id(run.run_id)
            created = record.create_timestamp.timestamp() if record else None
            one_run, its_folders = _one_run(instance.all_logs(run.run_id), created)
            runs.append(one_run)
            folders.extend(its_folders)
    runs.sort(key=lambda r: r["folders"][0] if r["folders"] else "")
    folders.sort(key=lambda f: f["partition"])
    totals: dict[str, float] = defaultdict(float)
    for run in runs:
        for key, value in run.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] += value
    # The folder stages are summed per run already; these only per folder.
    for folder in folders:
        for key in ("span", "files", "tracks"):
            totals[key] += folder[key]
    return {
        "runs": runs,
        "folders": folders,
        "totals": dict(totals),
        "median_run_seconds": statistics.median(r["run_seconds"] for r in runs) if runs else 0.0,
        "median_folder_seconds": (
            statistics.median(f["span"] for f in folders) if folders else 0.0
        ),
    }


def _one_run(entries: Any, created: float | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run_start = run_end = None
    events = 0
    # partition -> {"raw": ts, "last_normalized": ts, "last": ts, metadata figures ...}
    seen: dict[str, dict[str, float]] = defaultdict(dict)
    for entry in entries:
        events += 1
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind == "PIPELINE_START":
            run_start = entry.timestamp
        elif kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"):
            run_end = entry.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            if materialization.partition is None:
                continue
            folder = seen[str(materialization.partition)]
            key = materialization.asset_key.to_user_string()
            metadata = materialization.metadata
            folder["last"] = entry.timestamp
            if key == RAW:
                folder["raw"] = entry.timestamp
                folder["list"] = _number(metadata, em.LIST_SECONDS)
                folder["files"] = _number(metadata, "dagster/partition_row_count")
            elif key.startswith("normalized/"):
                folder["last_normalized"] = entry.timestamp
                if key == SONGS:
                    folder["parse"] = _number(metadata, em.PARSE_SECONDS)
                    folder["tracks"] = _number(metadata, em.TRACKS)
            elif key == TRACK:
                folder["write"] = _number(metadata, em.LOAD_SECONDS)
        elif kind == "ASSET_CHECK_EVALUATION":
            partition = event.asset_check_evaluation_data.partition
            if partition is not None and partition in seen:
                seen[partition]["last"] = entry.timestamp
    folders = [_one_folder(partition, times) for partition, times in seen.items()]
    run_seconds = (run_end - run_start) if run_start and run_end else 0.0
    before_run = max(0.0, run_start - created) if run_start and created else 0.0
    in_folders = sum(f[stage] for f in folders for stage in FOLDER_STAGES)
    dagster_in_run = max(0.0, run_seconds - in_folders)
    folder_events = sum(f["events_seconds"] for f in folders)
    result = {
        "folders": sorted(f["partition"] for f in folders),
        "events": events,
        "run_seconds": run_seconds,
        "before_run": before_run,
        "created_to_end": before_run + run_seconds,
        **{stage: sum(f[stage] for f in folders) for stage in FOLDER_STAGES},
        "dagster_in_run": dagster_in_run,
        "folder_events": min(folder_events, dagster_in_run),
        "dagster": dagster_in_run + before_run,
    }
    return result, folders


def _one_folder(partition: str, times: dict[str, float]) -> dict[str, Any]:
    parse = times.get("parse", 0.0)
    raw = times.get("raw")
    list_seconds = times.get("list", 0.0)
    store = (
        max(0.0, times["last_normalized"] - raw - parse)
        if raw is not None and "last_normalized" in times
        else 0.0
    )
    span = (times["last"] - raw + list_seconds) if raw is not None else 0.0
    work = list_seconds + parse + store + times.get("write", 0.0)
    return {
        "partition": partition,
        "files": int(times.get("files", 0)),
        "tracks": int(times.get("tracks", 0)),
        "list": list_seconds,
        "parse": parse,
        "store": store,
        "write": times.get("write", 0.0),
        "span": span,
        # Inside the folder's span but in none of its stages: recording its events.
        "events_seconds": max(0.0, span - work),
    }


def _number(metadata: Any, key: str) -> float:
    value = metadata.get(key)
    return float(value.value) if value is not None else 0.0
