"""The earlier pipeline's way, for comparison: one INSERT per row, list-of-dict, per folder.

A small sample of song files is parsed and normalized with the project's own code (so only the
write path differs), then every row is sent with ``conn.execute(table.insert(), row)`` in one
transaction, shared tables first, as the earlier single-script loader did.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from msd_dagster.msd.frames import normalize_songs, read_songs
from msd_dagster.warehouse.ddl import ensure_schema, warehouse_table
from msd_dagster.warehouse.partition_load import prepare_frames
from msd_dagster.warehouse.schema import SHARED_TABLES, TRACK_TABLES


def _native(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def row_by_row(engine: sa.Engine, files: list[Path], partition_key: str) -> dict[str, Any]:
    """Parse + normalize + insert ``files`` (all in ``partition_key``) row by row."""
    ensure_schema(engine)
    started = time.perf_counter()
    songs, rejected = read_songs((f"data/{f.relative_to(f.parents[3])}", f) for f in files)
    frames = prepare_frames(normalize_songs(songs, rejected).frames, partition_key)
    parsed = time.perf_counter()
    rows = 0
    per_table: dict[str, dict[str, float]] = {}
    with engine.begin() as conn:
        for table in (*SHARED_TABLES, *TRACK_TABLES):
            target = warehouse_table(conn, table)
            frame = frames[table.name]
            records = frame.to_dict("records")
            table_started = time.perf_counter()
            for record in records:
                conn.execute(target.insert(), {k: _native(v) for k, v in record.items()})
            per_table[table.name] = {
                "rows": len(records),
                "seconds": time.perf_counter() - table_started,
            }
            rows += len(records)
    finished = time.perf_counter()
    insert_seconds = finished - parsed
    return {
        "songs": len(songs),
        "rows": rows,
        "parse_normalize_seconds": parsed - started,
        "insert_seconds": insert_seconds,
        "seconds": finished - started,
        "rows_per_second": rows / (finished - started),
        "insert_rows_per_second": rows / insert_seconds,
        "tables": per_table,
    }
