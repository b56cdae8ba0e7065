"""``msd-dagster``: generate a sample, load a dataset through Dagster, stage a dataset to S3."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from msd_dagster import settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msd-dagster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="write a generated MSD-format dataset root")
    sample.add_argument("--songs", type=int, required=True)
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--additional-files", action="store_true")
    sample.add_argument("--folders", nargs="*", help="second-level folders, e.g. A/A A/B")
    sample.add_argument("--workers", type=int, default=os.cpu_count() or 1)

    load = commands.add_parser(
        "load", help="discover partitions and materialize every asset and check through Dagster"
    )
    load.add_argument("--source", help="dataset root: a folder or s3://bucket/prefix")
    load.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite under MSD_HOME)")
    load.add_argument("--partition", nargs="*", default=None, help="e.g. A/A B/C (default: all)")
    load.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="partitions loaded at once"
    )

    stage = commands.add_parser("stage", help="upload a local dataset root to S3 (resumable)")
    stage.add_argument("--from", dest="source", type=Path, required=True)
    stage.add_argument("--to", dest="target", required=True, help="s3://bucket/prefix")
    stage.add_argument("--workers", type=int, default=8)
    stage.add_argument("--endpoint-url", default=os.environ.get("MSD_S3_ENDPOINT_URL"))

    args = parser.parse_args(argv)
    if args.command == "sample":
        return _sample(args)
    if args.command == "load":
        return _load(args)
    return _stage(args)


def _sample(args: argparse.Namespace) -> int:
    from msd_dagster.generate import generate_dataset

    started = time.perf_counter()
    result = generate_dataset(
        args.out,
        args.songs,
        seed=args.seed,
        folders=args.folders or None,
        additional_files=args.additional_files,
        workers=args.workers,
        progress=_progress_printer("generated"),
    )
    seconds = time.perf_counter() - started
    print(
        f"\nwrote {len(result.track_ids)} songs by {len(result.artist_ids)} artists in "
        f"{len(result.folders)} partitions to {result.root} in {seconds:.1f} s"
    )
    return 0


def _progress_printer(verb: str):
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 1:
            last[0] = now
            print(f"\r{verb} {done}/{total}", end="", file=sys.stderr, flush=True)

    return show


@dataclass
class PartitionOutcome:
    partition: str
    success: bool
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str = ""


def _load(args: argparse.Namespace) -> int:
    if args.source:
        os.environ["MSD_SOURCE"] = args.source
    if args.database_url:
        os.environ["MSD_DATABASE_URL"] = args.database_url
    if "DAGSTER_HOME" not in os.environ:
        home = settings.msd_home() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").touch()
        os.environ["DAGSTER_HOME"] = str(home)

    import dagster as dg

    from msd_dagster.definitions import defs

    with dg.build_resources(
        {"msd_source": defs.resources["msd_source"], "warehouse": defs.resources["warehouse"]}
    ) as resources:
        return _load_partitions(args, resources.msd_source, resources.warehouse)


def _load_partitions(args: argparse.Namespace, source, warehouse) -> int:
    import dagster as dg

    from msd_dagster.defs.partitions import msd_folders

    dataset = source.dataset()
    available = dataset.list_partitions()
    selected = args.partition or available
    unknown = sorted(set(selected) - set(available))
    if unknown:
        print(f"error: no such partition(s) at {dataset.describe()}: {', '.join(unknown)}")
        return 2
    if not selected:
        print(f"error: no song files under {dataset.describe()}/data")
        return 2
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(msd_folders.name))
    new = [key for key in available if key not in known]
    if new:
        instance.add_dynamic_partitions(msd_folders.name, new)
    print(
        f"loading {len(selected)} partition(s) from {dataset.describe()} into "
        f"{warehouse.display_url()} ({args.workers} at a time); runs are recorded in "
        f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
    )
    started = time.perf_counter()
    outcomes: list[PartitionOutcome] = []
    workers = max(1, min(args.workers, len(selected)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_partition, key): key for key in selected}
        for done, future in enumerate(as_completed(futures), 1):
            outcome = future.result()
            outcomes.append(outcome)
            status = "ok" if outcome.success and not outcome.failed_checks else "FAILED"
            print(
                f"[{done}/{len(selected)}] {outcome.partition}: {status}, "
                f"{outcome.rows.get('msd_track', 0)} tracks, {sum(outcome.rows.values()):,} rows, "
                f"{len(outcome.rejected)} rejected, {outcome.seconds:.1f} s",
                flush=True,
            )
    totals = run_totals_check()
    _print_summary(outcomes, warehouse, time.perf_counter() - started)
    if totals.failed_checks:
        print(f"check failed: {', '.join(totals.failed_checks)}")
    failed = [o for o in [*outcomes, totals] if not o.success or o.failed_checks]
    return 1 if failed else 0


def run_partition(partition_key: str) -> PartitionOutcome:
    """Run the partition job for one partition in this process and summarize it."""
    from msd_dagster.definitions import partition_job

    return _run_job(partition_job, partition_key)


def run_totals_check() -> PartitionOutcome:
    """Run the unpartitioned total-tracks check once every partition is loaded."""
    from msd_dagster.definitions import totals_job

    return _run_job(totals_job, None)


def _run_job(job_fn, partition_key: str | None) -> PartitionOutcome:
    import dagster as dg

    started = time.perf_counter()
    tags = {"msd/launched_by": "cli"}
    if partition_key:
        tags["dagster/partition"] = partition_key
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(job_fn),
            instance=instance,
            tags=tags,
            # The full event log goes to the instance (and the UI); the terminal gets progress.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        outcome = PartitionOutcome(partition_key or "all", result.success, 0.0)
        for event in result.all_events:
            if event.is_step_materialization:
                materialization = event.step_materialization_data.materialization
                path = materialization.asset_key.path
                if path[0] == "warehouse":
                    outcome.rows[path[1]] = int(materialization.metadata["dagster/row_count"].value)
            elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                evaluation = event.asset_check_evaluation_data
                if not evaluation.passed:
                    outcome.failed_checks.append(
                        f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                    )
            elif event.is_step_failure:
                outcome.error = event.message or "step failed"
        outcome.rejected = _rejected_files(result)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _rejected_files(result) -> list[tuple[str, str]]:
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key.path == ["normalized", "rejected_files"]:
                listed = materialization.metadata["rejected_list"].value
                return [(item["name"], item["reason"]) for item in listed]
    return []


def _print_summary(outcomes: list[PartitionOutcome], warehouse, seconds: float) -> None:
    from msd_dagster.warehouse.verify import table_totals

    print(f"\nloaded {len(outcomes)} partition(s) in {seconds:.1f} s")
    loaded: dict[str, int] = {}
    for outcome in outcomes:
        for table, rows in outcome.rows.items():
            loaded[table] = loaded.get(table, 0) + rows
    totals = table_totals(warehouse.engine())
    print(f"{'table':<24}{'rows this load':>16}{'rows in database':>18}")
    for table, total in totals.items():
        print(f"{table:<24}{loaded.get(table, 0):>16,}{total:>18,}")
    rejected = [(o.partition, name, reason) for o in outcomes for name, reason in o.rejected]
    if rejected:
        print(f"\nrejected files ({len(rejected)}):")
        for _partition, name, reason in rejected:
            print(f"  {name}: {reason}")
    for outcome in outcomes:
        if not outcome.success:
            print(f"\npartition {outcome.partition} FAILED: {outcome.error}")
        for check in outcome.failed_checks:
            print(f"check failed in {outcome.partition}: {check}")


def _stage(args: argparse.Namespace) -> int:
    from msd_dagster.source.s3 import make_s3_client, parse_s3_url, stage_dataset

    bucket, prefix = parse_s3_url(args.target)
    client = make_s3_client(endpoint_url=args.endpoint_url)

    def progress(done: int, total: int, sent: int) -> None:
        print(f"\rstaged {done}/{total} files, {sent / 1e6:.1f} MB", end="", file=sys.stderr)

    result = stage_dataset(
        args.source, client, bucket, prefix, workers=args.workers, progress=progress
    )
    print(f"\n{result}")
    return 1 if getattr(result, "failed", 0) else 0


if __name__ == "__main__":
    raise SystemExit(main())
