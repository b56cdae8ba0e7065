"""The SQL warehouse: table definitions, DDL, bulk loading, partition loads and check queries.

What differs between databases lives in one folder per backend under
:mod:`msd_dagster.warehouse.dialects`, behind the ``Backend`` interface (``backend_for``).

Importing this package never imports pyodbc (it fails on machines without unixODBC); the
driver is imported lazily by :func:`create_engine_for_url` for ``mssql+pyodbc`` URLs.
"""

from msd_dagster.secrets import mask_url
from msd_dagster.source.layout import partition_track_range
from msd_dagster.warehouse.bulk import bulk_insert
from msd_dagster.warehouse.ddl import (
    SchemaMismatchError,
    drop_schema,
    ensure_schema,
    schema_fingerprint,
    warehouse_table,
)
from msd_dagster.warehouse.dialects import DatabaseEncodingError
from msd_dagster.warehouse.dialects.mssql import (
    OdbcDriverMissingError,
    azure_access_token_connect_args,
)
from msd_dagster.warehouse.dialects.mssql.urls import azure_sql_url
from msd_dagster.warehouse.dialects.sqlite import create_sqlite_engine, install_sqlite_pragmas
from msd_dagster.warehouse.partition_load import load_partition
from msd_dagster.warehouse.queries import (
    count_duplicate_natural_keys,
    count_orphan_foreign_keys,
    count_rows,
    total_tracks,
)
from msd_dagster.warehouse.rows import BulkInsertError
from msd_dagster.warehouse.urls import create_engine_for_url

__all__ = [
    "BulkInsertError",
    "DatabaseEncodingError",
    "OdbcDriverMissingError",
    "SchemaMismatchError",
    "azure_access_token_connect_args",
    "azure_sql_url",
    "bulk_insert",
    "count_duplicate_natural_keys",
    "count_orphan_foreign_keys",
    "count_rows",
    "create_engine_for_url",
    "create_sqlite_engine",
    "drop_schema",
    "ensure_schema",
    "install_sqlite_pragmas",
    "load_partition",
    "mask_url",
    "partition_track_range",
    "schema_fingerprint",
    "total_tracks",
    "warehouse_table",
]
