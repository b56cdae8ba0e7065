"""``msd-dagster``: generate a sample, load a dataset through Dagster, stage a dataset to S3."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from msd_dagster import settings
from msd_dagster.defs.check_names import TOTAL_TRACKS

if TYPE_CHECKING:
    import dagster as dg

    from msd_dagster.defs.resources import MsdSourceResource, WarehouseResource
    from msd_dagster.local_runs import FolderOutcome, LocalRunner
    from msd_dagster.source.layout import DatasetSurvey, OutsideLayout
    from msd_dagster.source.local import LocalDataset
    from msd_dagster.source.s3 import S3Dataset
    from msd_dagster.stopping import StopRequests

    Dataset = LocalDataset | S3Dataset


class _Parser(argparse.ArgumentParser):
    """An argument error is one line on stderr and exit 2 (argparse's usage block is left to
    ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="msd-dagster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="write a generated MSD-format dataset root")
    sample.add_argument("--songs", type=_positive_int, required=True)
    sample.add_argument("--out", type=_output_folder, required=True)
    sample.add_argument("--seed", type=_non_negative_int, default=0)
    sample.add_argument("--additional-files", action="store_true")
    sample.add_argument(
        "--folders", nargs="+", type=_partition_key, help="second-level folders, e.g. A/A A/B"
    )
    sample.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1)

    load = commands.add_parser(
        "load", help="discover partitions and materialize every asset and check through Dagster"
    )
    load.add_argument("--source", help="dataset root: a folder or s3://bucket/prefix")
    load.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite under MSD_HOME)")
    load.add_argument(
        "--partition", nargs="+", type=_partition_key, help="e.g. A/A B/C (default: all)"
    )
    load.add_argument(
        "--workers", type=_positive_int, default=os.cpu_count() or 1, help="runs at once"
    )
    load.add_argument(
        "--skip-additional-files",
        action="store_true",
        help="do not load AdditionalFiles/ (loaded after the partitions when present)",
    )

    stage = commands.add_parser("stage", help="upload a local dataset root to S3 (resumable)")
    stage.add_argument("--from", dest="source", type=_existing_folder, required=True)
    stage.add_argument("--to", dest="target", required=True, help="s3://bucket/prefix")
    stage.add_argument("--workers", type=_positive_int, default=8)
    stage.add_argument("--endpoint-url", default=os.environ.get("MSD_S3_ENDPOINT_URL"))

    azure = commands.add_parser(
        "verify-azure-sql",
        help="load one partition into the Azure SQL database of MSD_DATABASE_URL / "
        "MSD_AZURE_SQL_* (never from arguments) and print rows/s and sys.dm_db_resource_stats",
    )
    azure.add_argument(
        "--source", type=_existing_folder, help="dataset root (default: a generated sample)"
    )
    azure.add_argument(
        "--partition", type=_partition_key, help="partition key, e.g. A/B (default: the first)"
    )
    azure.add_argument(
        "--songs", type=_positive_int, default=300, help="songs of the generated sample"
    )
    azure.add_argument("--loads", type=_positive_int, default=2, help="loads of the partition")
    azure.add_argument("--wait-seconds", type=_non_negative_float, default=20.0)

    profile = commands.add_parser(
        "profile", help="write the dataset profile (plots, HTML page) without the UI"
    )
    profile.add_argument("--database-url", help="SQLAlchemy URL (default: as for load)")
    profile.add_argument("--out", type=Path, help="folder (default: $MSD_HOME/profile)")

    args = parser.parse_args(argv)
    commands_by_name = {
        "profile": _profile,
        "verify-azure-sql": _verify_azure_sql,
        "sample": _sample,
        "load": _load,
        "stage": _stage,
    }
    try:
        return commands_by_name[args.command](args)
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        print(f"error: {runtime_error_line(exc)}", file=sys.stderr)
        return 1


def runtime_error_line(exc: BaseException) -> str:
    """One line naming the cause of an unexpected failure, secrets masked; a full disk or a
    read-only folder under ``DAGSTER_HOME`` names the folder."""
    from msd_dagster.secrets import error_line, mask_text

    line = mask_text(error_line(exc))  # on every path below
    home = os.environ.get("DAGSTER_HOME", "")
    text = line.lower()
    if "disk is full" in text or "no space left" in text:
        return (
            f"the disk is full: cannot write to {_full_folder()} ({line}); free space and run again"
        )
    if "readonly database" in text or "read-only file system" in text:
        return f"cannot write to DAGSTER_HOME={home}: {line}"
    return line


def _full_folder() -> str:
    """Which of the command's folders is on a (nearly) full disk, by name."""
    for name in ("DAGSTER_HOME", settings.MSD_HOME):
        folder = os.environ.get(name)
        try:
            info = os.statvfs(folder) if folder else None
        except OSError:
            continue
        if info is not None and info.f_bavail * info.f_frsize < 1024 * 1024:
            return f"{name}={folder}"
    return "a folder it writes to"


def _sample(args: argparse.Namespace) -> int:
    from msd_dagster.generate import generate_dataset

    started = time.perf_counter()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
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


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _partition_key(text: str) -> str:
    from msd_dagster.source.layout import validate_partition_key

    try:
        return validate_partition_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path


def _existing_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return path


def prepare_dagster_home() -> Path:
    """The Dagster instance folder: ``DAGSTER_HOME``, else ``$MSD_HOME/dagster_home``.

    A folder without a ``dagster.yaml`` gets the recommended one (:mod:`msd_dagster.instance`),
    saying so; an existing configuration is left alone, with one line on what it lacks.
    """
    from msd_dagster.instance import write_recommended_config

    chosen = os.environ.get("DAGSTER_HOME")
    home = (Path(chosen) if chosen else settings.msd_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        write_recommended_config(home)
        if chosen:
            print(f"wrote the recommended Dagster instance configuration to {config}")
    elif "msd_dagster.instance" not in config.read_text():
        print(
            f"note: {config} does not use msd-dagster's instance storage; runs record events "
            "several times slower (see the README, 'Open the UI')"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


class LoadState:
    """What the load has done so far: what a stop at any moment reports."""

    def __init__(self) -> None:
        self.selected: list[str] = []
        self.outcomes: list[FolderOutcome] = []

    def interrupted_line(self, signal_name: str) -> str:
        if not self.selected:
            return (
                f"interrupted ({signal_name}) before any folder was loaded: the database was not "
                "changed. Run the same command again to load."
            )
        loaded = [o.partition for o in self.outcomes if o.success]
        unknown = [o.partition for o in self.outcomes if not o.success and not o.interrupted]
        rolled_back = [o.partition for o in self.outcomes if o.interrupted]
        line = (
            f"interrupted ({signal_name}): {len(loaded)} of {len(self.selected)} folder(s) "
            f"loaded and recorded{': ' + ' '.join(loaded) if loaded else ''}"
        )
        if rolled_back:
            line += f"; not loaded, rolled back if in progress: {' '.join(rolled_back)}"
        if unknown:
            line += f"; failed or not known to be loaded: {' '.join(unknown)}"
        return line + ". Run the same command again to load the rest."


def _load(args: argparse.Namespace) -> int:
    from msd_dagster import stopping

    state = LoadState()

    def stop_now(signal_name: str) -> None:  # no worker runs: nothing to wait for
        print(f"\n{state.interrupted_line(signal_name)}", flush=True)
        os._exit(stopping.exit_code(signal_name))

    requests = stopping.StopRequests(stop_now).start()
    stopping.register(requests)
    try:
        return _load_with(args, state, requests)
    finally:
        requests.close()


def _load_with(args: argparse.Namespace, state: LoadState, requests: StopRequests) -> int:
    from msd_dagster import stopping

    # The flags are the environment variables of the runs this command executes (read by the
    # resources when the runs use them); the UI needs the same ones to work on the same data.
    if args.source:
        os.environ[settings.MSD_SOURCE] = args.source
    if args.database_url:
        os.environ[settings.MSD_DATABASE_URL] = args.database_url
    prepare_dagster_home()

    import dagster as dg

    from msd_dagster.definitions import RESOURCES

    with dg.build_resources(
        {"msd_source": RESOURCES["msd_source"], "warehouse": RESOURCES["warehouse"]}
    ) as resources:
        stopping.pause_at("startup")  # inside Dagster's resource context, before any worker
        return _load_folders(args, resources.msd_source, resources.warehouse, state, requests)


def database_problem(warehouse: WarehouseResource) -> str | None:
    """None when the database answers; else what to print, in one line, without any secret.

    Checked before any run starts: an unusable URL would otherwise fail every folder's load
    only after its retries (minutes), then end in a traceback.
    """
    from msd_dagster.defs.resources import sqlite_folder
    from msd_dagster.warehouse.dialects import UnsupportedDatabaseError

    found = sqlite_folder(warehouse.sqlalchemy_url())
    if found is not None:
        folder, may_create = found
        if not folder.is_dir() and not may_create:
            return (
                f"cannot open the database {warehouse.display_url()}: the folder {folder} does "
                "not exist; create it first"
            )
    try:
        with warehouse.engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except UnsupportedDatabaseError as exc:
        return warehouse.without_secrets(str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver, network or URL error
        return f"cannot connect to the database {warehouse.display_url()}: " + (
            warehouse.describe_error(exc)
        )
    return None


def source_problem(
    source: MsdSourceResource,
) -> tuple[Dataset | None, DatasetSurvey | None, str | None]:
    """``(dataset, its survey, None)``, or ``(None, None, what to print)`` in one line when
    the source cannot be used (missing bucket, wrong prefix, rejected credentials, endpoint
    down, unreadable folder), before any run starts."""
    import dagster as dg

    from msd_dagster.source.layout import SourceError
    from msd_dagster.source.s3 import S3SourceError

    try:
        dataset = source.dataset()
        return dataset, dataset.survey(), None
    except dg.Failure as exc:
        return None, None, exc.description or str(exc)
    except (S3SourceError, SourceError, OSError) as exc:
        return None, None, str(exc)


def _load_folders(
    args: argparse.Namespace,
    source: MsdSourceResource,
    warehouse: WarehouseResource,
    state: LoadState,
    requests: StopRequests,
) -> int:
    import dagster as dg

    from msd_dagster import stopping
    from msd_dagster.defs.outside_layout import outside_layout_observation
    from msd_dagster.defs.partitions import msd_folders, new_folders_request
    from msd_dagster.local_runs import (
        LoadInterrupted,
        LocalRunner,
        fail_orphaned_runs,
        folder_runs_target,
        plan_folder_runs,
    )
    from msd_dagster.profile_cli import profile_after_load

    dataset, survey, problem = source_problem(source)
    if problem:
        print(f"error: cannot read the source: {problem}", file=sys.stderr)
        return 2
    available, outside = survey.partitions, survey.outside
    selected = args.partition or available
    unknown = sorted(set(selected) - set(available))
    if unknown:
        print(
            f"error: no such partition(s) at {dataset.describe()}: {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    if not selected:
        skipped = f" ({survey.outside_text()} outside the layout, not loaded)" if outside else ""
        print(f"error: no song files under {dataset.describe()}/data{skipped}", file=sys.stderr)
        return 2
    problem = database_problem(warehouse)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # Runs execute in forked processes: none may inherit this process's connections.
    warehouse.engine().dispose()
    instance = dg.DagsterInstance.get()
    instance.report_runless_asset_event(outside_layout_observation(outside, dataset.describe()))
    for run_id in fail_orphaned_runs(instance):
        print(f"marked run {run_id} failed: the msd-dagster load that ran it was killed")
    if (add_new := new_folders_request(instance, available)) is not None:
        instance.add_dynamic_partitions(add_new.partitions_def_name, add_new.partition_keys)
    order = instance.get_dynamic_partitions(msd_folders.name)
    plan = plan_folder_runs(order, selected, args.workers)
    for entry in outside:
        print(f"not loaded: {entry.describe()}")
    print(
        f"loading {len(selected)} folder(s) in {len(plan)} run(s) from {dataset.describe()} "
        f"into {warehouse.display_url()} ({args.workers} run(s) at a time); runs are recorded "
        f"in DAGSTER_HOME={os.environ['DAGSTER_HOME']}",
        flush=True,
    )
    started = time.perf_counter()
    runner = LocalRunner(
        instance,
        args.workers,
        load_id=uuid.uuid4().hex[:12],
        stop_requested=lambda: requests.signal_name,
    )
    outcomes = state.outcomes
    state.selected = list(selected)

    def report(outcome: FolderOutcome) -> None:
        outcomes.append(outcome)
        status = "ok" if outcome.success and not outcome.failed_checks else "FAILED"
        if outcome.interrupted:
            status = "not loaded (interrupted)"
        print(
            f"[{len(outcomes)}/{len(selected)}] {outcome.partition}: {status}, "
            f"{outcome.tracks} tracks, {sum(outcome.rows.values()):,} rows, "
            f"{outcome.rejected_files} rejected, {outcome.seconds:.1f} s",
            flush=True,
        )

    try:
        with requests.supervising():
            runner.run_folders(plan, folder_runs_target(), report)
            extra = (
                []
                if args.skip_additional_files
                else _load_additional_files(dataset, runner, warehouse)
            )
            # Nothing to total when no folder loaded (e.g. the source failed mid-way).
            totals = (
                runner.run_unpartitioned(_totals_job_fn)
                if any(o.success for o in outcomes)
                else None
            )
            profiled, counted = profile_after_load(runner, warehouse) if totals else (None, None)
    except LoadInterrupted as exc:
        print(f"\n{state.interrupted_line(str(exc))}")
        return stopping.exit_code(str(exc))
    _print_summary(outcomes, warehouse, time.perf_counter() - started, outside, counted)
    totals_ok = _report_totals(runner, totals, warehouse)
    if profiled:
        print(profiled)
    failed = [o for o in outcomes if not o.success or o.failed_checks]
    return 1 if failed or not all(extra) or not totals_ok else 0


def _load_additional_files(
    dataset: Dataset, runner: LocalRunner, warehouse: WarehouseResource
) -> list[bool]:
    """After the folders (song-file rows win, AdditionalFiles rows only fill), load the side
    files when any are present; one unpartitioned run. ``[success]``, or ``[]`` if none."""
    from msd_dagster.defs.assets.additional_files import LOAD_KEY, find_additional_files
    from msd_dagster.event_metadata import ROWS_WRITTEN
    from msd_dagster.source.s3 import S3SourceError

    try:
        found = find_additional_files(dataset)
    except (S3SourceError, OSError) as exc:
        print(f"[AdditionalFiles] FAILED: cannot list them: {exc}", flush=True)
        return [False]
    if not found:
        return []
    started = time.perf_counter()
    run = runner.run_unpartitioned(_additional_files_job_fn)
    rows = 0
    for materialization in runner.materializations(run):
        if materialization.asset_key == LOAD_KEY:
            rows = int(materialization.metadata[ROWS_WRITTEN].value)
    ok = run.is_success
    print(
        f"[AdditionalFiles] {len(found)} file(s): {'ok' if ok else 'FAILED'}, {rows:,} rows, "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    if not ok:
        print(f"AdditionalFiles FAILED: {warehouse.without_secrets(runner.run_error(run))}")
    return [ok]


def _additional_files_job_fn():
    from msd_dagster.definitions import additional_files_job

    return additional_files_job()


def _totals_job_fn():
    from msd_dagster.definitions import totals_job

    return totals_job()


def _report_totals(
    runner: LocalRunner, run: dg.DagsterRun | None, warehouse: WarehouseResource
) -> bool:
    """Print the whole-dataset check's numbers when it fails; True when it passed."""
    if run is None:
        print(f"check {TOTAL_TRACKS} not run: no folder was loaded")
        return False
    evaluations = runner.check_evaluations(run)
    if run.is_success and evaluations and all(e.passed for e in evaluations):
        return True
    for evaluation in evaluations:
        if not evaluation.passed:
            print(f"check failed: {evaluation.check_name}: {evaluation.description}")
    if not evaluations:
        print(
            f"check {TOTAL_TRACKS} did not run: " + warehouse.without_secrets(runner.run_error(run))
        )
    return False


def _print_summary(
    outcomes: list[FolderOutcome],
    warehouse: WarehouseResource,
    seconds: float,
    outside: list[OutsideLayout],
    totals: dict[str, int] | None = None,
) -> None:
    """The load's summary; ``totals``: the rows per table, if the profile just counted them."""
    from msd_dagster.source.layout import outside_total_text
    from msd_dagster.warehouse.verify import table_totals

    loaded_folders = sum(o.success for o in outcomes)
    rejected = [(o.partition, name, reason) for o in outcomes for name, reason in o.rejected]
    rejected_files = sum(o.rejected_files for o in outcomes)
    skipped = f"; {rejected_files:,} file(s) rejected" if rejected_files else ""
    if outside:
        skipped += f"; {outside_total_text(outside)} outside the layout, not loaded"
    print(f"\nloaded {loaded_folders} of {len(outcomes)} folder(s) in {seconds:.1f} s{skipped}")
    loaded: dict[str, int] = {}
    for outcome in outcomes:
        for table, rows in outcome.rows.items():
            loaded[table] = loaded.get(table, 0) + rows
    try:
        totals = totals if totals is not None else table_totals(warehouse.engine())
    except Exception as exc:  # noqa: BLE001 - e.g. the database went away during the load
        print(f"cannot count the rows: {warehouse.describe_error(exc)}")
        totals = {}
    print(f"{'table':<24}{'rows this load':>16}{'rows in database':>18}")
    for table, total in totals.items():
        print(f"{table:<24}{loaded.get(table, 0):>16,}{total:>18,}")
    if rejected_files:
        print(f"\nrejected files ({rejected_files:,}):")
        for _partition, name, reason in rejected:
            print(f"  {name}: {reason}")
        for outcome in outcomes:
            if outcome.rejected_files > len(outcome.rejected):
                more = outcome.rejected_files - len(outcome.rejected)
                print(
                    f"  ... and {more:,} more in {outcome.partition} (the rejected_files frame "
                    "of its normalized/songs materialization)"
                )
    if outside:
        print(f"\noutside the layout, not loaded ({outside_total_text(outside)}):")
        for entry in outside:
            print(f"  {entry.describe()}")
    failed = [o for o in outcomes if not o.success]
    for outcome in failed:
        print(f"\nfolder {outcome.partition} FAILED: {warehouse.without_secrets(outcome.error)}")
        for check in outcome.failed_checks:
            print(f"  check failed: {check}")
    if failed:
        folders = " ".join(o.partition for o in failed)
        print(f"\nrerun them with: msd-dagster load --partition {folders}")


def _profile(args: argparse.Namespace) -> int:
    from msd_dagster.defs.resources import WarehouseResource
    from msd_dagster.profile_cli import write_profile

    return write_profile(WarehouseResource(url=args.database_url or ""), args.out)


def _verify_azure_sql(args: argparse.Namespace) -> int:
    from msd_dagster.commands.verify_azure_sql import verify
    from msd_dagster.defs.resources import WarehouseResource

    url = WarehouseResource().sqlalchemy_url()  # the environment, as for the code location
    return verify(url, args.source, args.partition, args.songs, args.loads, args.wait_seconds)


def _stage(args: argparse.Namespace) -> int:
    """Upload a local dataset root to ``s3://bucket/prefix``; exit 1 unless every file is there.

    Credentials come from the environment / the standard AWS chain only; the endpoint from
    ``--endpoint-url`` or ``MSD_S3_ENDPOINT_URL``, the region from ``AWS_REGION`` (or
    ``AWS_DEFAULT_REGION``). Rerunning skips the objects already uploaded (same size and MD5).
    """
    from msd_dagster.source.s3 import S3SourceError, make_s3_client, parse_s3_url
    from msd_dagster.source.s3_staging import stage_dataset

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
