"""``msd-dagster stage``: upload a local dataset root to S3 (resumable)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from msd_dagster.commands.terminal import progress_printer


def stage(source: Path, target: str, workers: int, endpoint_url: str | None) -> int:
    """Upload a local dataset root to ``s3://bucket/prefix``; exit 1 unless every file is there.

    Credentials come from the environment / the standard AWS chain only; the endpoint from
    ``--endpoint-url`` or ``MSD_S3_ENDPOINT_URL``, the region from ``AWS_REGION`` (or
    ``AWS_DEFAULT_REGION``). Rerunning skips the objects already uploaded (same size and MD5).
    """
    from msd_dagster.source.s3 import S3SourceError, make_s3_client, parse_s3_url
    from msd_dagster.source.s3_staging import stage_dataset

    try:
        bucket, prefix = parse_s3_url(target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = make_s3_client(
        endpoint_url=endpoint_url or None,
        region_name=os.environ.get("AWS_REGION") or None,
    )
    show = progress_printer("staged")

    def progress(done: int, total: int, sent: int) -> None:
        show(done, total)

    print(f"staging {source} to s3://{bucket}/{prefix} ({workers} uploads at a time)")
    try:
        result = stage_dataset(source, client, bucket, prefix, workers=workers, progress=progress)
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
