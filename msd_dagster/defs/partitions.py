"""One partition per second-level folder of the dataset ("A/B"), discovered from the source.

Dynamic, so the same code serves the subset (35 folders) and the full set (up to 676): the
discovery sensor and ``msd-dagster load`` add the folders they find.

A run loads one folder or a range of them (one after the other, each in its own transaction):
Dagster's fixed cost per run is then shared by its folders. A backfill from the UI makes runs
of at most :data:`FOLDERS_PER_RUN` folders; ``msd-dagster load`` plans its own ranges.
"""

from collections.abc import Iterable

import dagster as dg

msd_folders = dg.DynamicPartitionsDefinition(name="msd_folders")

FOLDERS_PER_RUN = 8
FOLDER_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=FOLDERS_PER_RUN)


def new_folders_request(
    instance: dg.DagsterInstance, folders: Iterable[str]
) -> dg.AddDynamicPartitionsRequest | None:
    """The request that adds ``folders`` not yet partitions of ``msd_folders`` (in their
    order), or ``None`` when there are none: the discovery sensor returns it, ``msd-dagster
    load`` applies it to the instance."""
    known = set(instance.get_dynamic_partitions(msd_folders.name))
    new = [key for key in folders if key not in known]
    return msd_folders.build_add_request(new) if new else None
