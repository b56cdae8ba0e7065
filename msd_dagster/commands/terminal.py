"""What the commands print while they work."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def progress_printer(verb: str) -> Callable[[int, int], None]:
    """``show(done, total)``: one line on stderr, rewritten at most once a second (and at the
    end)."""
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 1:
            last[0] = now
            print(f"\r{verb} {done}/{total}", end="", file=sys.stderr, flush=True)

    return show
