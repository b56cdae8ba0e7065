"""pytest plugin: a real ``dagster dev`` (webserver + daemon) for the end-to-end UI tests.

Register with ``pytest_plugins = ["msd_dagster_tests.ui_fixtures"]`` in conftest.py.

* ``dagster_ui`` (session): ``dagster dev -w workspace.yaml`` started from the repository root
  on a free loopback port, with a temporary ``DAGSTER_HOME`` (the ``dagster.yaml`` that
  ``msd-dagster load`` writes, plus a QueuedRunCoordinator: at most 2 runs at once, tag
  concurrency limit on ``msd/job``, telemetry off), a generated dataset of 40 songs over ten
  partitions (``MSD_SOURCE``; more than one backfill run's worth, 8 folders), a temporary
  SQLite database (``MSD_DATABASE_URL``) and Parquet folder (``MSD_PARQUET_DIR``). Ready once
  GraphQL answers, the code location is loaded and the daemons report healthy. Afterwards the
  whole process group is stopped and the port is asserted closed. Its value, a
  :class:`DagsterUI`, drives the server over GraphQL (``client``:
  ``dagster_graphql.DagsterGraphQLClient``; ``graphql``: raw queries), runs ``msd-dagster
  load`` on the same instance (``cli_load``) and reads the database.
* ``ui_partitions`` (session): the dataset's partitions, registered with the GraphQL mutation
  ``addDynamicPartition``.

The tests using them carry the ``e2e`` marker (``-m "not e2e"`` leaves them out).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from msd_dagster_tests.graphql_queries import ADD_PARTITION, BACKFILL, RUN, SET_NUX_SEEN, WORKSPACE

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "msd_dagster"
REPOSITORY = "__repository__"
PARTITIONS_DEF = "msd_folders"
PARTITION_JOB = "msd_partition_job"
# Dagster's implicit asset job: the asset graph's launches, asset backfills and the runs of
# `msd-dagster load` are runs of it.
ASSET_JOB = "__ASSET_JOB"
# In this order in the instance, so a backfill of them all makes the ranges A/A..C/C and D/A.
PARTITIONS = ("A/A", "A/B", "A/C", "B/A", "B/B", "B/C", "C/A", "C/B", "C/C", "D/A")
SONGS = 40
SEED = 11  # 2 to 7 songs in every folder
START_TIMEOUT = 150  # seconds; a cold start on a busy 2-core machine takes ~20-40 s
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
# Every end-to-end test module: marked e2e, bounded in time.
E2E_MARKS = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    # dagster_graphql's client calls gql the deprecated way; not ours to fix.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]
REFUSE_TRIGGER = "e2e_refuse_partition"
LOSE_BAR_TRIGGER = "e2e_lose_first_bar"
# Run config: the failure is final at once, whatever retry policy or RetryRequested steps use.
NO_RETRIES = {"execution": {"config": {"retries": {"disabled": {}}}}}

# Appended to msd_dagster.instance.recommended_dagster_yaml(home): what a user gets from
# `msd-dagster load`, plus the queue `dagster dev` needs for backfills.
RUN_QUEUE_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: msd/job
        value: partition
        limit: 2
telemetry:
  enabled: false
"""


# Daemons the tests rely on: queued runs are launched by one, backfills submitted by the other.
REQUIRED_DAEMONS = ("QUEUED_RUN_COORDINATOR", "BACKFILL")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test through a real `dagster dev` server (GraphQL API or a browser)",
    )


class GraphQLError(AssertionError):
    pass


@dataclass
class DagsterUI:
    """A running ``dagster dev`` and the files it works on."""

    port: int
    process: subprocess.Popen
    root: Path
    home: Path
    source: Path
    database: Path
    parquet: Path
    log: Path
    dataset: Any = None  # msd_dagster.generate.GeneratedDataset
    env: dict[str, str] = field(default_factory=dict)  # the server's MSD_* and DAGSTER_HOME

    def expected_rows(self, partition: str) -> dict[str, int]:
        """Rows the generated song files of a partition imply in each track table."""
        prefix = "TR" + partition.replace("/", "")
        tracks = [t for t in self.dataset.track_ids if t.startswith(prefix)]
        expected = {"msd_track": len(tracks)}
        for kind in ("bars", "beats", "sections", "tatums", "segments"):
            expected[f"msd_{kind[:-1]}"] = sum(self.dataset.track_rows[t][kind] for t in tracks)
        return expected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def repository_selector(self) -> dict[str, str]:
        return {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}

    @functools.cached_property
    def client(self):
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a query to ``/graphql``; its ``data``, or an error with the GraphQL errors."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def add_partitions(self, keys: list[str]) -> dict[str, str]:
        """``addDynamicPartition`` for each key; the result type per key."""
        results = {}
        for key in keys:
            data = self.graphql(
                ADD_PARTITION,
                {"key": key, "def": PARTITIONS_DEF, "repo": self.repository_selector},
            )
            results[key] = data["addDynamicPartition"]["__typename"]
        return results

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.graphql(RUN, {"runId": run_id})["runOrError"]
        assert data["__typename"] == "Run", data
        return data

    def run_shape(self, run_id: str) -> tuple[str, str, dict[str, str]]:
        """What makes runs alike: the job, its snapshot and each step's status."""
        run = self.run(run_id)
        steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
        return run["jobName"], run["pipelineSnapshotId"], steps

    def wait_for_run(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll the run until it has finished (SUCCESS, FAILURE or CANCELED); the run."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} still {run['status']} after {timeout:.0f} s; "
                    f"server log: {self.log}\n{self.log_tail()}"
                )
            time.sleep(0.5)

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """The warehouse database (committed and closed on exit)."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def partition_rows(self, partition: str) -> dict[str, int]:
        """Rows of a partition in each track table (its tracks' ids start with TR<c3><c4>)."""
        prefix = "TR" + partition.replace("/", "") + "%"
        with self.db() as db:
            return {
                table: db.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE track_id LIKE ?", (prefix,)
                ).fetchone()[0]
                for table in self.expected_rows(partition)
            }

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> dict[str, Any]:
        """Poll until the daemon has finished the backfill (it looks every 30 s); the backfill."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
                return backfill
            assert time.monotonic() < deadline, f"backfill still {backfill['status']}"
            time.sleep(1)

    def refuse_track_inserts(self, partition: str, message: str) -> None:
        """Make the database refuse the folder's ``msd_track`` rows: that folder's load fails
        (IntegrityError) and is rolled back; the other folders of a run still load."""
        prefix = "TR" + partition.replace("/", "")
        with self.db() as db:
            db.execute(
                f"CREATE TRIGGER {REFUSE_TRIGGER} BEFORE INSERT ON msd_track "
                f"WHEN NEW.track_id LIKE '{prefix}%' BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )

    def lose_first_bars(self, partition: str) -> None:
        """Make the database drop the first bar of each of the folder's tracks as it is
        inserted: the load succeeds, only the ``msd_bar`` check can notice (and it must)."""
        prefix = "TR" + partition.replace("/", "")
        with self.db() as db:
            db.execute(
                f"CREATE TRIGGER {LOSE_BAR_TRIGGER} AFTER INSERT ON msd_bar "
                f"WHEN NEW.track_id LIKE '{prefix}%' AND NEW.track_bar_id = 1 "
                "BEGIN DELETE FROM msd_bar WHERE bar_id = NEW.bar_id; END"
            )

    def repair_database(self) -> None:
        """Undo :meth:`refuse_track_inserts` and :meth:`lose_first_bars` (no-op if unused)."""
        with self.db() as db:
            for trigger in (REFUSE_TRIGGER, LOSE_BAR_TRIGGER):
                db.execute(f"DROP TRIGGER IF EXISTS {trigger}")

    @contextlib.contextmanager
    def writes_held(self) -> Iterator[None]:
        """Hold the warehouse database's write lock (readers go on, WAL): a load waits at its
        first write, within SQLite's busy timeout, until the block ends."""
        conn = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.close()  # rolls back: nothing was written

    def tracks_with_bars(self, partition: str) -> int:
        prefix = "TR" + partition.replace("/", "")
        return sum(
            1
            for t in self.dataset.track_ids
            if t.startswith(prefix) and self.dataset.track_rows[t]["bars"]
        )

    def cli_load(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """``msd-dagster load ARGS`` with the server's environment and instance, from the
        repository root as a user runs it; its output is kept in the result."""
        return subprocess.run(
            [sys.executable, "-m", "msd_dagster.cli", "load", *args],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_load_started(self, *args: str) -> subprocess.Popen:
        """``msd-dagster load ARGS`` as :meth:`cli_load` runs it, started in the background."""
        return subprocess.Popen(
            [sys.executable, "-m", "msd_dagster.cli", "load", *args],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, as "pid command" lines."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")".
        comm_end = text.rfind(")")
        fields = text[comm_end + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{stat.parent.name} {text[text.find('(') + 1 : comm_end]}")
    return members


def stop_group(process: subprocess.Popen, grace: float = 30) -> list[str]:
    """Stop ``dagster dev`` and everything it started; what had to be killed.

    SIGTERM goes to the leader only: ``dagster dev`` then asks its webserver and daemon to
    shut down over their shutdown pipes and waits for them (signalling every process at once
    can leave the daemon hanging half shut down). Whatever is left in the process group after
    that (code servers, run workers) gets SIGTERM, then SIGKILL.
    """
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    killed: list[str] = []
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        members = group_members(pgid)
        if not members:
            break
        if sig == signal.SIGKILL:
            killed = members
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return killed


def _server_env(tmp: Path, source: Path, database: Path, parquet: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_", "AWS_"))}
    env.update(
        DAGSTER_HOME=str(home),
        MSD_HOME=str(tmp / "msd_home"),
        MSD_SOURCE=str(source),
        MSD_DATABASE_URL=f"sqlite:///{database}",
        MSD_PARQUET_DIR=str(parquet),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """Start children with SIGINT at its default, even when pytest runs with it ignored.

    A process started in the background by a non-interactive shell ignores SIGINT, and its
    children inherit that. ``dagster dev`` maps SIGTERM onto its SIGINT handler, so it would
    then ignore SIGTERM too and never shut down cleanly. A Python handler (unlike SIG_IGN) is
    reset to the default by exec, so installing one around ``Popen`` is enough.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _wait_until_ready(ui: DagsterUI, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            raise RuntimeError(
                f"dagster dev exited with {ui.process.returncode} before it was ready:\n"
                f"{ui.log_tail()}"
            )
        try:
            data = ui.graphql(WORKSPACE)
        except (requests.RequestException, ValueError, GraphQLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
            continue
        entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
        entry = entries.get(LOCATION)
        loaded = entry and entry["loadStatus"] == "LOADED"
        if loaded and entry["locationOrLoadError"]["__typename"] == "PythonError":
            raise RuntimeError(
                f"code location {LOCATION} failed to load: "
                f"{entry['locationOrLoadError']['message']}"
            )
        statuses = {
            s["daemonType"]: s["healthy"]
            for s in data["instance"]["daemonHealth"]["allDaemonStatuses"]
        }
        daemons_ok = all(statuses.get(d) for d in REQUIRED_DAEMONS)
        if loaded and daemons_ok:
            return
        last = f"location entry {entry}, daemons {statuses}"
        time.sleep(0.5)
    raise RuntimeError(f"dagster dev not ready after {timeout:.0f} s ({last}):\n{ui.log_tail()}")


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    from msd_dagster.generate import generate_dataset
    from msd_dagster.instance import write_recommended_config

    tmp = tmp_path_factory.mktemp("dagster-ui")
    source, home, parquet = tmp / "source", tmp / "dagster_home", tmp / "parquet"
    database = tmp / "msd.sqlite"
    dataset = generate_dataset(source, SONGS, seed=SEED, folders=list(PARTITIONS))
    songs_per_folder = [
        sum(t.startswith("TR" + p.replace("/", "")) for t in dataset.track_ids) for p in PARTITIONS
    ]
    assert min(songs_per_folder) >= 2, songs_per_folder  # the tests' premise
    write_recommended_config(home)
    with open(home / "dagster.yaml", "a") as config:
        config.write(RUN_QUEUE_YAML)
    port = free_port()
    log = tmp / "dagster-dev.log"
    env = _server_env(tmp, source, database, parquet, home)
    with open(log, "wb") as out, _sigint_not_ignored():
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
            + ["-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole afterwards
        )
    ui = DagsterUI(port, process, tmp, home, source, database, parquet, log, dataset, env)
    try:
        _wait_until_ready(ui, START_TIMEOUT)
        ui.graphql(SET_NUX_SEEN)
        yield ui
    finally:
        leftovers = stop_group(process)
        still_alive = group_members(process.pid)
        open_after = port_open(port)
    assert not still_alive, f"processes of dagster dev survived SIGKILL: {still_alive}"
    assert not open_after, f"port {port} still open after dagster dev was stopped"
    # Processes that ignored SIGTERM were killed: worth a note, not a failure of the tests.
    if leftovers:
        sys.stderr.write(f"\ndagster dev: killed after SIGTERM: {leftovers}\n")


@pytest.fixture(scope="session")
def ui_partitions(dagster_ui: DagsterUI) -> list[str]:
    """The dataset's partitions, registered through GraphQL (idempotent)."""
    results = dagster_ui.add_partitions(list(PARTITIONS))
    bad = {
        k: v
        for k, v in results.items()
        if v not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError")
    }
    assert not bad, f"addDynamicPartition failed: {bad}"
    return list(PARTITIONS)
