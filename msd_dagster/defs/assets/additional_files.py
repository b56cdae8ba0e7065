"""additional_files: the dataset's side files (AdditionalFiles/), loaded into the shared tables.

Two unpartitioned assets in group ``additional_files``:

* ``additional_files/artists`` and ``additional_files/genres`` (one multi-asset step): finds
  the side files present at the source (``subset_`` prefixed or not, text or SQLite), parses
  them and shapes them like the shared msd_* frames of ``normalized/artists`` and
  ``normalized/genres`` (:func:`msd_dagster.msd.additional_files.additional_frames`), stored
  as Parquet. Metadata: which files were read and rows per file.
* ``warehouse/additional_files``: upserts those frames into msd_artist, msd_r_term,
  msd_r_mbtag, msd_artist_term, msd_artist_mbtag and msd_artist_similarity in one transaction
  (:func:`msd_dagster.warehouse.shared_load.load_shared_tables`). Song-file rows are never
  overridden: rows from these files have ``source_track_id`` NULL and only fill columns that
  are NULL. Where the files and the song files disagree, the song file wins and the
  disagreement is counted in the metadata.

So ``msd_artist`` also holds the artists that have no song file in the loaded set (with their
locations), and the dictionaries hold every published term and tag.
"""

import os
import time
from collections.abc import Iterator, Mapping

import dagster as dg
import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from msd_dagster import event_metadata as em
from msd_dagster.defs.assets import WAREHOUSE_POOL
from msd_dagster.defs.resources import FrameStoreResource, MsdSourceResource, WarehouseResource
from msd_dagster.defs.retries import SOURCE_RETRY_POLICY, WAREHOUSE_RETRY_POLICY
from msd_dagster.defs.tables import (
    NORMALIZED_DESCRIPTIONS,
    NORMALIZED_FRAMES,
    normalized_schema,
    preview,
    warehouse_key,
)
from msd_dagster.msd.additional_files import (
    ADDITIONAL_FILE_NAMES,
    additional_frames,
    candidate_file_names,
    compare_with_songs,
    match_file_names,
)
from msd_dagster.source.layout import ADDITIONAL_DIR
from msd_dagster.source.local import LocalDataset
from msd_dagster.source.s3 import S3Dataset, S3SourceError
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.schema import SHARED_TABLE_NAMES
from msd_dagster.warehouse.shared_load import load_shared_tables

ADDITIONAL_GROUP = "additional_files"
LOAD_KEY = dg.AssetKey(["warehouse", "additional_files"])

__all__ = [
    "ADDITIONAL_GROUP",
    "LOAD_KEY",
    "AdditionalFilesConfig",
    "additional_files_frames",
    "additional_files_warehouse",
    "additional_key",
    "find_additional_files",
    "read_additional_files",
]


# The shared tables' frames, grouped as in the normalized layer (songs have no side file).
ADDITIONAL_FRAMES: dict[str, tuple[str, ...]] = {
    name: NORMALIZED_FRAMES[name] for name in ("artists", "genres")
}
assert {t for tables in ADDITIONAL_FRAMES.values() for t in tables} == set(SHARED_TABLE_NAMES)


# Leads each description (the Catalog shows its first line): a dataset without AdditionalFiles/
# leaves these assets "Never materialized", which is expected.
OPTIONAL_NOTE = (
    "Optional: only for a dataset with AdditionalFiles/ (never materialized without them). "
)


def additional_key(name: str) -> dg.AssetKey:
    """``artists`` -> ``additional_files/artists`` (names as in the normalized group)."""
    return dg.AssetKey([ADDITIONAL_GROUP, name])


# --------------------------------------------------------------------------------------------
# Finding and reading the files (plain functions: the CLI uses them too)


def _listed_names(dataset: LocalDataset | S3Dataset) -> list[str] | None:
    """File names directly under AdditionalFiles/ (one listing), or None if unknown."""
    if isinstance(dataset, LocalDataset):
        folder = dataset.root / ADDITIONAL_DIR
        return sorted(os.listdir(folder)) if folder.is_dir() else []
    if isinstance(dataset, S3Dataset):
        prefix = f"{dataset.prefix}{ADDITIONAL_DIR}/"
        names: list[str] = []
        try:
            pages = dataset.client.get_paginator("list_objects_v2").paginate(
                Bucket=dataset.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                names.extend(o["Key"][len(prefix) :] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            code = (
                exc.response.get("Error", {}).get("Code", "")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            raise S3SourceError(
                f"S3 ListObjectsV2 of {ADDITIONAL_DIR}/ failed for bucket {dataset.bucket!r}, "
                f"prefix {dataset.prefix!r}: {code}"
            ) from exc
        return sorted(names)
    return None


def find_additional_files(dataset: LocalDataset | S3Dataset) -> dict[str, str]:
    """Logical name (``unique_artists`` ...) -> file name under AdditionalFiles/ for the side
    files present; the ``subset_`` name is preferred when both exist. One listing."""
    names = _listed_names(dataset)
    if names is not None:
        return match_file_names(names)
    found: dict[str, str] = {}  # an unknown dataset type: probe each candidate name
    for logical in ADDITIONAL_FILE_NAMES:
        for candidate in candidate_file_names(logical):
            if dataset.additional_file(candidate) is not None:
                found[logical] = candidate
                break
    return found


def read_additional_files(
    dataset: LocalDataset | S3Dataset, exclude: tuple[str, ...] | list[str] = ()
) -> tuple[dict[str, bytes], dict[str, str]]:
    """``(contents, file names)`` by logical name, for the side files present (not excluded)."""
    contents: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for logical, name in find_additional_files(dataset).items():
        if logical in exclude:
            continue
        data = dataset.additional_file(name)
        if data is not None:  # None: removed since the listing
            contents[logical] = data
            names[logical] = name
    return contents, names


def rows_per_file(counts: Mapping[str, int], names: Mapping[str, str]) -> dict[str, int]:
    """``{"subset_unique_artists.txt": 3888, "subset_artist_term.db/artist_term": ...}``."""
    out: dict[str, int] = {}
    for key, rows in counts.items():
        logical, _, table = key.partition(".")
        name = names.get(logical, logical)
        out[f"{name}/{table}" if table else name] = int(rows)
    return out


# --------------------------------------------------------------------------------------------
# Assets


class AdditionalFilesConfig(dg.Config):
    exclude: list[str] = []
    """Logical names not to read, e.g. ``["track_metadata"]``: on the full set that database is
    ~700 MB and only adds familiarity/hotttnesss for artists without song files."""


@dg.multi_asset(
    name="additional_files_frames",
    specs=[
        dg.AssetSpec(
            additional_key(name),
            group_name=ADDITIONAL_GROUP,
            description=f"{OPTIONAL_NOTE}From AdditionalFiles: {NORMALIZED_DESCRIPTIONS[name]}",
            kinds={"pandas", "parquet"},
            metadata={"dagster/column_schema": normalized_schema(name)},
            code_version="1",
        )
        for name in ADDITIONAL_FRAMES
    ],
    retry_policy=SOURCE_RETRY_POLICY,
    op_tags={"msd/stage": "normalize"},
)
def additional_files_frames(
    context: dg.AssetExecutionContext,
    config: AdditionalFilesConfig,
    msd_source: MsdSourceResource,
    frame_store: FrameStoreResource,
) -> Iterator[dg.MaterializeResult]:
    """Read the AdditionalFiles present at the source and shape them like the shared frames.

    Missing files are fine (each is optional); a file that does not parse fails the step with
    the file name and line.
    """
    unknown = sorted(set(config.exclude) - set(ADDITIONAL_FILE_NAMES))
    if unknown:
        raise dg.Failure(
            f"unknown AdditionalFiles names in exclude: {unknown}; "
            f"expected some of {list(ADDITIONAL_FILE_NAMES)}",
            allow_retries=False,
        )
    started = time.perf_counter()
    dataset = msd_source.dataset()
    contents, names = read_additional_files(dataset, config.exclude)
    frames = additional_frames(contents, names)
    seconds = time.perf_counter() - started
    files = [f"{ADDITIONAL_DIR}/{names[logical]}" for logical in frames.present]
    per_file = rows_per_file(frames.counts, names)
    absent = [n for n in ADDITIONAL_FILE_NAMES if n not in names and n not in config.exclude]
    context.log.info(
        f"read {len(files)} AdditionalFiles at {dataset.describe()} in {seconds:.1f} s: "
        + (", ".join(f"{name} ({rows:,} rows)" for name, rows in per_file.items()) or "none")
    )
    common = {
        "files": dg.MetadataValue.json(files),
        "rows_per_file": dg.MetadataValue.json(per_file),
        "missing": dg.MetadataValue.json(absent),
        "excluded": dg.MetadataValue.json(list(config.exclude)),
        "source": dataset.describe(),
        em.PARSE_SECONDS: round(seconds, 3),
    }
    store = frame_store.store()
    for name, tables in ADDITIONAL_FRAMES.items():
        stored = {table: frames.frames[table] for table in tables}
        path = store.write(additional_key(name).path, None, stored)
        yield dg.MaterializeResult(
            asset_key=additional_key(name),
            metadata={
                "rows": dg.MetadataValue.json({t: len(f) for t, f in stored.items()}),
                "preview": preview(stored[tables[0]]),
                "path": dg.MetadataValue.path(str(path)),
                **common,
            },
        )


@dg.asset(
    key=LOAD_KEY,
    group_name=ADDITIONAL_GROUP,
    # Reads the song-file artists to count disagreements, and fills the shared tables after
    # the partition loads (a later partition load can replace a filled artist row; rerun this
    # asset after loading partitions).
    deps=[*(additional_key(name) for name in ADDITIONAL_FRAMES), warehouse_key("msd_artist")],
    kinds={"sql"},
    retry_policy=WAREHOUSE_RETRY_POLICY,
    pool=WAREHOUSE_POOL,
    op_tags={"msd/stage": "load"},
    code_version="1",
    description=(
        f"{OPTIONAL_NOTE}The AdditionalFiles rows upserted into msd_artist, msd_r_term, "
        "msd_r_mbtag, msd_artist_term, msd_artist_mbtag and msd_artist_similarity in one "
        "transaction. "
        "Song-file rows win: these rows only insert missing keys and fill NULL columns; "
        "disagreements with the song files are counted in the metadata."
    ),
)
def additional_files_warehouse(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    frame_store: FrameStoreResource,
) -> dg.MaterializeResult:
    store = frame_store.store()
    by_table: dict[str, pd.DataFrame] = {}
    for name in ADDITIONAL_FRAMES:
        by_table.update(store.read(additional_key(name).path, None))
    started = time.perf_counter()
    with warehouse.errors_without_secrets():
        engine = warehouse.engine()
        ensure_schema(engine)
        # The song-file artists are read in the load's transaction, before any row is filled.
        result = load_shared_tables(engine, by_table, compare=compare_with_songs)
    seconds = time.perf_counter() - started
    comparison = result.comparison
    disagreements = {k: v for k, v in comparison.items() if k.endswith("_disagreements")}
    total = sum(result.written.values())
    context.log.info(
        f"AdditionalFiles: {sum(result.inserted.values()):,} rows inserted, "
        f"{sum(result.filled.values()):,} filled into {warehouse.display_url()} in "
        f"{seconds:.1f} s; {sum(disagreements.values())} disagreements with song files "
        "(song files win)"
    )
    return dg.MaterializeResult(
        metadata={
            em.ROWS_WRITTEN: total,
            "rows_inserted": dg.MetadataValue.json(result.inserted),
            "rows_filled": dg.MetadataValue.json(result.filled),
            "comparison_with_song_files": dg.MetadataValue.json(comparison),
            "disagreements": sum(disagreements.values()),
            **{k: int(v) for k, v in comparison.items()},
            em.DATABASE: warehouse.display_url(),
            "dagster/storage_kind": warehouse.catalog_kind(),
            em.LOAD_SECONDS: round(seconds, 3),
        }
    )
