"""``profile/dataset``: what the loaded music looks like, with plots on the asset's page.

Unpartitioned, downstream of every warehouse table: the whole database is profiled by
aggregate queries (:mod:`msd_dagster.warehouse.profile`) and drawn as a report
(:mod:`msd_dagster.profile_report`): Markdown with embedded PNGs in the metadata, the headline
numbers as plain entries (Dagster plots them over materializations), and the same report as
files under ``$MSD_HOME/profile``. ``msd_totals_after_loads`` requests it after loads;
``msd-dagster load`` runs it at the end.
"""

import time

import dagster as dg

from msd_dagster import event_metadata as em
from msd_dagster import settings
from msd_dagster.defs.assets import OWNERS
from msd_dagster.defs.assets.additional_files import LOAD_KEY
from msd_dagster.defs.resources import WarehouseResource
from msd_dagster.defs.tables import TABLE_ORDER, warehouse_key
from msd_dagster.warehouse.profile import TOP_LABELS, profile_warehouse

PROFILE_GROUP = "profile"
PROFILE_KEY = dg.AssetKey([PROFILE_GROUP, "dataset"])
PROFILE_MARKDOWN = "profile"
REPORT_PATH = "report_path"


@dg.asset(
    key=PROFILE_KEY,
    group_name=PROFILE_GROUP,
    deps=[*(warehouse_key(table) for table in TABLE_ORDER), LOAD_KEY],
    kinds={"sql", "matplotlib"},
    owners=OWNERS,
    tags={"msd/layer": PROFILE_GROUP},
    op_tags={"msd/stage": "profile"},
    code_version="1",
    description=(
        "The loaded data at a glance, computed in the database: songs per year (and of "
        "unknown year); tempo, loudness and duration distributions; the top "
        f"{TOP_LABELS} Echo Nest terms and MusicBrainz tags by artists; artist locations; the "
        "share of NULLs in every column of msd_track and msd_artist; rows per table. "
        "Refreshed after loads (msd_totals_after_loads, msd-dagster load); also written to "
        "$MSD_HOME/profile/index.html."
    ),
)
def warehouse_profile(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    started = time.perf_counter()
    with warehouse.errors_without_secrets(), warehouse.engine().connect() as conn:
        profile = profile_warehouse(conn)
    query_seconds = time.perf_counter() - started
    # Imported here: matplotlib would otherwise load with every import of the definitions.
    from msd_dagster.profile_report import build_report, write_report

    report = build_report(profile, warehouse.display_url())
    page = write_report(report, settings.default_profile_dir())
    context.log.info(
        f"profiled {profile.tracks:,} songs and {profile.artists:,} artists in "
        f"{warehouse.display_url()} in {query_seconds:.1f} s; report at {page}"
    )
    return dg.MaterializeResult(
        metadata={
            PROFILE_MARKDOWN: dg.MetadataValue.md(report.markdown()),
            **report.facts,
            REPORT_PATH: dg.MetadataValue.path(str(page)),
            em.DATABASE: warehouse.display_url(),
            "query_seconds": round(query_seconds, 3),
        }
    )
