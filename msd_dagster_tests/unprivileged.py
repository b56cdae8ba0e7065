"""Run a partition's listing, parse and load in a process that file permissions apply to.

Root ignores file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a test about an unreadable
file or folder runs this module as a child process without those capabilities (``capsh``,
Debian's libcap2-bin, which ``scripts/test.sh`` installs). As a non-root user it runs as is.

``python -m msd_dagster_tests.unprivileged ROOT PARTITION [SQLITE_URL]`` prints one JSON
object: the listed keys, then either the error raised (type, location, reason, permanent) or
the rejected files and the number of tracks (and, with a database URL, the rows written).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DROPPED_CAPABILITIES = "cap_dac_override,cap_dac_read_search"
REPOSITORY = Path(__file__).resolve().parents[1]


def unprivileged_command(args: list[str]) -> list[str]:
    """``python args`` as a process that file permissions apply to; skips the test when
    that is impossible here (root without capsh)."""
    command = [sys.executable, *args]
    if os.geteuid() != 0:
        return command
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.skip(
            "running as root without capsh (Debian package libcap2-bin): cannot drop "
            f"{DROPPED_CAPABILITIES} to test unreadable files; scripts/test.sh installs it"
        )
    return [capsh, f"--drop={DROPPED_CAPABILITIES}", "--", "-c", 'exec "$@"', "capsh", *command]


def probe(root: Path, partition: str, database_url: str | None = None) -> dict[str, Any]:
    """This module's output for ``root`` and ``partition``, run unprivileged."""
    args = ["-m", "msd_dagster_tests.unprivileged", str(root), partition]
    if database_url:
        args.append(database_url)
    done = subprocess.run(
        unprivileged_command(args),
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _error(exc: Exception) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "location": getattr(exc, "location", None),
        "reason": getattr(exc, "reason", None),
        "permanent": getattr(exc, "permanent", None),
        "message": str(exc),
    }


def main(argv: list[str]) -> dict[str, Any]:
    from msd_dagster.msd.partition import normalize_partition
    from msd_dagster.source.layout import SourceError
    from msd_dagster.source.local import LocalDataset

    root, partition = Path(argv[0]), argv[1]
    dataset = LocalDataset(root)
    out: dict[str, Any] = {}
    try:
        files = dataset.list_files(partition)
        out["files"] = [f.key for f in files]
        batch, _ = normalize_partition(dataset, out["files"])
    except SourceError as exc:
        out["error"] = _error(exc)
        return out
    out["rejected"] = sorted([r.name, r.reason] for r in batch.rejected)
    out["tracks"] = batch.track_count
    if len(argv) > 2:
        from msd_dagster.warehouse import create_engine_for_url, ensure_schema, load_partition

        engine = create_engine_for_url(argv[2])
        ensure_schema(engine)
        out["written"] = load_partition(engine, partition, batch.frames)
        engine.dispose()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
