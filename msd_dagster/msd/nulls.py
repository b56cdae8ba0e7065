"""The null rules: how the MSD spells "unknown", and what becomes NULL.

This is the one place these rules live; the reader applies them to every song it returns.

* every float (hotttnesss, latitude, longitude, ...): NaN, the MSD's "not computed";
* ``year`` (musicbrainz/songs): 0, "no release year known";
* ``danceability``, ``energy``: 0.0, never computed in the MSD;
* ``artist_7digitalid``, ``release_7digitalid``, ``track_7digitalid``, ``artist_playmeid``:
  values <= 0 (-1 / 0 mean "no such id");
* text fields (mbid, location, genre, release, ...): the empty string (blank fixed-width field).

Arrays (bars, segments, terms ...) are kept as they are: an empty array is "no rows", and a NaN
inside an analysis array becomes NULL in its column when loaded.
"""

from __future__ import annotations

import math
from typing import Any

ZERO_MEANS_UNKNOWN: frozenset[str] = frozenset({"year", "danceability", "energy"})
NON_POSITIVE_MEANS_UNKNOWN: frozenset[str] = frozenset(
    {"artist_7digitalid", "release_7digitalid", "track_7digitalid", "artist_playmeid"}
)


def null_if_unknown(field: str, value: Any) -> Any:
    """Return ``None`` when ``value`` is the MSD's spelling of "unknown" for ``field``."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return value or None
    if field in ZERO_MEANS_UNKNOWN and value == 0:
        return None
    if field in NON_POSITIVE_MEANS_UNKNOWN and value <= 0:
        return None
    return value


def apply_null_rules(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of a decoded compound row with every unknown value replaced by ``None``."""
    return {name: null_if_unknown(name, value) for name, value in fields.items()}
