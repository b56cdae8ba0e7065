"""``msd-dagster load``: discover the folders, load them through Dagster's runs, then the
AdditionalFiles, the whole-dataset check and the profile, and print what happened.

This module is the command's entry: it takes Ctrl-C and SIGTERM over first (before Dagster is
imported, which takes seconds), turns the flags into the variables the runs read and prepares
the Dagster instance folder. The steps that follow are in
:mod:`msd_dagster.commands.load_steps`; what is printed about the folders in
:mod:`msd_dagster.commands.load_report`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from msd_dagster import settings, stopping
from msd_dagster.commands.load_report import LoadState


def load(
    source: str | None,
    database_url: str | None,
    partitions: Sequence[str] | None,
    workers: int,
    skip_additional_files: bool,
) -> int:
    """The command; its exit status. A stop (Ctrl-C, SIGTERM) before any run started ends the
    process at once; once runs started, they are stopped and recorded first."""
    state = LoadState()

    def stop_now(signal_name: str) -> None:  # no worker runs: nothing to wait for
        print(f"\n{state.interrupted_line(signal_name)}", flush=True)
        os._exit(stopping.exit_code(signal_name))

    requests = stopping.StopRequests(stop_now).start()
    stopping.register(requests)
    try:
        # The flags are the environment variables of the runs this command executes (read by
        # the resources when the runs use them); the UI needs the same ones to work on the
        # same data.
        if source:
            os.environ[settings.MSD_SOURCE] = source
        if database_url:
            os.environ[settings.MSD_DATABASE_URL] = database_url
        prepare_dagster_home()
        import dagster as dg

        from msd_dagster.commands.load_steps import load_folders
        from msd_dagster.definitions import RESOURCES

        with dg.build_resources(
            {"msd_source": RESOURCES["msd_source"], "warehouse": RESOURCES["warehouse"]}
        ) as resources:
            stopping.pause_at("startup")  # inside Dagster's resource context, before any worker
            return load_folders(
                resources.msd_source,
                resources.warehouse,
                partitions,
                workers,
                skip_additional_files,
                state,
                requests,
            )
    finally:
        requests.close()


def prepare_dagster_home() -> Path:
    """The Dagster instance folder: ``DAGSTER_HOME``, else ``$MSD_HOME/dagster_home``.

    A folder without a ``dagster.yaml`` gets the recommended one (:mod:`msd_dagster.instance`),
    saying so; an existing configuration is left alone, with one line on what it lacks.
    """
    from msd_dagster.instance import write_recommended_config

    chosen = os.environ.get("DAGSTER_HOME")
    home = (Path(chosen) if chosen else settings.msd_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        write_recommended_config(home)
        if chosen:
            print(f"wrote the recommended Dagster instance configuration to {config}")
    elif "msd_dagster.instance" not in config.read_text():
        print(
            f"note: {config} does not use msd-dagster's instance storage; runs record events "
            "several times slower (see the README, 'Open the UI')"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home
