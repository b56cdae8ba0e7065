"""warehouse: the twelve msd_* SQL tables, loaded one partition at a time in one transaction."""

import os
import time

import dagster as dg
import pandas as pd

from msd_dagster.defs.automation import FOLLOW_UPSTREAM
from msd_dagster.defs.partitions import msd_folders
from msd_dagster.defs.resources import WarehouseResource
from msd_dagster.defs.tables import (
    DESCRIPTIONS,
    NORMALIZED_NAMES,
    column_lineage,
    normalized_key,
    table_schema,
    warehouse_key,
)
from msd_dagster.warehouse.ddl import ensure_schema
from msd_dagster.warehouse.partition_load import is_transient_database_error, load_partition

WAREHOUSE_POOL = "msd_warehouse"


def dialect_kind(dialect_name: str) -> str:
    return {"postgresql": "postgres", "mssql": "sqlserver", "mariadb": "mysql"}.get(
        dialect_name, dialect_name
    )


def configured_dialect_kind() -> str:
    """The catalog kind of the configured database, read from the environment at load time."""
    url = os.environ.get("MSD_DATABASE_URL", "")
    if url:
        return dialect_kind(url.split(":", 1)[0].split("+", 1)[0])
    return "sqlserver" if os.environ.get("MSD_AZURE_SQL_SERVER") else "sqlite"


@dg.multi_asset(
    name="warehouse_tables",
    group_name="warehouse",
    partitions_def=msd_folders,
    ins={name: dg.AssetIn(key=normalized_key(table)) for table, name in NORMALIZED_NAMES.items()},
    specs=[
        dg.AssetSpec(
            warehouse_key(table),
            description=DESCRIPTIONS[table],
            deps=[normalized_key(table)],
            kinds={"sql", configured_dialect_kind()},
            owners=["team:data-engineering"],
            tags={"msd/layer": "warehouse"},
            metadata={"dagster/column_schema": table_schema(table), "dagster/table_name": table},
            code_version="1",
            automation_condition=FOLLOW_UPSTREAM,
        )
        for table in NORMALIZED_NAMES
    ],
    pool=WAREHOUSE_POOL,
    op_tags={"msd/stage": "load"},
)
def warehouse_tables(context: dg.AssetExecutionContext, warehouse: WarehouseResource, **frames):
    """Replace the partition's rows of every msd_* table in one transaction.

    Track tables: the partition's rows are deleted and re-inserted. Artist-level tables and
    the dictionaries are shared across partitions: upserted, never deleted. A failure rolls
    the whole partition back, so the previous contents stay intact.
    """
    engine = warehouse.engine()
    ensure_schema(engine)
    by_table: dict[str, pd.DataFrame] = {
        table: frames[name] for table, name in NORMALIZED_NAMES.items()
    }
    started = time.perf_counter()
    try:
        written = load_partition(engine, context.partition_key, by_table)
    except Exception as exc:
        # Lost connections and lock timeouts are worth another try; a constraint violation or
        # a schema mismatch fails the same way every time, so it fails at once.
        if is_transient_database_error(exc):
            raise dg.RetryRequested(max_retries=2, seconds_to_wait=10) from exc
        raise
    seconds = time.perf_counter() - started
    total = sum(written.values())
    context.log.info(
        f"loaded {total} rows of {context.partition_key} into {warehouse.display_url()} "
        f"in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} rows/s)"
    )
    for table in NORMALIZED_NAMES:
        yield dg.MaterializeResult(
            asset_key=warehouse_key(table),
            metadata={
                "dagster/row_count": len(by_table[table]),
                "dagster/column_lineage": column_lineage(table),
                "rows_written": written.get(table, 0),
                "database": warehouse.display_url(),
                "dialect": engine.dialect.name,
                "load_seconds": round(seconds, 3),
            },
        )
