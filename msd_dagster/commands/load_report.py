"""What ``msd-dagster load`` prints about the folders: a line per folder as it is done, the
summary at the end, and the line of a load stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from msd_dagster.source.layout import OutsideLayout, outside_total_text

if TYPE_CHECKING:
    from msd_dagster.defs.resources import WarehouseResource
    from msd_dagster.runs.progress import FolderOutcome


class LoadState:
    """What the load has done so far: what a stop at any moment reports."""

    def __init__(self) -> None:
        self.selected: list[str] = []
        self.outcomes: list[FolderOutcome] = []

    def interrupted_line(self, signal_name: str) -> str:
        if not self.selected:
            return (
                f"interrupted ({signal_name}) before any folder was loaded: the database was not "
                "changed. Run the same command again to load."
            )
        loaded = [o.partition for o in self.outcomes if o.success]
        unknown = [o.partition for o in self.outcomes if not o.success and not o.interrupted]
        rolled_back = [o.partition for o in self.outcomes if o.interrupted]
        line = (
            f"interrupted ({signal_name}): {len(loaded)} of {len(self.selected)} folder(s) "
            f"loaded and recorded{': ' + ' '.join(loaded) if loaded else ''}"
        )
        if rolled_back:
            line += f"; not loaded, rolled back if in progress: {' '.join(rolled_back)}"
        if unknown:
            line += f"; failed or not known to be loaded: {' '.join(unknown)}"
        return line + ". Run the same command again to load the rest."

    def folder_done(self, outcome: FolderOutcome) -> None:
        """Record a folder's outcome and print its line."""
        self.outcomes.append(outcome)
        status = "ok" if outcome.success and not outcome.failed_checks else "FAILED"
        if outcome.interrupted:
            status = "not loaded (interrupted)"
        print(
            f"[{len(self.outcomes)}/{len(self.selected)}] {outcome.partition}: {status}, "
            f"{outcome.tracks} tracks, {sum(outcome.rows.values()):,} rows, "
            f"{outcome.rejected_files} rejected, {outcome.seconds:.1f} s",
            flush=True,
        )


def print_summary(
    outcomes: list[FolderOutcome],
    warehouse: WarehouseResource,
    seconds: float,
    outside: list[OutsideLayout],
    totals: dict[str, int] | None = None,
) -> None:
    """The load's summary; ``totals``: the rows per table, if the profile just counted them."""
    from msd_dagster.warehouse.verify import table_totals

    loaded_folders = sum(o.success for o in outcomes)
    rejected = [(o.partition, name, reason) for o in outcomes for name, reason in o.rejected]
    rejected_files = sum(o.rejected_files for o in outcomes)
    skipped = f"; {rejected_files:,} file(s) rejected" if rejected_files else ""
    if outside:
        skipped += f"; {outside_total_text(outside)} outside the layout, not loaded"
    print(f"\nloaded {loaded_folders} of {len(outcomes)} folder(s) in {seconds:.1f} s{skipped}")
    loaded: dict[str, int] = {}
    for outcome in outcomes:
        for table, rows in outcome.rows.items():
            loaded[table] = loaded.get(table, 0) + rows
    try:
        totals = totals if totals is not None else table_totals(warehouse.engine())
    except Exception as exc:  # noqa: BLE001 - e.g. the database went away during the load
        print(f"cannot count the rows: {warehouse.describe_error(exc)}")
        totals = {}
    print(f"{'table':<24}{'rows this load':>16}{'rows in database':>18}")
    for table, total in totals.items():
        print(f"{table:<24}{loaded.get(table, 0):>16,}{total:>18,}")
    if rejected_files:
        print(f"\nrejected files ({rejected_files:,}):")
        for _partition, name, reason in rejected:
            print(f"  {name}: {reason}")
        for outcome in outcomes:
            if outcome.rejected_files > len(outcome.rejected):
                more = outcome.rejected_files - len(outcome.rejected)
                print(
                    f"  ... and {more:,} more in {outcome.partition} (the rejected_files frame "
                    "of its normalized/songs materialization)"
                )
    if outside:
        print(f"\noutside the layout, not loaded ({outside_total_text(outside)}):")
        for entry in outside:
            print(f"  {entry.describe()}")
    failed = [o for o in outcomes if not o.success]
    for outcome in failed:
        print(f"\nfolder {outcome.partition} FAILED: {warehouse.without_secrets(outcome.error)}")
        for check in outcome.failed_checks:
            print(f"  check failed: {check}")
    if failed:
        folders = " ".join(o.partition for o in failed)
        print(f"\nrerun them with: msd-dagster load --partition {folders}")
