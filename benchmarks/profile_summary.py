"""Summarize a ``py-spy record -f raw`` profile (collapsed stacks): top costs, self and inclusive.

    py-spy record -f raw -o prof.txt --subprocesses -- python -m msd_dagster.cli load ...
    python -m benchmarks.profile_summary prof.txt [--top 30] [--match reader.py]

Inclusive figures count a function once per sample, however often it recurses.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "msd_dagster/", "lib/python3"):
        if marker in file:
            file = file[file.index(marker) :]
            break
    return f"{match['func']} ({file})"


def summarize(path: Path, top: int = 30, match: str | None = None) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")[1:]]  # first: the process
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples"]
    for title, counter in (("self", self_counts), ("inclusive", inclusive)):
        lines.append(f"\ntop {top} by {title} time:")
        shown = 0
        for frame, n in counter.most_common():
            if match and match not in frame:
                continue
            lines.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", help="only frames containing this text")
    args = parser.parse_args()
    print(summarize(args.profile, args.top, args.match))


if __name__ == "__main__":
    main()
