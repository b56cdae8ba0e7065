"""pytest plugin: a real Celery cluster (broker on 127.0.0.1, two dagster-celery workers).

Register with ``pytest_plugins = ["msd_dagster_tests.celery_fixtures"]`` in conftest.py.

* ``celery_broker`` (session): the broker URL (``MSD_TEST_CELERY_BROKER_URL``, default Redis on
  ``redis://127.0.0.1:6379/0``; an ``amqp://`` URL works too). The tests using it are skipped,
  with the reason, when the broker is unreachable.
* ``celery_cluster`` (session): a :class:`CeleryCluster`: a generated three-partition dataset, a
  persistent Dagster instance (SQLite storage in a temporary ``DAGSTER_HOME``, pool limit 1),
  two workers (``celery -A dagster_celery.app worker -c 1``, what ``dagster-celery worker
  start`` runs, with distinct node names, a queue and a Redis key prefix of their own so other
  runs on this machine never see their tasks) and a :class:`RunService` that starts runs.
  Each worker is a process group of its own: teardown terminates the groups, kills what is
  left and fails if any process of them remains. Workers and runners also get SIGTERM when
  pytest itself dies (Linux ``PR_SET_PDEATHSIG``), so a killed test session leaves nothing.

Runs are orchestrated in a separate interpreter that imported Dagster and the job once, with
the cluster's ``MSD_*`` environment (what the resources read when a step uses them; the workers
get the same), and forks one process per run: not threads, because concurrent run setups in
one process can deadlock in ``logging.config.dictConfig``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BROKER_URL = os.environ.get("MSD_TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
BACKEND_URL = os.environ.get("MSD_TEST_CELERY_BACKEND_URL", "redis://127.0.0.1:6379/1")
PARTITIONS = ["A/A", "A/B", "B/A"]
SONGS = 30
SEED = 20260
# Redis redelivers a task whose worker died without acknowledging it once the message has been
# unacknowledged this long. Short here so the test is fast; it must exceed the longest step
# (a step still running after it would be delivered twice), so production uses hours.
TEST_VISIBILITY_TIMEOUT_S = 16
WORKER_START_TIMEOUT_S = 90
RESULT_MARKER = "MSD_RUN_RESULT "
CELERY_JOB = "msd_dagster.distributed:celery_partition_job"
IN_PROCESS_JOB = "msd_dagster.definitions:partition_job"
REPO_ROOT = Path(__file__).resolve().parents[1]
QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

INSTANCE_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    # SQLite has one writer: at most one warehouse step at a time, whatever the workers.
    default_limit: 1
"""


def broker_reachable(url: str, timeout: float = 3.0) -> str | None:
    """None when the broker answers, else the reason."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # any transport error means "no broker here"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def celery_broker() -> str:
    reason = broker_reachable(BROKER_URL)
    if reason:
        pytest.skip(f"Celery broker not reachable at {BROKER_URL}: {reason}")
    return BROKER_URL


# --------------------------------------------------------------------------------------------
# Processes


def group_pids(pgid: int) -> set[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.add(int(entry.name))
    return pids


def _die_with_parent() -> None:
    """SIGTERM this process when its parent dies, even by SIGKILL (Linux; else a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_pids(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _stop_group(process: subprocess.Popen, term_timeout: float = 20) -> set[int]:
    """SIGTERM the process group, SIGKILL it if needed; the pids still alive after that."""
    _signal_group(process.pid, signal.SIGTERM)
    if not _wait_gone(process.pid, term_timeout):
        _signal_group(process.pid, signal.SIGKILL)
        _wait_gone(process.pid, 10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return group_pids(process.pid)


def clean_env() -> dict[str, str]:
    """This process's environment without the project's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MSD_") and k != "DAGSTER_HOME"}


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pgid(self) -> int:
        return self.process.pid  # started with start_new_session=True

    def pids(self) -> set[int]:
        return group_pids(self.pgid)

    def hostname(self) -> str:
        """The Celery node name (``name@host``), as the worker printed it."""
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith(" -------------- ") and "@" in line:
                return line.split()[1]
        raise AssertionError(f"worker {self.name} printed no node name:\n{self.tail()}")

    def ready(self) -> bool:
        return " ready." in self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Starting runs


class RunService:
    """An interpreter with Dagster and the jobs imported, forking one process per run.

    ``submit`` sends it a batch (job, partitions, run config, tags); each forked orchestrator
    prints ``MSD_RUN_RESULT {...}`` when its run has ended, read here by a thread.
    """

    def __init__(self, env: Mapping[str, str], log: Path, preload: list[str]):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "msd_dagster_tests.celery_fixtures", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env={**clean_env(), **env},
            cwd=REPO_ROOT,  # where ``msd_dagster_tests`` is importable
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._results: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="run results", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(RESULT_MARKER):
                result = json.loads(line.removeprefix(RESULT_MARKER))
                with self._changed:
                    self._results[(result["batch"], result["partition"])] = result
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def submit(
        self,
        job: str,
        partitions: list[str],
        run_config: Mapping[str, Any],
        *,
        tags: Mapping[str, str] | None = None,
        concurrent: bool = True,
    ) -> Batch:
        batch = secrets.token_hex(4)
        spec = {
            "batch": batch,
            "job": job,
            "partitions": partitions,
            "run_config": run_config,
            "tags": dict(tags or {}),
            "concurrent": concurrent,
        }
        assert self.process.stdin is not None and self.process.poll() is None, self.tail()
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        return Batch(self, batch, list(partitions))

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> set[int]:
        with contextlib.suppress(OSError):
            if self.process.stdin:
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        return _stop_group(self.process, term_timeout=10)


@dataclass
class Batch:
    service: RunService
    batch: str
    partitions: list[str]

    def wait(self, timeout: float) -> dict[str, dict[str, Any]]:
        """{partition: {"run_id", "success", "pid"}} once every run of the batch has ended."""
        keys = [(self.batch, p) for p in self.partitions]
        results = self.service._results
        with self.service._changed:
            done = self.service._changed.wait_for(
                lambda: all(k in results for k in keys) or self.service.process.poll() is not None,
                timeout,
            )
        if not all(k in results for k in keys):
            state = "exited" if self.service.process.poll() is not None else "still running"
            raise AssertionError(
                f"runs of {self.partitions} not ended after {timeout} s (runner {state}, "
                f"waited: {done}):\n{self.service.tail()}"
            )
        return {p: results[(self.batch, p)] for p in self.partitions}


def _serve(preload: list[str]) -> None:
    """The run service's main loop (``python -m msd_dagster_tests.celery_fixtures JOB...``)."""
    import importlib
    import multiprocessing

    import dagster  # noqa: F401 - imported once, before forking
    import dagster_celery.core_execution_loop as celery_loop

    # The Celery executor polls its tasks' results once a second; four times makes the tests
    # faster and changes nothing else.
    celery_loop.TICK_SECONDS = 0.25

    jobs = {name: _job_fn(importlib, name) for name in preload}
    fork = multiprocessing.get_context("fork")
    for line in sys.stdin:
        spec = json.loads(line)
        if spec["job"] not in jobs:
            jobs[spec["job"]] = _job_fn(importlib, spec["job"])
        groups = [[p] for p in spec["partitions"]] if spec["concurrent"] else [spec["partitions"]]
        for partitions in groups:
            fork.Process(target=_orchestrate, args=(jobs[spec["job"]], spec, partitions)).start()
        multiprocessing.active_children()  # reaps the ended ones
    for child in multiprocessing.active_children():
        child.join()


def _job_fn(importlib, name: str):
    module, attribute = name.split(":")
    return getattr(importlib.import_module(module), attribute)


def _orchestrate(job_fn, spec: dict[str, Any], partitions: list[str]) -> None:
    import dagster as dg

    _die_with_parent()
    for partition in partitions:
        with dg.DagsterInstance.get() as instance:
            result = dg.execute_job(
                dg.reconstructable(job_fn),
                instance=instance,
                run_config=spec["run_config"],
                tags={"dagster/partition": partition, **spec["tags"]},
                raise_on_error=False,
            )
        summary = {
            "batch": spec["batch"],
            "partition": partition,
            "run_id": result.run_id,
            "success": result.success,
            "pid": os.getpid(),
        }
        print(RESULT_MARKER + json.dumps(summary), flush=True)


# --------------------------------------------------------------------------------------------
# The cluster


@dataclass
class CeleryCluster:
    root: Path
    dataset: Path
    dagster_home: Path
    queue: str
    key_prefix: str
    env: dict[str, str]
    executor_config: dict[str, Any]
    settings_dir: Path
    workers: dict[str, Worker] = field(default_factory=dict)
    runs: RunService | None = None

    @property
    def broker_is_redis(self) -> bool:
        return str(self.executor_config["broker"]).startswith(("redis://", "rediss://"))

    @property
    def database_url(self) -> str:
        return self.env["MSD_DATABASE_URL"]

    @property
    def database_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def run_config(self) -> dict[str, Any]:
        return {"execution": {"config": self.executor_config}, **QUIET_LOGGERS}

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def start_celery_runs(
        self, partitions: list[str], *, tags: Mapping[str, str] | None = None
    ) -> Batch:
        """One run per partition, all at once, with the Celery executor."""
        assert self.runs is not None
        return self.runs.submit(CELERY_JOB, partitions, self.run_config, tags=tags)

    def start_worker(self, name: str) -> Worker:
        """``celery -A dagster_celery.app worker``, as ``dagster-celery worker start`` runs it.

        Started directly (one interpreter less than through the ``dagster-celery`` wrapper)
        with the settings module the wrapper writes from the same executor config: the worker
        is the process started here, its pool process its only child.
        """
        log = self.root / f"{name}.log"
        venv_bin = Path(sys.executable).parent
        pythonpath = [str(self.settings_dir), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **clean_env(),
            **self.env,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(pythonpath),
        }
        process = subprocess.Popen(
            [
                str(venv_bin / "celery"),
                *("-A", "dagster_celery.app", "worker", "--prefetch-multiplier=1"),
                *("--loglevel", "INFO", "-Q", self.queue, "-n", f"{name}@%h", "-c", "1"),
                *("--without-mingle", "--without-gossip"),
                # Imported once by the worker, before it forks its pool process: a new pool
                # process (after one was killed) takes its first step without importing.
                *("-I", "msd_dagster.distributed"),
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        worker = Worker(name, process, log)
        self.workers[name] = worker
        return worker

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            while not worker.ready():
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {worker.name} did not start:\n{worker.tail()}")
                time.sleep(0.2)

    def kill_worker(self, worker: Worker) -> None:
        """SIGKILL every process of the worker at once (its machine is gone) and forget it."""
        _signal_group(worker.pgid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        _wait_gone(worker.pgid, 10)
        del self.workers[worker.name]

    def stop(self) -> list[str]:
        """Stop the run service and every worker; return the processes that survived."""
        leftovers = []
        if self.runs is not None:
            leftovers += [f"run service: pid {pid}" for pid in self.runs.close()]
        for worker in self.workers.values():
            _signal_group(worker.pgid, signal.SIGTERM)
        for worker in self.workers.values():
            leftovers += [f"{worker.name}: pid {pid}" for pid in _stop_group(worker.process)]
        return leftovers


def msd_env(root: Path, dataset: Path, name: str) -> dict[str, str]:
    """MSD_* and DAGSTER_HOME for one deployment under ``root/name``; its instance created."""
    import dagster as dg

    home = root / name
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    # Create the storage once, before several processes open it at the same time.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("msd_folders", PARTITIONS)
    return {
        "MSD_HOME": str(home),
        "MSD_SOURCE": str(dataset),
        "MSD_DATABASE_URL": f"sqlite:///{home / 'msd.sqlite'}",
        "MSD_PARQUET_DIR": str(home / "parquet"),
        "DAGSTER_HOME": str(dagster_home),
    }


def write_worker_settings(directory: Path, executor_config: Mapping[str, Any]) -> Path:
    """The ``dagster_celery_config`` module ``dagster_celery.app`` loads into the workers' app.

    What ``dagster-celery worker start -y`` writes from the same executor config block (after
    validating it against the executor's schema, as done here too).
    """
    import dagster as dg
    from dagster._config import process_config
    from dagster_celery import celery_executor

    checked = process_config(celery_executor.config_schema.config_type, dict(executor_config))
    if not checked.success:
        raise dg.DagsterInvalidConfigError("invalid Celery config", checked.errors, executor_config)
    config = checked.value
    lines = [f"broker_url = {config['broker']!r}", f"result_backend = {config['backend']!r}"]
    lines += [f"{key} = {value!r}" for key, value in (config.get("config_source") or {}).items()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dagster_celery_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def broker_state(cluster: CeleryCluster) -> str:
    """What the broker holds for this session (queue lengths, unacknowledged tasks)."""
    if not cluster.broker_is_redis:
        return "(not Redis)"
    import redis

    client = redis.Redis.from_url(str(cluster.executor_config["broker"]), socket_timeout=3)
    try:
        prefix = cluster.key_prefix
        unacked = client.zrange(f"{prefix}unacked_index", 0, -1, withscores=True)
        return (
            f"queue {cluster.queue}: {client.llen(prefix + cluster.queue)} waiting; unacked "
            f"(tag, delivered at): {unacked}; mutex held: {client.exists(prefix + 'unacked_mutex')}"
        )
    finally:
        client.close()


def _delete_queue(url: str, queue: str) -> None:
    from kombu import Connection, Queue

    with Connection(url, connect_timeout=3) as conn:
        Queue(queue, channel=conn.default_channel).delete()


def _delete_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def celery_cluster(celery_broker: str, tmp_path_factory) -> Iterator[CeleryCluster]:
    from msd_dagster.defs.executors import celery_executor_config
    from msd_dagster.generate import generate_dataset

    token = secrets.token_hex(4)
    root = tmp_path_factory.mktemp("celery")
    dataset = root / "msd"
    generate_dataset(dataset, SONGS, seed=SEED, folders=PARTITIONS)
    env = msd_env(root, dataset, "celery")
    queue = f"msd-test-{token}"
    key_prefix = f"msd-test-{token}:"
    transport: dict[str, Any] = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2}
    is_redis = celery_broker.startswith(("redis://", "rediss://"))
    if is_redis:
        transport |= {
            "global_keyprefix": key_prefix,  # this session's queues and unacked sets only
            "visibility_timeout": TEST_VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # A worker killed during a redelivery sweep leaves the sweep's lock behind; it
            # would block the other workers' sweeps for its default 5 minutes.
            "unacked_mutex_expire": 5,
        }
    executor_config = celery_executor_config(
        broker=celery_broker,
        backend=BACKEND_URL,
        queue=queue,
        broker_transport_options=transport,
        result_expires=3600,
    )
    settings_dir = root / "worker_settings"
    write_worker_settings(settings_dir, executor_config)
    cluster = CeleryCluster(
        root=root,
        dataset=dataset,
        dagster_home=Path(env["DAGSTER_HOME"]),
        queue=queue,
        key_prefix=key_prefix,
        env=env,
        executor_config=executor_config,
        settings_dir=settings_dir,
    )
    try:
        for n in (1, 2):
            cluster.start_worker(f"msd-w{n}-{token}")
        cluster.runs = RunService(env, root / "orchestrators.log", preload=[CELERY_JOB])
        yield cluster
    finally:
        leftovers = cluster.stop()
        if is_redis:
            _delete_redis_keys(celery_broker, key_prefix)
        else:
            _delete_queue(celery_broker, queue)
        assert not leftovers, f"processes survived the teardown: {leftovers}"


if __name__ == "__main__":
    _serve(sys.argv[1:])
