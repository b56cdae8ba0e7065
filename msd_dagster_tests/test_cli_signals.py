"""Real signals sent to a real ``msd-dagster load``: it stops within 5 s, keeps what finished,
rolls back what was in progress, leaves no worker behind, and the next load cleans up after a
load that was killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from msd_dagster.generate import GeneratedDataset, generate_dataset
from msd_dagster.instance import write_recommended_config
from msd_dagster_tests.pipeline_helpers import partition_tracks, sqlite_url
from msd_dagster_tests.test_pipeline import _cli

FOLDERS = ["A/A", "A/B", "A/C", "A/D", "A/E", "A/F", "A/G", "A/H"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    """Enough songs that a load takes several seconds: time to interrupt it mid-way."""
    root = tmp_path_factory.mktemp("signals") / "dataset"
    return generate_dataset(root, 480, seed=5, folders=FOLDERS, workers=2)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_"))}
    write_recommended_config(home / "dagster_home")
    env.update(DAGSTER_HOME=str(home / "dagster_home"), MSD_HOME=str(home / "msd_home"))
    return env


def _start(dataset: GeneratedDataset, database: Path, env: dict[str, str], workers: int):
    return subprocess.Popen(
        [*_cli(), "load", "--source", str(dataset.root), "--database-url", sqlite_url(database)]
        + ["--workers", str(workers), "--skip-additional-files"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def _gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]:
            return True
        time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _tracks(database: Path) -> list[str]:
    engine = sa.create_engine(sqlite_url(database))
    try:
        with engine.connect() as conn:
            return sorted(conn.exec_driver_sql("SELECT track_id FROM msd_track").scalars())
    finally:
        engine.dispose()


def _loaded_folders(dataset: GeneratedDataset, tracks: list[str]) -> list[str]:
    """The folders whose tracks are all in the database (and no folder is partial)."""
    complete = []
    for folder in FOLDERS:
        expected = set(partition_tracks(dataset, folder))
        present = expected & set(tracks)
        assert present in (set(), expected), f"{folder} is partly loaded"
        if present:
            complete.append(folder)
    return complete


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_load_and_keeps_what_finished(
    dataset: GeneratedDataset, tmp_path: Path, signum: signal.Signals
) -> None:
    env = _env(tmp_path)
    database = tmp_path / "msd.sqlite"
    process = _start(dataset, database, env, workers=2)
    lines = _wait_for_line(process, "[1/")
    workers = _children(process.pid)
    assert workers, "the runs execute in child processes"
    sent = time.monotonic()
    process.send_signal(signum)
    out, _ = process.communicate(timeout=30)
    stopped = time.monotonic() - sent
    output = "".join(lines) + out
    assert stopped < 5, (stopped, output)
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), output
    assert _gone(workers, 5), "a worker outlived the load"

    reported = [line.split()[1].rstrip(":") for line in output.splitlines() if ": ok," in line]
    loaded = _loaded_folders(dataset, _tracks(database))
    assert sorted(reported) == loaded  # what the command said it loaded is exactly what is in
    assert f"interrupted ({signum.name}): {len(loaded)} of {len(FOLDERS)} folder(s)" in output
    assert len(loaded) < len(FOLDERS)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert not [r for r in runs if not r.is_finished], "a run was left unfinished"
        stopped_runs = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert stopped_runs
        materialized = set(
            instance.get_materialized_partitions(dg.AssetKey(["warehouse", "msd_track"]))
        )
        assert materialized == set(loaded)


def _wait_for_line(process: subprocess.Popen, prefix: str) -> list[str]:
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    pytest.fail(f"no line {prefix!r}:\n" + "".join(lines))


def _stop_and_wait(process: subprocess.Popen, signum: signal.Signals, lines: list[str]) -> str:
    """Send ``signum``: the command ends within 5 s with the signal's exit code."""
    sent = time.monotonic()
    process.send_signal(signum)
    out, _ = process.communicate(timeout=30)
    output = "".join(lines) + out
    assert time.monotonic() - sent < 5, output
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), output
    return output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_the_startup_window_stops_the_load_at_once(
    dataset: GeneratedDataset, tmp_path: Path, signum: signal.Signals
) -> None:
    """Between writing the instance configuration and the first worker, Dagster swaps the
    signal handlers around its resources: a stop sent there was once caught and forgotten,
    and the whole load ran. The command is held exactly there until the signal arrives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(tmp_path / "dagster_home"),  # no configuration yet: it is written
        MSD_HOME=str(tmp_path / "msd_home"),
        MSD_TEST_PAUSE_AT="startup",
    )
    database = tmp_path / "msd.sqlite"
    process = _start(dataset, database, env, workers=2)
    lines = _wait_for_line(process, "wrote the recommended Dagster instance configuration")
    lines += _wait_for_line(process, "paused at startup")
    output = _stop_and_wait(process, signum, lines)
    assert f"interrupted ({signum.name}) before any folder was loaded" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert not database.exists() or _tracks(database) == []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_runs() == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_right_after_a_commit_reports_and_records_that_folder_loaded(
    dataset: GeneratedDataset, tmp_path: Path, signum: signal.Signals
) -> None:
    """The worker is held between a folder's commit and its records when the stop comes: the
    folder is in the database, so it is reported loaded and its materializations recorded."""
    env = _env(tmp_path)
    env["MSD_TEST_PAUSE_AT"] = "after-commit"
    database = tmp_path / "msd.sqlite"
    process = _start(dataset, database, env, workers=1)
    lines = _wait_for_line(process, "paused at after-commit")
    committed = lines[-1].split()[-1]
    output = _stop_and_wait(process, signum, lines)
    loaded = _loaded_folders(dataset, _tracks(database))
    assert loaded == [committed] == [FOLDERS[0]]
    assert f"{committed}: ok," in output
    assert (
        f"interrupted ({signum.name}): 1 of {len(FOLDERS)} folder(s) loaded and recorded: "
        f"{committed};" in output
    )
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert all(r.is_finished for r in instance.get_runs())
        for table in ("msd_track", "msd_artist", "msd_segment"):
            materialized = instance.get_materialized_partitions(dg.AssetKey(["warehouse", table]))
            assert materialized == {committed}, table


def test_a_killed_load_leaves_no_worker_and_the_next_load_cleans_up(
    dataset: GeneratedDataset, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    database = tmp_path / "msd.sqlite"
    process = _start(dataset, database, env, workers=2)
    _wait_for_line(process, "[1/")
    workers = _children(process.pid)
    assert workers
    process.kill()
    process.communicate(timeout=30)
    assert _gone(workers, 5), "the workers outlived their killed parent"
    loaded = _loaded_folders(dataset, _tracks(database))  # no folder half-written
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        orphans = [r.run_id for r in instance.get_runs() if not r.is_finished]
    assert orphans, "the killed load's runs are still marked as running"

    again = subprocess.run(
        [*_cli(), "load", "--source", str(dataset.root), "--database-url", sqlite_url(database)]
        + ["--workers", "2", "--skip-additional-files"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    for run_id in orphans:
        assert f"marked run {run_id} failed" in again.stdout
    assert _loaded_folders(dataset, _tracks(database)) == FOLDERS
    assert len(_tracks(database)) == len(dataset.track_ids)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for run_id in orphans:
            run = instance.get_run_by_id(run_id)
            assert run.status == dg.DagsterRunStatus.FAILURE
        assert all(r.is_finished for r in instance.get_runs())
    assert loaded is not None


def test_a_killed_worker_fails_its_folders_and_the_load_goes_on(
    dataset: GeneratedDataset, tmp_path: Path
) -> None:
    """A worker killed from outside (e.g. by the out-of-memory killer) fails its run's
    folders, which are recorded failed at once, not left started; the other runs load."""
    env = _env(tmp_path)
    database = tmp_path / "msd.sqlite"
    process = _start(dataset, database, env, workers=1)
    lines = _wait_for_line(process, "[1/")
    victims = _children(process.pid)
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    out, _ = process.communicate(timeout=300)
    output = "".join(lines) + out
    assert process.returncode == 1, output
    assert "its process ended with exit code -9" in output
    failed = [line.split()[1] for line in output.splitlines() if line.startswith("folder ")]
    loaded = _loaded_folders(dataset, _tracks(database))
    assert failed and sorted(failed + loaded) == FOLDERS, output
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert all(r.is_finished for r in runs), "the killed worker's run is left started"
        killed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert len(killed) == 1


if sys.platform != "linux":  # PR_SET_PDEATHSIG and /proc are Linux's
    pytestmark = pytest.mark.skip("Linux only")
