"""Where things are in an MSD dataset root, and what a partition is.

A partition is a second-level folder such as ``A/B`` (``data/A/B/*/*.h5``): 35 in the subset,
up to 676 in the full set, a few hundred to ~1,500 files each. That is small enough to parse
and load in one step with bounded memory, and large enough that Dagster's per-run overhead
stays a small share of the work (third-level folders hold 1-23 files: far too small).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

# The folder beside data/ that holds the AdditionalFiles.
ADDITIONAL_DIR = "AdditionalFiles"
PARTITION_KEY_PATTERN = re.compile(r"^[A-Z]/[A-Z]$")
# Real song files are 0.2-0.4 MB (the largest a few MB): a file above this is not a song, and is
# rejected before it is read into memory (each read holds the whole file).
MAX_SONG_FILE_BYTES = 64 * 1024 * 1024
SONG_FILE_PATTERN = re.compile(r"^data/([A-Z])/([A-Z])/([A-Z])/(TR[A-Z0-9]{16})\.h5$")


def too_large_reason(size: int | None) -> str:
    """Why a file above ``MAX_SONG_FILE_BYTES`` is rejected (``size`` when it is known)."""
    amount = f"{size:,} bytes" if size is not None else f"more than {MAX_SONG_FILE_BYTES:,} bytes"
    return f"{amount}: larger than any song file (at most {MAX_SONG_FILE_BYTES:,}); not read"


class SourceError(Exception):
    """A problem at the source. ``location`` is a key or folder relative to the dataset root
    (or an ``s3://`` URL), ``reason`` says what is wrong and what to do, and ``permanent`` says
    that retrying cannot help (fail at once) rather than that it might (retry the step)."""

    def __init__(self, location: str, reason: str, *, permanent: bool) -> None:
        Exception.__init__(self, self._message(location, reason))
        self.location = location
        self.reason = reason
        self.permanent = permanent

    @staticmethod
    def _message(location: str, reason: str) -> str:
        return f"{location}: {reason}"


class SourceListingError(SourceError):
    """A partition's listing could not see everything: the partition must fail (loading what
    was seen would delete the rows of what was not). ``location`` names the folder."""

    @staticmethod
    def _message(location: str, reason: str) -> str:
        return f"cannot list {location}: {reason}"


class UnreadableSourceFile(SourceError):
    """One listed file that cannot be read for a reason of its own (permissions, a broken
    symbolic link, gone since the listing, too large): the normalizer rejects it by name and
    the other files load. Always permanent."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(location, reason, permanent=True)


@dataclass(frozen=True)
class SourceFile:
    """One song file at the source: its key relative to the dataset root, size and version."""

    key: str
    size: int
    modified: datetime | None = None
    etag: str | None = None

    @property
    def track_id(self) -> str:
        return self.key.rsplit("/", 1)[-1].removesuffix(".h5")


def validate_partition_key(key: str) -> str:
    """``key`` if it names a second-level folder (``"A/B"``); else ``ValueError`` saying so."""
    if not isinstance(key, str) or not PARTITION_KEY_PATTERN.match(key):
        raise ValueError(
            f"invalid partition key {key!r}: expected two uppercase letters separated by '/', "
            "the second-level folder of the dataset (e.g. 'A/B')"
        )
    return key


def partition_track_range(partition_key: str) -> tuple[str, str]:
    """Half-open ``track_id`` range ``[lo, hi)`` of a partition: ``"A/B"`` -> ``("TRAB", "TRAC")``.

    ``hi`` is always made of uppercase letters (``"A/Z"`` -> ``("TRAZ", "TRB")``, ``"Z/Z"`` ->
    ``("TRZZ", "TS")``), so the range is the same under any collation.
    """
    x, y = validate_partition_key(partition_key).split("/")
    lo = f"TR{x}{y}"
    if y != "Z":
        return lo, f"TR{x}{chr(ord(y) + 1)}"
    if x != "Z":
        return lo, f"TR{chr(ord(x) + 1)}"
    return lo, "TS"


def partition_prefix(key: str) -> str:
    """``'A/B'`` -> ``'data/A/B/'``."""
    return f"data/{validate_partition_key(key)}/"


def partition_of_track(track_id: str) -> str:
    """``'TRABCDE...'`` -> ``'A/B'`` (3rd and 4th characters of the track id)."""
    return f"{track_id[2]}/{track_id[3]}"


def is_song_file_key(key: str) -> bool:
    """True for ``data/X/Y/Z/TRXYZ....h5`` whose folders agree with the track id."""
    match = SONG_FILE_PATTERN.match(key)
    return bool(match) and match.group(4)[2:5] == "".join(match.groups()[:3])


FIRST_LEVEL_PATTERN = re.compile(r"^[A-Z]$")
_LAYOUT = (
    "song files are at data/<c3>/<c4>/<c5>/<TRACK_ID>.h5, folders named by one uppercase letter"
)
# Files below a folder outside the layout are counted up to this many: a survey runs on every
# load and every sensor tick, and a large misnamed copy must not make it list everything.
OUTSIDE_COUNT_LIMIT = 10_000


def not_a_song_file_reason(key: str) -> str:
    """Why a file listed in a partition folder is rejected by its name alone (never read)."""
    if not key.endswith(".h5"):
        return "not a song file (only <TRACK_ID>.h5 files are loaded); not read"
    return "not at data/<c3>/<c4>/<c5>/<TRACK_ID>.h5 for its track id"


@dataclass(frozen=True)
class OutsideLayout:
    """Files under ``data/`` that no partition takes: a folder (``location`` ends with ``/``)
    or a file, relative to the dataset root, how many files it holds (``at_least``: counting
    stopped at ``OUTSIDE_COUNT_LIMIT``) and why it is left."""

    location: str
    files: int
    reason: str
    at_least: bool = False

    def count_text(self) -> str:
        if not self.location.endswith("/"):
            return "file"
        return f"{'at least ' if self.at_least else ''}{self.files:,} file(s)"

    def describe(self) -> str:
        return f"{self.location} ({self.count_text()}): {self.reason}"


@dataclass(frozen=True)
class DatasetSurvey:
    """The top of ``data/`` seen in one pass: the partitions (``"A/B"``, sorted) and what no
    partition takes."""

    partitions: list[str]
    outside: list[OutsideLayout]

    def outside_text(self) -> str:
        """``"8 file(s) under data/"`` (``"at least ..."`` when a count was capped)."""
        return outside_total_text(self.outside)


def outside_total_text(outside: Sequence[OutsideLayout]) -> str:
    total = sum(entry.files for entry in outside)
    capped = "at least " if any(entry.at_least for entry in outside) else ""
    return f"{capped}{total:,} file(s) under data/"


def count_up_to(items: Iterable[object]) -> tuple[int, bool]:
    """``(count, True)`` once ``OUTSIDE_COUNT_LIMIT`` items were seen (the rest are not
    consumed), else ``(count, False)``."""
    limit = OUTSIDE_COUNT_LIMIT  # read at each call: the tests lower it
    count = 0
    for _ in items:
        count += 1
        if count >= limit:
            return count, True
    return count, False


def outside_layout_entry(
    parts: Sequence[str], is_folder: bool, files: int, at_least: bool = False
) -> OutsideLayout:
    """The entry ``data/<parts...>`` (one or two levels below ``data/``) that the layout leaves
    out, with its reason. Pure: the listings decide what to pass."""
    location = "data/" + "/".join(parts) + ("/" if is_folder else "")
    name = parts[-1]
    if not is_folder:
        level = "directly under data/" if len(parts) == 1 else f"directly under data/{parts[0]}/"
        return OutsideLayout(location, 1, f"a file {level}, above any partition; {_LAYOUT}")
    level = "first" if len(parts) == 1 else "second"
    return OutsideLayout(
        location,
        files,
        f"{name!r} is not a {level}-level folder name (one uppercase letter A-Z), so it is no "
        f"partition and its files are not loaded; {_LAYOUT}",
        at_least,
    )


def outside_layout_sorted(outside: Iterable[OutsideLayout]) -> list[OutsideLayout]:
    """The entries that hold files, by location: the same order from every listing."""
    return sorted((entry for entry in outside if entry.files), key=lambda e: e.location)


def listing_fingerprint(entries: Iterable[tuple[str, int, str]]) -> str:
    """A short stable hash of (key, size, version) triples, e.g. for change detection."""
    digest = hashlib.sha256()
    for key, size, version in sorted(entries):
        digest.update(f"{key}\0{size}\0{version}\n".encode())
    return digest.hexdigest()[:32]
