"""Synthetic Million Song Dataset generator.

``generate_dataset`` writes song files with exactly the real PyTables layout and realistic
values, plus (optionally) the subset-style AdditionalFiles, deterministically for a seed.
"""

from .dataset import ROW_KINDS, GeneratedDataset, generate_dataset
from .song_file import SongData, write_song_file

__all__ = ["ROW_KINDS", "GeneratedDataset", "SongData", "generate_dataset", "write_song_file"]
