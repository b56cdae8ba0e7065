"""One partition per second-level folder of the dataset ("A/B"), discovered from the source.

Dynamic, so the same code serves the subset (35 folders) and the full set (up to 676): the
discovery sensor and ``msd-dagster load`` add the folders they find.
"""

import dagster as dg

msd_folders = dg.DynamicPartitionsDefinition(name="msd_folders")
