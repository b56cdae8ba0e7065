"""What the discovery sensor does on one tick, as a pure function over a small state.

A tick must stay cheap on the full set (676 folders, a million objects): it lists only the
second-level folders (a few delimiter listings), and fingerprints a bounded number of known
partitions per tick, round-robin, so every partition is re-checked every
``ceil(partitions / budget)`` ticks without ever listing every object in one tick.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class DiscoveryState:
    """The sensor cursor: fingerprints seen per partition, where the round-robin stands, and
    the digest of the files outside the layout last recorded."""

    fingerprints: dict[str, str] = field(default_factory=dict)
    next_index: int = 0
    outside_digest: str = ""

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "fingerprints": self.fingerprints,
                "next_index": self.next_index,
                "outside_digest": self.outside_digest,
            }
        )

    @classmethod
    def from_cursor(cls, cursor: str | None) -> DiscoveryState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(
            dict(data.get("fingerprints", {})),
            int(data.get("next_index", 0)),
            str(data.get("outside_digest", "")),
        )


@dataclass(frozen=True)
class DiscoveryResult:
    new_partitions: list[str]
    changed_partitions: list[str]
    state: DiscoveryState


def discover(
    state: DiscoveryState,
    current_partitions: Sequence[str],
    fingerprint: Callable[[str], str],
    budget: int = 25,
) -> DiscoveryResult:
    """New partitions get fingerprinted and requested; ``budget`` known ones are re-checked."""
    fingerprints = dict(state.fingerprints)
    current = sorted(set(current_partitions))
    new = [key for key in current if key not in fingerprints]
    for key in new:
        fingerprints[key] = fingerprint(key)
    known = [key for key in current if key not in new]
    changed: list[str] = []
    next_index = state.next_index
    if known:
        start = next_index % len(known)
        for offset in range(min(budget, len(known))):
            key = known[(start + offset) % len(known)]
            value = fingerprint(key)
            if value != fingerprints.get(key):
                changed.append(key)
                fingerprints[key] = value
        next_index = (start + min(budget, len(known))) % len(known)
    return DiscoveryResult(
        new, sorted(changed), DiscoveryState(fingerprints, next_index, state.outside_digest)
    )
