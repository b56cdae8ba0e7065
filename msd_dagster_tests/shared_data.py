"""Where the real MSD samples are: ``../shared`` beside the repository (present in CI)."""

from pathlib import Path

import pytest

REAL_SUBSET = (
    Path(__file__).resolve().parents[1].parent / "shared" / "msd-samples" / "MillionSongSubset"
)
REAL_LEAF = REAL_SUBSET / "data" / "A" / "A" / "A"
REAL_ADDITIONAL_FILES = REAL_SUBSET / "AdditionalFiles"
# The text files of the samples' AdditionalFiles (subset_<name>.txt), in the parser's order,
# and their published line counts (reference, section 4): written out here rather than taken
# from the parser's list, so the tests check the parser against the real folder.
REAL_TEXT_FILE_ROWS = {
    "unique_artists": 3888,
    "artist_location": 1402,
    "unique_terms": 3502,
    "unique_mbtags": 726,
    "unique_tracks": 10000,
    "tracks_per_year": 4680,
}
REAL_TEXT_FILES = tuple(REAL_TEXT_FILE_ROWS)


def real_song_paths() -> list[Path]:
    if not REAL_LEAF.is_dir():
        pytest.skip(f"the real MSD samples are not at {REAL_SUBSET}")
    return sorted(REAL_LEAF.glob("*.h5"))
