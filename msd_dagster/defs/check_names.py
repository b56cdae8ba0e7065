"""The names of the asset checks: :mod:`msd_dagster.defs.checks` defines the checks under them;
the catalog's descriptions and ``msd-dagster load`` refer to them."""

# One per table and folder, evaluated in the folder's load transaction.
ROWS_CHECK = "partition_rows_loaded"
# Whole-dataset, on warehouse/all_folders.
TOTAL_TRACKS = "total_tracks_match_partitions"
