"""The dataset profile from the command line: ``msd-dagster profile``, and the end of a load.

``msd-dagster profile`` writes the report (:mod:`msd_dagster.profile_report`) straight from the
database, without Dagster; ``msd-dagster load`` materializes the ``profile/dataset`` asset once
the folders are loaded, so the UI shows the same report, and prints the page's path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from msd_dagster import settings

if TYPE_CHECKING:
    import dagster as dg

    from msd_dagster.defs.resources import WarehouseResource
    from msd_dagster.runs.runner import LocalRunner


def write_profile(warehouse: WarehouseResource, folder: Path | None = None) -> int:
    """Profile the warehouse's database into ``folder`` (default ``$MSD_HOME/profile``) and
    print the page's path; the exit status (2, with one line, when the database fails)."""
    from msd_dagster.profile_report import build_report, write_report
    from msd_dagster.warehouse.profile import profile_warehouse

    started = time.perf_counter()
    try:
        with warehouse.engine().connect() as conn:
            profile = profile_warehouse(conn)
    except Exception as exc:  # noqa: BLE001 - any driver, network or URL error, in one line
        print(f"error: cannot profile {warehouse.display_url()}: {warehouse.describe_error(exc)}")
        return 2
    report = build_report(profile, warehouse.display_url())
    target = folder or settings.default_profile_dir()
    try:
        page = write_report(report, target)
    except OSError as exc:
        print(f"error: cannot write the profile to {target}: {exc.strerror or exc}")
        return 2
    print(
        f"profiled {profile.tracks:,} songs and {profile.artists:,} artists in "
        f"{warehouse.display_url()} in {time.perf_counter() - started:.1f} s: {page}"
    )
    return 0


def profile_after_load(
    runner: LocalRunner, warehouse: WarehouseResource
) -> tuple[str, dict[str, int] | None]:
    """Run ``msd_profile_job`` (one unpartitioned run). Returns the line to print (where its
    page is, or why it failed) and the rows per table it counted (``None`` if it failed). A
    failed profile does not fail the load: the data is loaded and checked."""
    from msd_dagster.defs.assets.profile import PROFILE_KEY, REPORT_PATH
    from msd_dagster.event_metadata import table_rows_key
    from msd_dagster.runs.progress import materializations, run_error
    from msd_dagster.warehouse.schema import MSD_TABLES

    run = runner.run_unpartitioned(_profile_job_fn)
    for materialization in materializations(runner.instance, run):
        metadata = materialization.metadata
        if materialization.asset_key == PROFILE_KEY and REPORT_PATH in metadata:
            counts = {t.name: metadata[table_rows_key(t.name)].value for t in MSD_TABLES}
            return f"dataset profile: {metadata[REPORT_PATH].value}", counts
    error = run_error(runner.instance, run)
    return f"dataset profile FAILED: {warehouse.without_secrets(error)}", None


def _profile_job_fn() -> dg.JobDefinition:
    from msd_dagster.definitions import profile_job

    return profile_job()
