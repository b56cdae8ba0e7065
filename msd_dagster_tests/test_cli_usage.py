"""Every subcommand with bad arguments: one line on stderr, a non-zero exit (2 for usage), no
traceback; and the runtime failures that used to end in a traceback: one line naming the cause."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from msd_dagster_tests.test_pipeline import _cli

NOWHERE = "/nonexistent-msd-dagster-folder"

# (arguments, expected exit code, text the line must hold); {tmp} is a temporary folder and
# {file} a file in it.
CASES = [
    ([], 2, "required"),
    (["no-such-command"], 2, "invalid choice"),
    (["sample", "--songs", "-5", "--out", "{tmp}/s"], 2, "--songs: must be at least 1"),
    (["sample", "--songs", "0", "--out", "{tmp}/s"], 2, "--songs: must be at least 1"),
    (["sample", "--songs", "many", "--out", "{tmp}/s"], 2, "not a whole number"),
    (["sample", "--songs", "3", "--seed", "-1", "--out", "{tmp}/s"], 2, "--seed: must be 0"),
    (["sample", "--songs", "3", "--workers", "0", "--out", "{tmp}/s"], 2, "--workers"),
    (["sample", "--songs", "3", "--workers", "-3", "--out", "{tmp}/s"], 2, "--workers"),
    (["sample", "--songs", "3", "--folders", "a/b", "--out", "{tmp}/s"], 2, "'a/b'"),
    (["sample", "--songs", "3", "--folders", "--out", "{tmp}/s"], 2, "--folders"),
    (["sample", "--songs", "3", "--out", "{file}"], 2, "is not a folder"),
    (["sample", "--songs", "3", "--out", "/proc/nope"], 2, "cannot create --out /proc/nope"),
    (["load", "--workers", "0"], 2, "--workers: must be at least 1"),
    (["load", "--partition", "a/b"], 2, "invalid partition key 'a/b'"),
    (["load", "--partition"], 2, "--partition"),
    (["load", "--source", f"{NOWHERE}/dataset"], 2, "does not exist"),
    (
        ["load", "--source", "{dataset}", "--database-url", f"sqlite:///{NOWHERE}/x.sqlite"],
        2,
        f"the folder {NOWHERE} does not exist",
    ),
    (
        ["load", "--source", "{dataset}", "--database-url", "mssql+pyodbc://u:S3cr3t@h/db"],
        2,
        "mssql+pyodbc",
    ),
    (["load", "--source", "{dataset}", "--partition", "Z/Z"], 2, "no such partition(s)"),
    (["stage", "--from", "{tmp}", "--to", "s3://b/p", "--workers", "0"], 2, "--workers"),
    (["stage", "--from", f"{NOWHERE}", "--to", "s3://b/p"], 2, "does not exist"),
    (["stage", "--from", "{tmp}", "--to", "bucket/prefix"], 2, "s3://"),
    (["verify-azure-sql", "--songs", "0"], 2, "--songs: must be at least 1"),
    (["verify-azure-sql", "--wait-seconds", "-1"], 2, "--wait-seconds: must be 0 or more"),
    (["verify-azure-sql", "--partition", "AB"], 2, "invalid partition key"),
    (["verify-azure-sql"], 2, "not a SQL Server URL"),
    (["verify-azure-sql", "--source", "{file}"], 2, "is not a folder"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("usage") / "dataset"
    for key in ("data/A/B/C/TRABC000000000000.h5",):
        (root / key).parent.mkdir(parents=True)
        (root / key).write_bytes(b"not read: the command stops before")
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSD_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), MSD_HOME=str(tmp_path / "msd"))
    return env


@pytest.mark.parametrize(("args", "code", "text"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_argument_is_one_line_and_an_exit_code_never_a_traceback(
    args: list[str], code: int, text: str, tmp_path: Path, dataset: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    values = {"tmp": str(tmp_path), "file": str(tmp_path / "a-file"), "dataset": str(dataset)}
    env = _env(tmp_path)
    if args[:1] == ["verify-azure-sql"] and "--songs" not in args and "--wait-seconds" not in args:
        env["MSD_DATABASE_URL"] = "postgresql+psycopg://u:S3cr3t@h/db"
    result = subprocess.run(
        [*_cli(), *(a.format(**values) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, result.stderr
    assert text in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "S3cr3t" not in result.stdout + result.stderr
    assert not Path(NOWHERE).exists(), "a folder was created at the file system's root"


def test_verify_azure_sql_without_an_odbc_driver_is_one_line_like_load(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["MSD_DATABASE_URL"] = "mssql+pyodbc://u:S3cr3t@h/db?driver=No+Such+Driver+18"
    result = subprocess.run(
        [*_cli(), "verify-azure-sql"], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "mssql+pyodbc" in lines[0] and "Traceback" not in result.stderr
    assert "S3cr3t" not in result.stdout + result.stderr


@pytest.fixture
def full_disk(tmp_path: Path):
    """A tiny tmpfs, filled up (root only; skipped elsewhere)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_dagster_home_is_one_line_naming_the_folder(
    full_disk: Path, tmp_path: Path, dataset: Path
) -> None:
    home = full_disk / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with open(full_disk / "filler", "wb", buffering=0) as filler:  # fill it up
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    env = _env(tmp_path)
    env["DAGSTER_HOME"] = str(home)
    result = subprocess.run(
        [
            *_cli(),
            "load",
            "--source",
            str(dataset),
            "--database-url",
            f"sqlite:///{tmp_path}/msd.sqlite",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stdout + result.stderr
    assert "the disk is full" in lines[0] and str(home) in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


OUTSIDE = ["B/A B", "B/A'B", "B/A,B", "B/Ä", "B/" + "X" * 200, "C,D", "Ä", "a/b"]


def test_files_outside_the_layout_are_named_with_their_reason(tmp_path: Path) -> None:
    from msd_dagster.source.local import LocalDataset

    root = tmp_path / "dataset"
    (root / "data/A/B/C").mkdir(parents=True)
    for folder in OUTSIDE:
        (root / "data" / folder / "Z").mkdir(parents=True, exist_ok=True)
        (root / "data" / folder / "Z" / "TRABZ000000000000.h5").write_bytes(b"x")
    (root / "data/B/Q").mkdir()  # an empty folder holds no file: nothing to report
    found = {e.location: e for e in LocalDataset(root).files_outside_layout()}
    expected = {
        "data/B/A B/",
        "data/B/A'B/",
        "data/B/A,B/",
        "data/B/Ä/",
        f"data/B/{'X' * 200}/",
        "data/C,D/",
        "data/Ä/",
        "data/a/",
    }
    assert set(found) == expected
    assert all(e.files == 1 for e in found.values())
    assert "not a second-level folder name" in found["data/B/A B/"].reason
    assert "not a first-level folder name" in found["data/a/"].reason
    # The wrong depth: a file directly under a first-level folder.
    (root / "data/A/TRAAA000000000000.h5").write_bytes(b"x")
    found = {e.location: e for e in LocalDataset(root).files_outside_layout()}
    assert "directly under data/A/" in found["data/A/TRAAA000000000000.h5"].reason
    assert LocalDataset(root).list_partitions() == ["A/B", "B/Q"]


def test_a_large_folder_outside_the_layout_is_counted_up_to_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msd_dagster.source import layout
    from msd_dagster.source.local import LocalDataset

    root = tmp_path / "dataset"
    for folder in ("data/lower/a", "data/lower/b"):
        (root / folder).mkdir(parents=True)
        for i in range(4):
            (root / folder / f"{i}.h5").write_bytes(b"x")
    (root / "data/A/B/C").mkdir(parents=True)
    (root / "data/A/B/C/notes.txt").write_bytes(b"x")  # inside a partition: not outside
    monkeypatch.setattr(layout, "OUTSIDE_COUNT_LIMIT", 5)
    survey = LocalDataset(root).survey()
    assert survey.partitions == ["A/B"]
    (entry,) = survey.outside
    assert (entry.location, entry.files, entry.at_least) == ("data/lower/", 5, True)
    assert survey.outside_text() == "at least 5 file(s) under data/"
    assert entry.describe() == (
        "data/lower/ (at least 5 file(s)): 'lower' is not a first-level folder name (one "
        "uppercase letter A-Z), so it is no partition and its files are not loaded; song files "
        "are at data/<c3>/<c4>/<c5>/<TRACK_ID>.h5, folders named by one uppercase letter"
    )
    assert LocalDataset(root).survey(count_outside=False).outside == []


def test_the_summary_counts_every_rejected_file_beyond_the_listed_ones(tmp_path: Path) -> None:
    """The metadata lists the first 1,000 rejected files of a folder; the counts are of all."""
    import shutil

    from msd_dagster_tests.shared_data import real_song_paths

    root = tmp_path / "dataset"
    leaf = root / "data/A/A/A"
    leaf.mkdir(parents=True)
    songs = real_song_paths()
    for path in songs:
        shutil.copyfile(path, leaf / path.name)
    for i in range(1003):
        (leaf / f"stray-{i:04}.txt").write_bytes(b"x")
    database = f"sqlite:///{tmp_path / 'msd.sqlite'}"
    result = subprocess.run(
        [*_cli(), "load", "--source", str(root), "--database-url", database]
        + ["--skip-additional-files", "--workers", "1"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"[1/1] A/A: ok, {len(songs)} tracks, " in out and ", 1003 rejected, " in out
    assert "; 1,003 file(s) rejected\n" in out
    assert "\nrejected files (1,003):\n  data/A/A/A/stray-0000.txt: not a song file" in out
    assert "  data/A/A/A/stray-0999.txt: not a song file" in out
    assert "stray-1000.txt" not in out
    assert "  ... and 3 more in A/A (the rejected_files frame of its normalized/songs" in out
