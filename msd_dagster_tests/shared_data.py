"""Where the real MSD samples are: ``../shared`` beside the repository (present in CI)."""

from pathlib import Path

import pytest

REAL_SUBSET = (
    Path(__file__).resolve().parents[1].parent / "shared" / "msd-samples" / "MillionSongSubset"
)
REAL_LEAF = REAL_SUBSET / "data" / "A" / "A" / "A"
REAL_ADDITIONAL_FILES = REAL_SUBSET / "AdditionalFiles"
# The text files of the samples' AdditionalFiles (subset_<name>.txt), written out here rather
# than taken from the parser's list, so the tests check the parser against the real folder.
REAL_TEXT_FILES = (
    "unique_artists",
    "artist_location",
    "unique_terms",
    "unique_mbtags",
    "unique_tracks",
    "tracks_per_year",
)


def real_song_paths() -> list[Path]:
    if not REAL_LEAF.is_dir():
        pytest.skip(f"the real MSD samples are not at {REAL_SUBSET}")
    return sorted(REAL_LEAF.glob("*.h5"))
