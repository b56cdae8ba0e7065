"""The tags of the runs ``msd-dagster load`` creates: which folders a run targets, and which
load (and which process of which machine) launched it."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence

LOAD_TAG = "msd/load"  # one id per `msd-dagster load`, on each of its runs
LAUNCHED_BY_TAG = "msd/launched_by"
LAUNCHED_BY_CLI = "cli"
PID_TAG = "msd/pid"  # host:pid of the load that runs it
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_tags(folders: Sequence[str]) -> dict[str, str]:
    """The tags by which a run targets one folder or a range of them."""
    if len(folders) == 1:
        return {PARTITION_TAG: folders[0]}
    return {RANGE_START_TAG: folders[0], RANGE_END_TAG: folders[-1]}


def launcher_tags(load_id: str) -> dict[str, str]:
    """The tags that name this process's load as the one running a run."""
    return {
        LAUNCHED_BY_TAG: LAUNCHED_BY_CLI,
        LOAD_TAG: load_id,
        PID_TAG: f"{socket.gethostname()}:{os.getpid()}",
    }


def launcher_on_this_host(tags: Mapping[str, str]) -> int | None:
    """The process id of the load that runs a run, when that load is on this machine."""
    host, _, pid = tags.get(PID_TAG, "").rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None
