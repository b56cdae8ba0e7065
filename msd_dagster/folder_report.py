"""What a folder's load shows besides its rows: the frames and Markdown its materializations
carry (the listing, the rejected files, the tracks per decade). Plain pandas and text."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from msd_dagster.msd.frames import RejectedFile
from msd_dagster.source.layout import SourceFile


def listing_frame(files: Sequence[SourceFile]) -> pd.DataFrame:
    """The folder's files as listed at the source: key, size, modification time and ETag."""
    return pd.DataFrame(
        {
            "key": pd.array([f.key for f in files], dtype="string"),
            "size": pd.array([f.size for f in files], dtype="int64"),
            "modified": pd.to_datetime([f.modified for f in files]).astype("datetime64[us]"),
            "etag": pd.array([f.etag for f in files], dtype="string"),
        }
    )


def rejected_frame(rejected: Sequence[RejectedFile]) -> pd.DataFrame:
    """Every rejected file and why (kept with the songs' frames)."""
    return pd.DataFrame(
        {
            "name": pd.array([r.name for r in rejected], dtype="string"),
            "reason": pd.array([r.reason for r in rejected], dtype="string"),
        }
    )


def rejected_markdown(rejected: Sequence[RejectedFile], limit: int = 50) -> str:
    """The first ``limit`` rejected files as a Markdown list, then how many more there are."""
    lines = [f"- `{r.name}`: {r.reason}" for r in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"- ... and {len(rejected) - limit} more (see the rejected_files frame)")
    return "\n".join(lines) or "none"


def tracks_per_decade(songs: pd.DataFrame) -> str:
    """A small Markdown bar chart of the partition's tracks per decade (unknown year apart)."""
    years = songs["year"]
    decades = (years.dropna().astype(int) // 10 * 10).value_counts().sort_index()
    rows = [
        f"| {d}s | {n} | {'█' * max(1, round(40 * n / len(songs)))} |" for d, n in decades.items()
    ]
    rows.append(f"| unknown | {int(years.isna().sum())} | |")
    return "| decade | tracks | |\n|---|---:|---|\n" + "\n".join(rows)
