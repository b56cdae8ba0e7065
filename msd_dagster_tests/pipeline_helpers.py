"""Helpers and fixtures for tests that run the real Dagster asset graph end to end.

Register with ``pytest_plugins = ["msd_dagster_tests.pipeline_helpers"]`` (the root conftest does).

* ``pipeline_dataset`` (session): a small generated dataset (60 songs over ``A/A`` and ``A/B``,
  with AdditionalFiles), written once per session; never modify it (copy it first).
* :class:`PipelineTarget`: a source folder, a database URL, a Parquet folder and a Dagster
  instance; :meth:`PipelineTarget.materialize` runs one partition (or a range of them) of
  ``msd_partition_job``'s assets against them, which evaluates the partition checks;
  :meth:`PipelineTarget.execute_checks` runs only the standalone checks of a partition.
* :func:`dump_tables`: every ``msd_*`` table as plain Python rows sorted by natural key,
  identity ids dropped, to compare contents across runs and backends.
* :func:`expected_row_counts`: the rows each table must hold for some generated tracks,
  computed from the song files with h5py (not with the project's reader).
* ``fast_tmp_path`` (function): like ``tmp_path``, but in memory (``/dev/shm``) when the
  machine has it: SQLite commits (the warehouse, and a persistent Dagster instance's event
  log, one commit per event) cost ~10 ms each on disk and dominated these tests' time.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import h5py
import pytest
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from msd_dagster.generate import GeneratedDataset, generate_dataset
from msd_dagster.warehouse.ddl import warehouse_table
from msd_dagster.warehouse.schema import MSD_TABLES, NATURAL_KEYS
from msd_dagster.warehouse.urls import create_engine_for_url

PIPELINE_SONGS = 60
PIPELINE_FOLDERS = ("A/A", "A/B")
PIPELINE_SEED = 3
# Tags an earlier loader dropped; the generator plants them when the dataset is big enough.
UNICODE_MBTAGS = ("ਪੰਜਾਬੀ", "ਭੰਗੜਾ", "香港歌手")

RAW_KEY = dg.AssetKey(["raw", "song_files"])
SONGS_KEY = dg.AssetKey(["normalized", "songs"])
PARTITIONS_DEF_NAME = "msd_folders"
ROWS_CHECK = "partition_rows_loaded"

# This module is a pytest plugin of the whole suite: the code location is imported only when a
# pipeline test runs, so a broken definitions module fails those tests, not every collection.


def _defs() -> dg.Definitions:
    from msd_dagster.definitions import defs

    return defs


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def url_string(url: str | sa.URL) -> str:
    """A URL as text for a resource, password included (tests' own throwaway databases)."""
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def pipeline_resources(
    source: str | Path, database_url: str | sa.URL, parquet_dir: str | Path
) -> dict[str, object]:
    """The definitions' resources, pointed at a test source, database and Parquet folder."""
    from msd_dagster.defs.resources import (
        FrameStoreResource,
        MsdSourceResource,
        WarehouseResource,
    )

    return {
        "msd_source": MsdSourceResource(location=str(source), s3=S3Resource()),
        "warehouse": WarehouseResource(url=url_string(database_url)),
        "frame_store": FrameStoreResource(base_dir=str(parquet_dir)),
    }


def partition_selection() -> dg.AssetSelection:
    """What ``msd_partition_job`` runs: the partitioned assets (not the standalone checks, the
    unpartitioned totals check nor the AdditionalFiles assets)."""
    from msd_dagster.defs.jobs import msd_partition_job

    return msd_partition_job.selection


def partition_definitions() -> list[dg.AssetsDefinition]:
    """The definitions' checks, and the assets a partition run materializes. (Unpartitioned
    assets, such as the AdditionalFiles ones, cannot share a run with a partition key.)"""
    defs = _defs()
    assets = partition_selection().resolve(defs.resolve_asset_graph())
    return [
        *(d for d in defs.assets if isinstance(d, dg.AssetsDefinition) and set(d.keys) & assets),
        *(d for d in defs.assets if isinstance(d, dg.AssetSpec)),  # what the totals check checks
        *defs.asset_checks,
    ]


def range_tags(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def new_instance(partitions: Iterable[str]) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTITIONS_DEF_NAME, sorted(set(partitions)))
    return instance


@dataclass
class PipelineTarget:
    """Where a pipeline test reads, writes and records."""

    source: Path
    database_url: str | sa.URL
    parquet_dir: Path
    instance: dg.DagsterInstance

    @classmethod
    def create(
        cls,
        source: Path,
        database_url: str | sa.URL,
        parquet_dir: Path,
        partitions: Iterable[str] = PIPELINE_FOLDERS,
    ) -> PipelineTarget:
        return cls(source, database_url, parquet_dir, new_instance(partitions))

    @property
    def resources(self) -> dict[str, object]:
        return pipeline_resources(self.source, self.database_url, self.parquet_dir)

    def materialize(
        self,
        partition: str,
        last: str | None = None,
        *,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        """One partition (or the range ``partition``..``last``) of what the partition job
        runs, in process, recorded in the instance."""
        return dg.materialize(
            partition_definitions(),
            partition_key=None if last else partition,
            tags=range_tags(partition, last) if last else None,
            instance=self.instance,
            resources=self.resources,
            selection=partition_selection(),
            raise_on_error=raise_on_error,
        )

    def execute_checks(
        self, partition: str, check_keys: Sequence[dg.AssetCheckKey], *, raise_on_error=False
    ) -> dg.ExecuteInProcessResult:
        """Only ``check_keys``, for one partition (their inputs come from the Parquet files).

        The partition goes in the ``dagster/partition`` tag: with no asset selected,
        ``dg.materialize(partition_key=...)`` finds no partitions definition to validate the
        key against (Dagster 1.13), while the checks read their partition from the run's tag.
        """
        return dg.materialize(
            partition_definitions(),
            instance=self.instance,
            resources=self.resources,
            selection=dg.AssetSelection.checks(*check_keys),
            tags={"dagster/partition": partition},
            raise_on_error=raise_on_error,
        )

    def engine(self) -> sa.Engine:
        """A new engine on the target database (dispose of it when done)."""
        return create_engine_for_url(self.database_url)


def check_evaluations(
    result: dg.ExecuteInProcessResult, partition: str | None = None
) -> dict[tuple[str, str], Any]:
    """``{("warehouse/msd_bar", "partition_rows_loaded"): AssetCheckEvaluation, ...}`` of one
    partition (any, if the run evaluated one partition only)."""
    evaluations = {}
    for evaluation in result.get_asset_check_evaluations():
        if partition is not None and evaluation.partition != partition:
            continue
        key = (evaluation.asset_key.to_user_string(), evaluation.check_name)
        assert key not in evaluations, f"check {key} evaluated twice for {partition or 'a'} run"
        evaluations[key] = evaluation
    return evaluations


def warehouse_check_keys() -> list[dg.AssetCheckKey]:
    """The per-partition checks of the warehouse tables, one per table."""
    from msd_dagster.defs.assets.folders import load_folders

    return sorted(load_folders.check_keys, key=lambda k: (k.asset_key.path, k.name))


def partition_check_keys() -> set[tuple[str, str]]:
    """Every check a partition run evaluates per folder."""
    return {(key.asset_key.to_user_string(), key.name) for key in warehouse_check_keys()}


def failed_checks(
    result: dg.ExecuteInProcessResult, partition: str | None = None
) -> list[tuple[str, str]]:
    return sorted(key for key, e in check_evaluations(result, partition).items() if not e.passed)


def assert_partition_run_ok(result: dg.ExecuteInProcessResult, *partitions: str) -> None:
    """The run succeeded and evaluated, for each of its folders, every check, all passed."""
    assert result.success
    for partition in partitions or {e.partition for e in result.get_asset_check_evaluations()}:
        evaluations = check_evaluations(result, partition)
        assert set(evaluations) == partition_check_keys(), partition
        assert {e.partition for e in evaluations.values()} == {partition}
        assert failed_checks(result, partition) == [], partition


def materialization_metadata(
    result: dg.ExecuteInProcessResult, key: dg.AssetKey, partition: str | None = None
) -> dict[str, Any]:
    """The metadata values (unwrapped) of the run's materialization of ``key`` (for
    ``partition``, when the run had several)."""
    found = [
        event.step_materialization_data.materialization
        for event in result.all_events
        if event.is_step_materialization
        and event.step_materialization_data.materialization.asset_key == key
        and (
            partition is None
            or event.step_materialization_data.materialization.partition == partition
        )
    ]
    assert len(found) == 1, f"{key.to_user_string()} materialized {len(found)} times"
    return {name: value.value for name, value in found[0].metadata.items()}


# --------------------------------------------------------------------------------------------
# Table contents


def dump_tables(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every ``msd_*`` table, identity ids dropped, rows sorted by natural key in Python (so
    no collation can reorder them), values as the driver returns them."""
    dump: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        for table in MSD_TABLES:
            target = warehouse_table(conn, table.name)
            columns = [c for c in target.columns if c.identity is None]
            names = [c.name for c in columns]
            positions = [names.index(k) for k in NATURAL_KEYS[table.name]]
            rows = [tuple(row) for row in conn.execute(sa.select(*columns))]
            dump[table.name] = sorted(rows, key=lambda row: tuple(row[p] for p in positions))
    return dump


def table_rows(engine: sa.Engine, table_name: str) -> list[dict[str, Any]]:
    """Every row of one table as dicts (identity ids included), unordered."""
    with engine.connect() as conn:
        target = warehouse_table(conn, table_name)
        return [dict(row._mapping) for row in conn.execute(sa.select(target))]


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(
                sa.select(sa.func.count()).select_from(warehouse_table(conn, table.name))
            ).scalar_one()
            for table in MSD_TABLES
        }


def _texts(values: Any) -> list[str]:
    return [bytes(v).decode("utf-8") for v in values]


def expected_row_counts(
    dataset: GeneratedDataset, track_ids: Iterable[str] | None = None
) -> dict[str, int]:
    """Rows every ``msd_*`` table must hold after loading ``track_ids`` (default: all) into an
    empty database: analysis rows from the generator's own counts, artist-level rows from the
    song files read with h5py (stub artists = similar artists without a song here)."""
    tracks = sorted(dataset.track_ids if track_ids is None else track_ids)
    artists: dict[str, tuple[set[str], set[str], list[str]]] = {}
    for track_id in tracks:
        with h5py.File(dataset.track_path(track_id), "r") as f:
            artist = f["metadata/songs"][0]["artist_id"].decode()
            artists.setdefault(
                artist,
                (
                    set(_texts(f["metadata/artist_terms"][:])),
                    set(_texts(f["musicbrainz/artist_mbtags"][:])),
                    list(dict.fromkeys(_texts(f["metadata/similar_artists"][:]))),
                ),
            )
    similar = {a for _, _, sim in artists.values() for a in sim}
    counts = {
        "msd_track": len(tracks),
        "msd_artist": len(set(artists) | similar),
        "msd_artist_term": sum(len(terms) for terms, _, _ in artists.values()),
        "msd_artist_mbtag": sum(len(tags) for _, tags, _ in artists.values()),
        "msd_artist_similarity": sum(len(sim) for _, _, sim in artists.values()),
        "msd_r_term": len(set().union(*(terms for terms, _, _ in artists.values()))),
        "msd_r_mbtag": len(set().union(*(tags for _, tags, _ in artists.values()))),
    }
    for table, kind in {
        "msd_bar": "bars",
        "msd_beat": "beats",
        "msd_section": "sections",
        "msd_tatum": "tatums",
        "msd_segment": "segments",
    }.items():
        counts[table] = sum(dataset.track_rows[t][kind] for t in tracks)
    return counts


def partition_tracks(dataset: GeneratedDataset, partition: str) -> list[str]:
    prefix = f"TR{partition[0]}{partition[2]}"
    return [t for t in dataset.track_ids if t.startswith(prefix)]


# --------------------------------------------------------------------------------------------
# Fixtures


MEMORY_FS = Path("/dev/shm")


@pytest.fixture(scope="session")
def fast_tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session folder on tmpfs when there is one (removed afterwards), else on disk."""
    if not (MEMORY_FS.is_dir() and os.access(MEMORY_FS, os.W_OK)):
        yield tmp_path_factory.mktemp("fast")
        return
    root = Path(tempfile.mkdtemp(prefix="msd-pipeline-tests-", dir=MEMORY_FS))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fast_folder(root: Path, name: str) -> Path:
    """A new, empty folder under ``root`` named after ``name`` (made unique)."""
    return Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w-]+", "_", name)[:60] + "-", dir=root))


@pytest.fixture
def fast_tmp_path(fast_tmp_root: Path, request: pytest.FixtureRequest) -> Path:
    return fast_folder(fast_tmp_root, request.node.name)


@pytest.fixture(scope="session")
def pipeline_dataset(fast_tmp_root: Path) -> GeneratedDataset:
    """60 generated songs over A/A and A/B with AdditionalFiles; read-only for tests."""
    root = fast_folder(fast_tmp_root, "pipeline") / "dataset"
    dataset = generate_dataset(
        root,
        PIPELINE_SONGS,
        seed=PIPELINE_SEED,
        folders=list(PIPELINE_FOLDERS),
        additional_files=True,
    )
    # The tests rely on these; fail loudly if a generator change drops them.
    for partition in PIPELINE_FOLDERS:
        assert partition_tracks(dataset, partition), f"no generated track in {partition}"
    missing = [tag for tag in UNICODE_MBTAGS if tag not in dataset.unique_mbtags]
    assert not missing, f"the generated dataset lacks the mbtags {missing}"
    return dataset
