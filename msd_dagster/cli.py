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
    load.add_argument(
        "--skip-additional-files",
        action="store_true",
        help="do not load AdditionalFiles/ (loaded after the partitions when present)",
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


# The instance the CLI creates when DAGSTER_HOME is not set. Capturing each run's stdout and
# stderr costs helper processes per run (~2 s of a 6-8 s partition run on 2 cores); everything
# the assets report goes to the event log, which the UI shows either way.
CLI_DAGSTER_YAML = """\
# Written by msd-dagster load. Runs' stdout/stderr are not captured (see the README).
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def _load(args: argparse.Namespace) -> int:
    if args.source:
        os.environ["MSD_SOURCE"] = args.source
    if args.database_url:
        os.environ["MSD_DATABASE_URL"] = args.database_url
    if "DAGSTER_HOME" not in os.environ:
        home = settings.msd_home() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(CLI_DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(home)

    import dagster as dg

    from msd_dagster.definitions import defs

    with dg.build_resources(
        {"msd_source": defs.resources["msd_source"], "warehouse": defs.resources["warehouse"]}
    ) as resources:
        return _load_partitions(args, resources.msd_source, resources.warehouse)


def database_problem(warehouse) -> str | None:
    """None when the database answers; else what to print, in one line, without any secret.

    Checked before any run starts: an unusable URL would otherwise fail every partition's load
    step only after its retries (minutes), then end in a traceback.
    """
    try:
        with warehouse.engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any driver, network or URL error
        return _without_secrets(
            f"cannot connect to the database {warehouse.display_url()}: {_one_line(exc)}",
            warehouse,
        )
    return None


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc  # the driver's error inside SQLAlchemy's
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return f"{type(orig).__name__}: {lines[0] if lines else 'no details'}"


def _without_secrets(text: str, warehouse) -> str:
    """``text`` with the database password (and any ``user:password@`` part) masked."""
    import contextlib
    import re
    from urllib.parse import quote, quote_plus

    import sqlalchemy as sa

    secrets = [getattr(warehouse, "azure_password", "") or ""]
    with contextlib.suppress(Exception):  # an unparsable URL: the pattern below masks it
        secrets.append(sa.make_url(warehouse.sqlalchemy_url()).password or "")
    for secret in filter(None, secrets):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def _load_partitions(args: argparse.Namespace, source, warehouse) -> int:
    import dagster as dg

    from msd_dagster.defs.partitions import msd_folders

    problem = database_problem(warehouse)
    if problem:
        print(f"error: {problem}")
        return 2
    # The check left a connection in this process's pool; worker processes are forked from
    # here and would inherit it, and two processes talking over one socket corrupt the
    # protocol (PyMySQL: "Packet sequence number wrong"). Close it before any fork.
    warehouse.engine().dispose()
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
    extra = _load_additional_files(dataset) if not args.skip_additional_files else []
    totals = run_totals_check()
    _print_summary(outcomes, warehouse, time.perf_counter() - started)
    if totals.failed_checks:
        print(f"check failed: {', '.join(totals.failed_checks)}")
    failed = [o for o in [*outcomes, *extra, totals] if not o.success or o.failed_checks]
    return 1 if failed else 0


def _load_additional_files(dataset) -> list[PartitionOutcome]:
    """After the partitions (song-file rows win, AdditionalFiles rows only fill), load the
    side files when any are present; one unpartitioned run."""
    from msd_dagster.defs.assets.additional_files import find_additional_files

    found = find_additional_files(dataset)
    if not found:
        return []
    outcome = _run_job(_additional_files_job_fn(), None)
    status = "ok" if outcome.success and not outcome.failed_checks else "FAILED"
    print(
        f"[AdditionalFiles] {len(found)} file(s): {status}, "
        f"{outcome.rows.get('additional_files', 0):,} rows, {outcome.seconds:.1f} s",
        flush=True,
    )
    if not outcome.success:
        print(f"AdditionalFiles FAILED: {outcome.error}")
    return [outcome]


def _additional_files_job_fn():
    from msd_dagster.definitions import additional_files_job

    return additional_files_job


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
    instance = _process_instance()
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
                # Rows this run wrote; frame sizes would count the shared rows (artists,
                # terms ...) once per partition that mentions them.
                metadata = materialization.metadata
                value = metadata.get("rows_written")
                if value is None:
                    value = metadata["dagster/row_count"]
                outcome.rows[path[1]] = int(value.value)
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                outcome.failed_checks.append(
                    f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                )
        elif event.is_step_failure:
            outcome.error = event.message or "step failed"
    outcome.rejected = _rejected_files(result)
    del result
    _release_run_memory()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _release_run_memory() -> None:
    """A worker process runs partition after partition: drop what the finished run still holds
    (frames kept by the IO manager, reference cycles of Dagster's contexts that would wait for
    the cyclic collector), so the next partition starts from the same footprint."""
    import gc

    from msd_dagster.defs.io_managers import release_cached_frames

    release_cached_frames()
    gc.collect()
    _malloc_trim()


def _malloc_trim() -> None:
    """Give the heap pages freed by the run back to the OS (glibc only; a no-op elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


_INSTANCE: tuple[int, object] | None = None


def _process_instance():
    """The Dagster instance of this process, created once: a worker process runs many
    partitions, and opening the instance (storage engines, config) for each run costs time.
    Keyed by pid, so a forked worker never reuses its parent's connections."""
    global _INSTANCE
    import dagster as dg

    if _INSTANCE is None or _INSTANCE[0] != os.getpid():
        _INSTANCE = (os.getpid(), dg.DagsterInstance.get())
    return _INSTANCE[1]


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
    try:
        totals = table_totals(warehouse.engine())
    except Exception as exc:  # noqa: BLE001 - e.g. the database went away during the load
        print(_without_secrets(f"cannot count the rows: {_one_line(exc)}", warehouse))
        totals = {}
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
    """Upload a local dataset root to ``s3://bucket/prefix``; exit 1 unless every file is there.

    Credentials come from the environment / the standard AWS chain only; the endpoint from
    ``--endpoint-url`` or ``MSD_S3_ENDPOINT_URL``, the region from ``AWS_REGION`` (or
    ``AWS_DEFAULT_REGION``). Rerunning skips the objects already uploaded (same size and MD5).
    """
    from msd_dagster.source.s3 import S3SourceError, make_s3_client, parse_s3_url, stage_dataset

    try:
        bucket, prefix = parse_s3_url(args.target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = make_s3_client(
        endpoint_url=args.endpoint_url or None,
        region_name=os.environ.get("AWS_REGION") or None,
    )
    show = _progress_printer("staged")

    def progress(done: int, total: int, sent: int) -> None:
        show(done, total)

    print(f"staging {args.source} to s3://{bucket}/{prefix} ({args.workers} uploads at a time)")
    try:
        result = stage_dataset(
            args.source, client, bucket, prefix, workers=args.workers, progress=progress
        )
    except (S3SourceError, FileNotFoundError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print(
        f"\n{result.total} files: {result.uploaded} uploaded "
        f"({result.bytes_uploaded / 1e6:.1f} MB), {result.skipped} already there, "
        f"{result.failed} failed, {result.not_attempted} not attempted in {result.seconds:.1f} s"
    )
    for key, reason in result.failures[:20]:
        print(f"  failed: {key}: {reason}")
    if result.failed > 20:
        print(f"  ... and {result.failed - 20} more failures")
    if result.aborted:
        print("staging aborted after too many failures; rerun to resume")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
