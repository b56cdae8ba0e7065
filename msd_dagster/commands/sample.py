"""``msd-dagster sample``: write a generated MSD-format dataset root."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from msd_dagster.commands.terminal import progress_printer


def sample(
    out: Path,
    songs: int,
    seed: int,
    folders: Sequence[str] | None,
    additional_files: bool,
    workers: int,
) -> int:
    """Generate ``songs`` songs into ``out``; the exit status (2 when ``out`` cannot be made)."""
    from msd_dagster.generate import generate_dataset

    started = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    result = generate_dataset(
        out,
        songs,
        seed=seed,
        folders=folders or None,
        additional_files=additional_files,
        workers=workers,
        progress=progress_printer("generated"),
    )
    seconds = time.perf_counter() - started
    print(
        f"\nwrote {len(result.track_ids)} songs by {len(result.artist_ids)} artists in "
        f"{len(result.folders)} partitions to {result.root} in {seconds:.1f} s"
    )
    return 0
