"""Where the real MSD samples are: ``../shared`` beside the repository (present in CI)."""

from pathlib import Path

import pytest

REAL_SUBSET = (
    Path(__file__).resolve().parents[1].parent / "shared" / "msd-samples" / "MillionSongSubset"
)
REAL_LEAF = REAL_SUBSET / "data" / "A" / "A" / "A"
REAL_ADDITIONAL_FILES = REAL_SUBSET / "AdditionalFiles"


def real_song_paths() -> list[Path]:
    if not REAL_LEAF.is_dir():
        pytest.skip(f"the real MSD samples are not at {REAL_SUBSET}")
    return sorted(REAL_LEAF.glob("*.h5"))
