"""The partition job on real Celery workers (dagster-celery, Redis broker on 127.0.0.1).

A backfill of three generated partitions runs with the Celery executor on two workers and is
compared with an in-process run of the same partitions: same rows in every msd_* table, same
check results. A run has one step, ``load_folders``, in the ``msd_warehouse`` pool (limit 1
here, as for SQLite): the pool keeps the steps of concurrent runs from overlapping, even with
both workers idle. Then a worker is killed in the middle of a step, first its pool process
(what the OOM killer does), then the whole worker (a lost machine), and the run still
succeeds, without duplicate rows.

Needs the ``celery_cluster`` fixture of ``msd_dagster_tests.celery_fixtures`` (skipped when the
broker is unreachable). The last test kills one of the two workers: keep it last.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.events import DagsterEventType

from msd_dagster.defs.tables import RAW_KEY
from msd_dagster.warehouse.schema import MSD_TABLES, NATURAL_KEYS, load_columns
from msd_dagster.warehouse.urls import create_engine_for_url
from msd_dagster_tests.celery_fixtures import (
    IN_PROCESS_JOB,
    PARTITIONS,
    QUIET_LOGGERS,
    TEST_VISIBILITY_TIMEOUT_S,
    CeleryCluster,
    RunService,
    Worker,
    broker_state,
    msd_env,
)

STEP = "load_folders"  # the partition job's one step: list, parse, load and check each folder
WAREHOUSE_POOL = "msd_warehouse"
# The folder's frames are stored in this order, the last one just before the load begins.
HOLDER_RUN_ID = "held-by-test"
DICTIONARIES = {"msd_r_term", "msd_r_mbtag"}
START, SUCCESS = DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS
RUN_TIMEOUT_S = 150

pytestmark = pytest.mark.timeout(400)


# --------------------------------------------------------------------------------------------
# Reading the event log and the database


def events(
    instance: dg.DagsterInstance, run_id: str, *types: DagsterEventType
) -> list[dg.EventLogEntry]:
    return list(instance.all_logs(run_id, of_type=set(types)))


def step_entries(
    instance: dg.DagsterInstance, run_id: str, event_type: DagsterEventType, step: str
) -> list[dg.EventLogEntry]:
    return [e for e in events(instance, run_id, event_type) if e.step_key == step]


def celery_hostnames(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """step -> hostnames of the workers that reported "Executing steps ... in celery worker"."""
    found: dict[str, list[str]] = {}
    for entry in events(instance, run_id, DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data
        worker = data.metadata.get("Celery worker") if data else None
        if worker is not None:
            found.setdefault(entry.step_key, []).append(str(worker.value))
    return found


def check_results(instance: dg.DagsterInstance, run_id: str) -> set[tuple[Any, ...]]:
    """(asset, partition, check, passed, description, metadata) of every check evaluated in
    the run.

    A dictionary table's database row count counts the whole table, so it depends on which
    partitions were loaded before: left out.
    """
    results = set()
    for entry in events(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION):
        data = entry.dagster_event.asset_check_evaluation_data
        values = {k: v.value for k, v in data.metadata.items()}
        if data.asset_key.path[-1] in DICTIONARIES:
            values["rows"] = {k: n for k, n in values["rows"].items() if k != "database"}
        metadata = tuple(sorted((k, repr(v)) for k, v in values.items()))
        key = data.asset_key.to_user_string()
        results.add((key, data.partition, data.check_name, data.passed, data.description, metadata))
    return results


def dump_tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every msd_* table without its identity column, ordered by its natural key."""
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(
                        sa.select(*(table.c[c] for c in load_columns(table))).order_by(
                            *(table.c[k] for k in NATURAL_KEYS[table.name])
                        )
                    )
                ]
                for table in MSD_TABLES
            }
    finally:
        engine.dispose()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def step_keys(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return sorted({e.step_key for e in events(instance, run_id, DagsterEventType.STEP_START)})


def runs_tagged(instance: dg.DagsterInstance, key: str, value: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={key: value})))


@contextmanager
def sqlite_write_lock(path) -> Iterator[sqlite3.Connection]:
    """Hold the SQLite write lock: a load then waits inside its transaction."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


# --------------------------------------------------------------------------------------------
# The backfill, run once for the first tests of this module


@dataclass
class Backfill:
    celery_runs: dict[str, dict[str, Any]]
    reference_runs: dict[str, dict[str, Any]]
    reference_env: dict[str, str]
    released_at: float
    worker_pids: dict[str, set[int]]
    worker_hosts: dict[str, str]
    steps: list[str]
    seconds: float


@pytest.fixture(scope="module")
def backfill(celery_cluster: CeleryCluster) -> Backfill:
    cluster = celery_cluster
    # The reference: the same partitions through the default in-process executor, in an
    # instance and database of their own (started while the workers boot).
    reference_env = msd_env(cluster.root, cluster.dataset, "reference")
    reference_service = RunService(
        reference_env, cluster.root / "reference.log", preload=[IN_PROCESS_JOB]
    )
    reference = reference_service.submit(IN_PROCESS_JOB, PARTITIONS, QUIET_LOGGERS)
    try:
        cluster.wait_ready()
        started = time.monotonic()
        with cluster.instance() as instance:
            storage = instance.event_log_storage
            # Take the only slot of the warehouse pool, as another partition's load would: every
            # run must then wait for it before its step, with both workers idle.
            storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
            held = storage.claim_concurrency_slot(WAREHOUSE_POOL, HOLDER_RUN_ID, "load", 0)
            assert held.is_claimed, held
            try:
                runs = cluster.start_celery_runs(PARTITIONS, tags={"msd/test": "backfill"})

                def all_waiting() -> bool:
                    found = {r.run_id for r in runs_tagged(instance, "msd/test", "backfill")}
                    waiting = storage.get_concurrency_info(WAREHOUSE_POOL).pending_run_ids
                    return len(found) == len(PARTITIONS) and found <= waiting

                # Each run's orchestrator asks the pool for a slot before it sends its step
                # to the workers: all three are queued for it, none has a slot.
                wait_for(all_waiting, 120, "the three runs to wait for the pool")
                time.sleep(1.5)  # a few more claim attempts, all refused
                for run in runs_tagged(instance, "msd/test", "backfill"):
                    assert not step_entries(instance, run.run_id, START, STEP), (
                        "a step started while the pool's only slot was taken"
                    )
            finally:
                released_at = time.time()
                storage.free_concurrency_slot_for_step(HOLDER_RUN_ID, "load")
        celery_runs = runs.wait(RUN_TIMEOUT_S)
        seconds = time.monotonic() - started
        reference_runs = reference.wait(RUN_TIMEOUT_S)
    finally:
        leftovers = reference_service.close()
    assert not leftovers, leftovers
    assert all(r["success"] for r in reference_runs.values()), reference_service.tail()
    assert all(r["success"] for r in celery_runs.values()), celery_runs
    with dg.DagsterInstance.from_config(reference_env["DAGSTER_HOME"]) as ref_instance:
        steps = step_keys(ref_instance, reference_runs[PARTITIONS[0]]["run_id"])
    assert steps == [STEP]
    return Backfill(
        celery_runs=celery_runs,
        reference_runs=reference_runs,
        reference_env=reference_env,
        released_at=released_at,
        worker_pids={w.name: w.pids() for w in cluster.workers.values()},
        worker_hosts={w.name: w.hostname() for w in cluster.workers.values()},
        steps=steps,
        seconds=seconds,
    )


def test_backfill_steps_ran_in_the_celery_workers(
    backfill: Backfill, celery_cluster: CeleryCluster
) -> None:
    all_worker_pids = set().union(*backfill.worker_pids.values())
    assert len(backfill.worker_pids) == 2 and all(backfill.worker_pids.values())
    pids_of_host = {
        backfill.worker_hosts[name]: pids for name, pids in backfill.worker_pids.items()
    }
    orchestrator_pids = {r["pid"] for r in backfill.celery_runs.values()}
    with celery_cluster.instance() as instance:
        for partition, run in backfill.celery_runs.items():
            stored = instance.get_run_by_id(run["run_id"])
            assert stored.status == dg.DagsterRunStatus.SUCCESS
            assert stored.tags["dagster/partition"] == partition
            assert stored.run_config["execution"]["config"]["config_source"][
                "task_default_queue"
            ] == (celery_cluster.queue)
            assert step_keys(instance, run["run_id"]) == backfill.steps
            hosts = celery_hostnames(instance, run["run_id"])
            assert sorted(hosts) == backfill.steps, hosts
            for step in backfill.steps:
                starts = step_entries(instance, run["run_id"], DagsterEventType.STEP_START, step)
                assert len(starts) == 1, (partition, step, starts)
                pid = starts[0].dagster_event.pid
                assert pid != os.getpid() and pid not in orchestrator_pids
                assert pid in all_worker_pids, (partition, step, pid, backfill.worker_pids)
                # It ran in the process of the worker that reported it.
                [host] = hosts[step]
                assert pid in pids_of_host[host], (partition, step, host, pid)
            # The orchestrator only submitted tasks: "Submitting celery task ... to queue".
            submitted = [
                e
                for e in events(instance, run["run_id"], DagsterEventType.ENGINE_EVENT)
                if "Submitting celery task" in (e.user_message or "")
            ]
            assert len(submitted) == len(backfill.steps)
            assert all(celery_cluster.queue in e.user_message for e in submitted)
    # Which worker takes the next task is the broker's choice: with the pool letting one step
    # through at a time, one worker may take them all (the last test uses both, by killing).


def test_backfill_tables_and_checks_equal_the_in_process_run(
    backfill: Backfill, celery_cluster: CeleryCluster
) -> None:
    celery_tables = dump_tables(celery_cluster.database_url)
    reference_tables = dump_tables(backfill.reference_env["MSD_DATABASE_URL"])
    assert len(celery_tables["msd_track"]) == 30  # every generated song, once
    assert {row[0][:4] for row in celery_tables["msd_track"]} == {"TRAA", "TRAB", "TRBA"}
    for table, rows in reference_tables.items():
        assert rows, f"{table} is empty in the reference"
        assert celery_tables[table] == rows, f"{table} differs from the in-process run"

    with (
        celery_cluster.instance() as instance,
        dg.DagsterInstance.from_config(backfill.reference_env["DAGSTER_HOME"]) as reference,
    ):
        for partition in PARTITIONS:
            ours = check_results(instance, backfill.celery_runs[partition]["run_id"])
            theirs = check_results(reference, backfill.reference_runs[partition]["run_id"])
            # One result per table, for this folder, with the same numbers as in process.
            assert len(ours) == len(MSD_TABLES), sorted(ours)
            assert {(partition, True)} == {(p, passed) for _, p, _, passed, _, _ in ours}
            assert ours == theirs, partition


def test_pool_limit_keeps_warehouse_steps_of_concurrent_runs_apart(
    backfill: Backfill, celery_cluster: CeleryCluster
) -> None:
    with celery_cluster.instance() as instance:
        intervals = []
        for run in backfill.celery_runs.values():
            (start,) = step_entries(instance, run["run_id"], START, STEP)
            (end,) = step_entries(instance, run["run_id"], SUCCESS, STEP)
            intervals.append((start.timestamp, end.timestamp))
        info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    intervals.sort()
    # All three were waiting for the slot when it was freed, two workers idle ...
    assert all(start >= backfill.released_at for start, _ in intervals), intervals
    # ... and still they loaded one after the other.
    for (_, previous_end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= previous_end, intervals
    assert info.slot_count == 1 and not info.claimed_slots, info


def _loading(instance: dg.DagsterInstance, tag: str, count: int) -> tuple[str, int]:
    """(run id, pid) once the tagged run's step, started ``count`` times, has listed the folder
    that many times: it then goes into the load, which streams the songs into the folder's
    transaction and waits there for the database (held by the test)."""

    def loading() -> tuple[str, int] | None:
        for run in runs_tagged(instance, "msd/test", tag):
            starts = step_entries(instance, run.run_id, START, STEP)
            listed = [
                e
                for e in events(instance, run.run_id, DagsterEventType.ASSET_MATERIALIZATION)
                if e.dagster_event.asset_key == RAW_KEY
            ]
            if len(starts) >= count and len(listed) >= count:
                return run.run_id, starts[count - 1].dagster_event.pid
        return None

    return wait_for(loading, 120, f"the step to reach the load {count} time(s)")


def _owner(cluster: CeleryCluster, pid: int) -> Worker:
    for worker in cluster.workers.values():
        if pid in worker.pids():
            return worker
    raise AssertionError(f"pid {pid} belongs to no worker")


def test_killed_workers_mid_step_are_recovered_without_duplicates(
    backfill: Backfill, celery_cluster: CeleryCluster
) -> None:
    """Two kills in the step of one run, while it waits inside its folder's transaction.

    1. SIGKILL of the pool process running the step (what the OOM killer does): the worker's
       main process sees its child die and, with ``task_acks_late`` and
       ``task_reject_on_worker_lost``, puts the unacknowledged task back on the queue at once.
    2. SIGKILL of the whole worker that took it again (a lost machine): nobody is left to
       reject the task, it stays unacknowledged at the broker until Redis's visibility timeout
       (RabbitMQ: until it sees the connection closed), then the surviving worker receives it.

    Each time the same Dagster run goes on: no step failure, no Dagster retry, the step just
    starts again. The partition's rows are replaced in one transaction, so the tables end up
    exactly as the in-process run left them. Leaves one worker: keep this test last.
    """
    cluster = celery_cluster
    with cluster.instance() as instance, sqlite_write_lock(cluster.database_path):
        runs = cluster.start_celery_runs(["A/A"], tags={"msd/test": "kill"})
        run_id, first_pid = _loading(instance, "kill", 1)
        first_owner = _owner(cluster, first_pid)
        assert first_pid != first_owner.pgid  # the pool process, not the worker itself
        time.sleep(0.5)
        os.kill(first_pid, signal.SIGKILL)

        _, second_pid = _loading(instance, "kill", 2)
        second_owner = _owner(cluster, second_pid)
        time.sleep(1.0)
        killed_at = time.time()
        cluster.kill_worker(second_owner)
    (survivor,) = cluster.workers.values()
    try:
        result = runs.wait(RUN_TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{broker_state(cluster)}\n{survivor.tail()}") from None
    assert result["A/A"]["success"], survivor.tail()
    assert "WorkerLostError" in first_owner.log.read_text(errors="replace")

    with cluster.instance() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        starts = step_entries(instance, run_id, START, STEP)
        assert len(step_entries(instance, run_id, SUCCESS, STEP)) == 1
        pids = [s.dagster_event.pid for s in starts]
        assert pids[:2] == [first_pid, second_pid] and len(pids) == 3, pids
        assert pids[2] in survivor.pids()
        hosts = celery_hostnames(instance, run_id)[STEP]
        assert hosts == [first_owner.hostname(), second_owner.hostname(), survivor.hostname()]
        redelivered_after = starts[2].timestamp - killed_at
        if cluster.broker_is_redis:  # only once the visibility timeout had passed
            assert redelivered_after >= TEST_VISIBILITY_TIMEOUT_S - 3, redelivered_after
        else:  # RabbitMQ: as soon as the dead worker's connection closed
            assert redelivered_after < TEST_VISIBILITY_TIMEOUT_S, redelivered_after
        # Not Dagster's step retry: no failure was ever reported.
        assert not events(
            instance,
            run_id,
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.STEP_UP_FOR_RETRY,
            DagsterEventType.STEP_RESTARTED,
        )
        checks = check_results(instance, run_id)
        assert len(checks) == len(MSD_TABLES)
        assert {(p, passed) for _, p, _, passed, _, _ in checks} == {("A/A", True)}
        assert not instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots
    # Loaded again, not twice: still exactly the in-process run's rows.
    assert dump_tables(cluster.database_url) == dump_tables(
        backfill.reference_env["MSD_DATABASE_URL"]
    )
