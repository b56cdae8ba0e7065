"""Compare what a partition load wrote with the frames it was given: the checks' logic.

Everything is counted in the database and only aggregates come back (a few rows per track at
most, never a partition's keys), so verifying costs little next to the load and can run inside
the load's own transaction, before it commits. Per table, for one partition:

* ``database_rows``: rows of the partition in the database (see :mod:`.queries` for what a
  partition's rows are in shared tables);
* ``missing_keys``: natural keys of the frame that the database lacks (must be 0). For the
  analysis tables it comes from per-track position ranges (``_analysis_aggregates``), exact as
  long as positions are gap-free, which the loader guarantees (1..n per track);
* ``duplicates``: natural keys held more than once; ``orphans``: unresolved references;
* ``source_rows``: for the track tables, the rows the song files imply (counted from the
  parsed arrays, not from the frames), when known.

Track tables must hold exactly the frame's rows; shared tables (artists, their terms, tags and
similar artists, the dictionaries) must hold at least every frame row, since other partitions
add to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.dialects import backend_for
from msd_dagster.warehouse.queries import (
    count_duplicate_natural_keys,
    count_orphan_foreign_keys,
    count_rows,
    partition_filter,
    partition_track_ids,
)
from msd_dagster.warehouse.schema import MSD_TABLES, NATURAL_KEYS, TRACK_TABLE_NAMES

ANALYSIS_TABLE_NAMES = frozenset(TRACK_TABLE_NAMES) - {"msd_track"}

__all__ = [
    "FrameKeys",
    "TableVerdict",
    "table_row_counts",
    "table_totals",
    "verify_partition",
]


@dataclass(frozen=True)
class TableVerdict:
    table: str
    frame_rows: int
    database_rows: int
    missing_keys: int
    duplicates: int
    orphans: int
    source_rows: int | None = None

    @property
    def is_track_table(self) -> bool:
        return self.table in TRACK_TABLE_NAMES

    @property
    def rows_ok(self) -> bool:
        if self.missing_keys:
            return False
        if not self.is_track_table:
            return True
        expected = {self.frame_rows} | (
            {self.source_rows} if self.source_rows is not None else set()
        )
        return expected == {self.database_rows}

    @property
    def passed(self) -> bool:
        return self.rows_ok and self.duplicates == 0 and self.orphans == 0

    def summary(self) -> str:
        """The numbers in one line, e.g. ``database 5 = frame 5 = files 5, missing 0, ...``."""
        if self.is_track_table:
            counts = [f"database {self.database_rows:,}", f"frame {self.frame_rows:,}"]
            if self.source_rows is not None:
                counts.append(f"files {self.source_rows:,}")
            same = len({self.database_rows, self.frame_rows, self.source_rows or 0} - {0}) <= 1
            rows = (" = " if same and self.rows_ok else " vs ").join(counts)
        else:
            found = self.frame_rows - self.missing_keys
            rows = f"{found:,} of the frame's {self.frame_rows:,} rows in the database"
        return (
            f"{rows}; missing {self.missing_keys:,}, duplicates {self.duplicates:,}, "
            f"unresolved references {self.orphans:,}"
        )


def _key_tuples(frame: pd.DataFrame, keys: Sequence[str]) -> set[tuple]:
    return set(zip(*(frame[k].tolist() for k in keys), strict=True))


def keys_per_query(conn: sa.Connection) -> int:
    """Keys per IN list: what one statement of the backend may carry."""
    return backend_for(conn).max_bind_parameters


def _missing_single_keys(
    conn: sa.Connection, table: sa.Table, column: str, values: Sequence
) -> int:
    """Values of a one-column natural key that the table lacks, counted in IN-list batches."""
    distinct = sorted(set(values))
    found = 0
    size = keys_per_query(conn)
    for start in range(0, len(distinct), size):
        batch = distinct[start : start + size]
        statement = sa.select(sa.func.count()).select_from(table).where(table.c[column].in_(batch))
        found += int(conn.execute(statement).scalar_one())
    return len(distinct) - found


def _missing_shared_keys(
    conn: sa.Connection, table_name: str, partition_key: str, frame: pd.DataFrame
) -> int:
    table = warehouse_table(conn, table_name)
    keys = list(NATURAL_KEYS[table_name])
    if len(keys) == 1:
        return _missing_single_keys(conn, table, keys[0], frame[keys[0]].dropna().tolist())
    # Pairs of the partition's artists: bounded by the partition.
    statement = sa.select(*[table.c[k] for k in keys]).where(
        partition_filter(conn, table, partition_key)
    )
    return len(_key_tuples(frame, keys) - {tuple(row) for row in conn.execute(statement)})


def _spans(frame: pd.DataFrame, track_column: str, position_column: str) -> pd.DataFrame:
    """Per track of an analysis frame: its rows and its first and last position."""
    grouped = frame[position_column].groupby(frame[track_column].to_numpy())
    return pd.DataFrame({"rows": grouped.size(), "first": grouped.min(), "last": grouped.max()})


@dataclass
class FrameKeys:
    """What the checks need of a partition's frames, without their rows.

    Rows per table; ``msd_track``'s track ids; per analysis table, each track's rows and
    first / last position (its keys are that range: the loader writes 1..n per track), plus the
    keys of the tracks whose positions are not one gap-free range; the shared frames, which are
    small (one row per artist, term, tag or similar artist). Built from whole frames
    (:meth:`of_frames`) or chunk by chunk (:meth:`add_track_chunk`, then :meth:`set_shared`), so
    a partition streamed in chunks is verified with exactly the numbers of one frame.
    """

    rows: dict[str, int] = field(default_factory=dict)
    track_ids: list[str] = field(default_factory=list)
    spans: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    gapped: dict[str, set[tuple]] = field(default_factory=dict)
    shared: dict[str, pd.DataFrame] = field(default_factory=dict)

    @classmethod
    def of_frames(cls, frames: Mapping[str, pd.DataFrame]) -> FrameKeys:
        keys = cls()
        keys.add_track_chunk({n: f for n, f in frames.items() if n in TRACK_TABLE_NAMES})
        keys.set_shared({n: f for n, f in frames.items() if n not in TRACK_TABLE_NAMES})
        return keys

    def add_track_chunk(self, frames: Mapping[str, pd.DataFrame]) -> None:
        """Add one chunk's track-table frames (``msd_track`` and / or analysis tables)."""
        for name, frame in frames.items():
            self.rows[name] = self.rows.get(name, 0) + len(frame)
            if name == "msd_track":
                self.track_ids.extend(frame["track_id"].tolist())
                continue
            track_column, position_column = NATURAL_KEYS[name]
            spans = _spans(frame, track_column, position_column)
            self.spans.setdefault(name, []).append(spans)
            uneven = spans.index[spans["rows"] != spans["last"] - spans["first"] + 1]
            if len(uneven):
                rows = frame[frame[track_column].isin(uneven)]
                self.gapped.setdefault(name, set()).update(
                    _key_tuples(rows, [track_column, position_column])
                )

    def set_shared(self, frames: Mapping[str, pd.DataFrame]) -> None:
        """The shared tables' frames, whole (as loaded: validated and deduplicated)."""
        for name, frame in frames.items():
            self.shared[name] = frame
            self.rows[name] = len(frame)

    def track_spans(self, name: str) -> pd.DataFrame:
        """Per track: rows, first and last position (a track's rows are in one chunk)."""
        parts = self.spans.get(name) or [pd.DataFrame(columns=["rows", "first", "last"])]
        spans = pd.concat(parts) if len(parts) > 1 else parts[0]
        if not spans.index.is_unique:
            repeated = sorted(set(spans.index[spans.index.duplicated()]))[:3]
            raise ValueError(f"frame {name}: track(s) {repeated} in more than one chunk")
        if name in self.spans:
            self.spans[name] = [spans]  # concatenated once: keys_of asks per batch of tracks
        return spans

    def keys_of(self, name: str, tracks: Sequence[str]) -> set[tuple]:
        """The frame's natural keys of ``tracks`` (from their ranges, or as listed)."""
        spans = self.track_spans(name)
        wanted = set(tracks)
        keys = {k for k in self.gapped.get(name, set()) if k[0] in wanted}
        for track, rows, first, last in spans[spans.index.isin(wanted)].itertuples(name=None):
            if rows == last - first + 1:
                keys.update((track, p) for p in range(int(first), int(last) + 1))
        return keys


def _analysis_aggregates(
    conn: sa.Connection,
    table_name: str,
    partition_key: str,
    frame_keys: FrameKeys,
    tracks: set[str],
) -> tuple[int, int, int, int]:
    """``(database_rows, missing_keys, duplicates, orphans)`` of an analysis table from one
    GROUP BY track_id: per track its rows and the range of its positions. ``tracks``: the
    partition's track ids in ``msd_track``.

    Where a track's rows in the frame and in the database both fill their position range
    exactly (n rows from p to p + n - 1: the loader writes 1..n), the missing keys are the
    frame's range minus the overlap. Other tracks have their keys fetched and compared one by
    one, duplicates counted among them. (A duplicate that a gap hides in the count would need
    the table's unique key on (track_id, position) gone, which the schema check refuses.)
    """
    table = warehouse_table(conn, table_name)
    _, position_column = NATURAL_KEYS[table_name]
    position = table.c[position_column]
    statement = (
        sa.select(table.c.track_id, sa.func.count(), sa.func.min(position), sa.func.max(position))
        .where(partition_filter(conn, table, partition_key))
        .group_by(table.c.track_id)
    )
    db = {row[0]: tuple(row[1:]) for row in conn.execute(statement)}
    database_rows = sum(n for n, _, _ in db.values())
    orphans = sum(n for track, (n, *_) in db.items() if track not in tracks)
    even = {track for track, (n, first, last) in db.items() if n == last - first + 1}
    duplicates = 0
    expected = frame_keys.track_spans(table_name)
    missing = 0
    uneven: list[str] = []
    for track, rows, first, last in expected.itertuples(name=None):
        found = db.get(track)
        if found is None:
            missing += int(rows)
        elif rows == last - first + 1 and track in even:
            _, db_first, db_last = found
            missing += int(rows) - max(0, min(last, db_last) - max(first, db_first) + 1)
        else:
            uneven.append(track)
    uneven += sorted(set(db) - even - set(uneven))  # their duplicates are counted below
    size = keys_per_query(conn)
    for start in range(0, len(uneven), size):  # positions with gaps: key by key
        batch = uneven[start : start + size]
        fetched = [
            tuple(row)
            for row in conn.execute(
                sa.select(table.c.track_id, position).where(table.c.track_id.in_(batch))
            )
        ]
        stored = set(fetched)
        duplicates += len(fetched) - len(stored)
        missing += len(frame_keys.keys_of(table_name, batch) - stored)
    return database_rows, missing, duplicates, orphans


def verify_partition(
    conn: sa.Connection,
    partition_key: str,
    frames: Mapping[str, pd.DataFrame] | FrameKeys,
    source_rows: Mapping[str, int] | None = None,
    shared_missing: Mapping[str, int] | None = None,
) -> list[TableVerdict]:
    """One verdict per msd_* table for the partition, on ``conn`` (in its transaction, if any).

    ``frames``: the partition's frames, or what the checks need of them (:class:`FrameKeys`,
    which a load streamed in chunks builds as it goes).

    ``source_rows``: rows the song files imply per track table (see
    :func:`msd_dagster.msd.partition.source_row_counts`), compared when given.
    ``shared_missing``: the shared tables' missing keys, as counted by the load against its
    staging tables (:class:`~msd_dagster.warehouse.partition_load.WrittenPartition`); when
    not given, they are counted here.
    """
    keys = frames if isinstance(frames, FrameKeys) else FrameKeys.of_frames(frames)
    verdicts = []
    tracks = set(partition_track_ids(conn, partition_key))
    for table in MSD_TABLES:
        name = table.name
        if name in ANALYSIS_TABLE_NAMES:
            database_rows, missing, duplicates, orphans = _analysis_aggregates(
                conn, name, partition_key, keys, tracks
            )
        else:
            database_rows = count_rows(conn, name, partition_key)
            if name == "msd_track":
                missing = _missing_single_keys(
                    conn, warehouse_table(conn, name), "track_id", keys.track_ids
                )
            elif shared_missing is not None and name in shared_missing:
                missing = shared_missing[name]
            else:
                frame = keys.shared[name]
                missing = (
                    _missing_shared_keys(conn, name, partition_key, frame) if len(frame) else 0
                )
            duplicates = count_duplicate_natural_keys(conn, name, partition_key)
            orphans = count_orphan_foreign_keys(conn, name, partition_key)
        verdicts.append(
            TableVerdict(
                table=name,
                frame_rows=keys.rows.get(name, 0),
                database_rows=database_rows,
                missing_keys=missing,
                duplicates=duplicates,
                orphans=orphans,
                source_rows=(source_rows or {}).get(name) if name in TRACK_TABLE_NAMES else None,
            )
        )
    return verdicts


def table_totals(bind: sa.Engine | sa.Connection) -> dict[str, int]:
    """Rows per msd_* table in the whole database, counted exactly."""
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return table_totals(conn)
    return {table.name: count_rows(bind, table.name) for table in MSD_TABLES}


def table_row_counts(engine: sa.Engine) -> tuple[dict[str, int], str]:
    """Rows per msd_* table the cheap way the backend offers (a statistic or the catalog),
    and how they were counted (e.g. "estimate: pg_stat_user_tables.n_live_tup")."""
    backend = backend_for(engine)
    with engine.connect() as conn:
        tables = [warehouse_table(conn, t.name) for t in MSD_TABLES]
        counts = backend.table_row_counts(conn, tables)
    return {t.name: counts.get(t.name, 0) for t in MSD_TABLES}, backend.row_count_method
