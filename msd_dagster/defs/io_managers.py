"""Parquet IO manager for the raw listings and normalized frames (typed, compact, no pickle)."""

import os
import uuid

import dagster as dg
import pandas as pd
from upath import UPath

from msd_dagster import settings


class PandasParquetIOManager(dg.UPathIOManager):
    """Stores each asset partition as ``<base>/<asset key>/<partition>.parquet``."""

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash never leaves a half-written file behind.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        obj.to_parquet(str(tmp), index=False, compression="zstd")
        os.replace(str(tmp), str(path))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        return pd.read_parquet(str(path))


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet files under ``base_dir`` (default ``$MSD_HOME/parquet``)."""

    base_dir: str = ""

    def create_io_manager(self, context: dg.InitResourceContext) -> PandasParquetIOManager:
        base = self.base_dir or str(settings.default_parquet_dir())
        return PandasParquetIOManager(base_path=UPath(base))
