"""``msd-dagster``: generate a sample, load a dataset through Dagster, stage a dataset to S3."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from msd_dagster import settings


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


def _sample(args: argparse.Namespace) -> int:
    from msd_dagster.commands.sample import sample

    return sample(
        args.out, args.songs, args.seed, args.folders, args.additional_files, args.workers
    )


def _load(args: argparse.Namespace) -> int:
    from msd_dagster.commands.load import load

    return load(
        args.source, args.database_url, args.partition, args.workers, args.skip_additional_files
    )


def _profile(args: argparse.Namespace) -> int:
    from msd_dagster.commands.profile import write_profile
    from msd_dagster.defs.resources import WarehouseResource

    return write_profile(WarehouseResource(url=args.database_url or ""), args.out)


def _verify_azure_sql(args: argparse.Namespace) -> int:
    from msd_dagster.commands.verify_azure_sql import verify
    from msd_dagster.defs.resources import WarehouseResource

    url = WarehouseResource().sqlalchemy_url()  # the environment, as for the code location
    return verify(url, args.source, args.partition, args.songs, args.loads, args.wait_seconds)


def _stage(args: argparse.Namespace) -> int:
    from msd_dagster.commands.stage import stage

    return stage(args.source, args.target, args.workers, args.endpoint_url)


if __name__ == "__main__":
    raise SystemExit(main())
