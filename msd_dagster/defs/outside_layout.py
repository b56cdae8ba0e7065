"""The files under ``data/`` that no partition takes, as Dagster records them: one observation
of ``raw/song_files`` per survey of the dataset (by ``msd-dagster load`` and, when the list
changes, by the discovery sensor), so the asset's Events tab says what was left out and why."""

from collections.abc import Callable, Sequence

import dagster as dg

from msd_dagster.defs.tables import RAW_KEY
from msd_dagster.source.layout import OutsideLayout, listing_fingerprint, outside_total_text

# Entries named in the metadata; the rest are counted (a misnamed copy may hold thousands).
OUTSIDE_LISTED = 100


def _first_listed(
    outside: Sequence[OutsideLayout], line: Callable[[OutsideLayout], str], more: str
) -> list[str]:
    """``line`` of the first ``OUTSIDE_LISTED`` entries, then ``more`` with how many are left."""
    lines = [line(entry) for entry in outside[:OUTSIDE_LISTED]]
    if len(outside) > OUTSIDE_LISTED:
        lines.append(more.format(len(outside) - OUTSIDE_LISTED))
    return lines


def outside_layout_lines(outside: Sequence[OutsideLayout]) -> list[str]:
    """One line per entry (``location (n file(s)): reason``), at most ``OUTSIDE_LISTED``, then
    how many more there are."""
    return _first_listed(outside, OutsideLayout.describe, "... and {} more folder(s) or file(s)")


def outside_layout_digest(outside: Sequence[OutsideLayout]) -> str:
    """Changes when an entry, its count or its reason does: when to record a new observation."""
    return listing_fingerprint((e.location, e.files, e.reason) for e in outside)


def outside_layout_observation(
    outside: Sequence[OutsideLayout], source: str
) -> dg.AssetObservation:
    """What no partition takes under ``source``'s ``data/``: the file count (plotted by the UI),
    and the first ``OUTSIDE_LISTED`` entries with their reasons."""
    listed = _first_listed(
        outside,
        lambda e: f"- `{e.location}` ({e.count_text()}): {e.reason}",
        "- ... and {} more (counted above)",
    )
    return dg.AssetObservation(
        RAW_KEY,
        description=f"{outside_total_text(outside)} outside the layout, not loaded",
        metadata={
            "files_outside_layout": sum(entry.files for entry in outside),
            "entries_outside_layout": len(outside),
            "outside_layout": dg.MetadataValue.md("\n".join(listed) or "none"),
            "outside_layout_list": dg.MetadataValue.json(
                [
                    {
                        "location": entry.location,
                        "files": entry.files,
                        "at_least": entry.at_least,
                        "reason": entry.reason,
                    }
                    for entry in outside[:OUTSIDE_LISTED]
                ]
            ),
            "source": source,
        },
    )
