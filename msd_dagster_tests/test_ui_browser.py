"""End to end in a real browser: what a person sees and clicks in the Dagster UI.

Headless Chromium (Debian's ``/usr/bin/chromium``, see ``scripts/install_browser.sh``) driven
by Playwright against the ``dagster_ui`` server, in the order a new user goes: launch a folder
with clicks, read its partitions, its checks (the numbers in each result's description), run
the whole-dataset check, rerun a failed run from failure, backfill several folders; then load
the rest with ``msd-dagster load`` into the same instance and re-execute one of its failed runs
from the UI as if the UI had made it, see a folder that is not at the source refused by name,
and read the pages the README sends a user to (the warehouse group, the Catalog, the lineage).
Screenshots go to the pytest temporary folder; with ``MSD_UPDATE_SCREENSHOTS=1`` the ones the
README and docs/ui.md show are also written to ``docs/images/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from msd_dagster.defs.assets.profile import PROFILE_KEY
from msd_dagster.defs.check_names import ROWS_CHECK, TOTAL_TRACKS
from msd_dagster.defs.jobs import msd_totals_job
from msd_dagster.defs.sensors import msd_totals_after_loads
from msd_dagster.defs.tables import TABLE_ORDER
from msd_dagster.profile_report import PAGE_NAME
from msd_dagster_tests.graphql_queries import (
    ASSET_PARTITIONS,
    CHECK_EXECUTIONS,
    JOB_SNAPSHOT,
    MATERIALIZATIONS,
    NEWEST_BACKFILL,
    RUN_ORIGIN,
    RUNS,
    SENSOR_STATE,
)
from msd_dagster_tests.ui_fixtures import (
    ASSET_JOB,
    E2E_MARKS,
    LOCATION,
    NO_RETRIES,
    PARTITION_JOB,
    PARTITIONS,
    PARTITIONS_DEF,
    REPO_ROOT,
    REPOSITORY,
    DagsterUI,
)

pytestmark = E2E_MARKS

CHROMIUM = Path(os.environ.get("MSD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMAGES = REPO_ROOT / "docs" / "images"
UPDATE_DOCS = os.environ.get("MSD_UPDATE_SCREENSHOTS") == "1"
UI_PARTITION = "A/B"  # the partition materialized with clicks
BACKFILL_CLICKED = ["A/C", "B/A", "B/B", "B/C"]  # consecutive folders: one ranged run
CLI_FOLDER = "C/A"  # the folder whose msd-dagster load run fails and is re-executed
# Loaded by msd-dagster load with one worker: runs of two folders (B/B B/C, C/A C/B, C/C); in
# the second, CLI_FOLDER fails and its neighbour C/B loads.
CLI_FAILING_LOAD = ["B/B", "B/C", "C/A", "C/B", "C/C"]
CLI_FAILED_RANGE = ["C/A", "C/B"]
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
BOGUS = "Z/Q"  # a folder a typo registers: no such folder at the source
NOT_A_FOLDER = "Z/Z"  # never registered: a run for it changes no folder's status
STEP = "load_folders"  # the partition job's one step
GROUPS = ("raw", "normalized", "warehouse", "additional_files")
# What the run page says when it cannot vouch for the run's code location or job version.
LOCATION_WARNING = re.compile(r"different code location|may be (a )?different")
PLOTTED = ("missing_keys", "duplicate_keys", "unresolved_references")
PROFILE_FIGURES = 7  # songs per year, three histograms, terms, tags, locations

FOLDER_LINES = "tracks,"  # in each folder's summary log line, and in no other event
# Records, in the page, when each folder's summary log line ("A/B: 3 tracks, ...") is first
# shown (looked for every 0.1 s), by the browser's clock (the same machine's as the run's
# timestamps).
RECORD_FOLDER_ROWS = r"""
() => {
  window.msdFolderRows = {};
  setInterval(() => {
    for (const found of document.body.innerText.matchAll(/\b([A-Z]\/[A-Z]): \d+ tracks, /g)) {
      window.msdFolderRows[found[1]] ??= Date.now() / 1000;
    }
  }, 100);
}
"""


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium; the tests are skipped, with the reason, where it cannot start."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/install_browser.sh")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, dagster_ui: DagsterUI, ui_partitions: list[str]):
    context = browser.new_context(base_url=dagster_ui.url, viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture(scope="module")
def story() -> dict[str, Any]:
    return {}


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def new_run_id(ui: DagsterUI, partition: str, after: float, timeout: float = 60) -> str:
    """The one run of the partition job for ``partition`` created after ``after``."""
    tags = [{"key": "dagster/partition", "value": partition}]
    filter_ = {"pipelineName": PARTITION_JOB, "tags": tags, "createdAfter": after}
    deadline = time.monotonic() + timeout
    while True:
        runs = ui.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]
        if runs:
            assert len(runs) == 1, runs  # one click, one run
            return runs[0]["runId"]
        assert time.monotonic() < deadline, "no run was launched by the click"
        time.sleep(0.5)


def docs_shot(page, folder: Path, name: str, docs_name: str) -> Path:
    """A screenshot, also written to ``docs/images/<docs_name>`` with MSD_UPDATE_SCREENSHOTS=1."""
    page.wait_for_timeout(1500 if UPDATE_DOCS else 300)  # nodes and charts take their colours
    path = shot(page, folder, name)
    if UPDATE_DOCS:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        (DOCS_IMAGES / docs_name).write_bytes(path.read_bytes())
    return path


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def partition_keys(ui: DagsterUI) -> list[str]:
    node = ui.graphql(ASSET_PARTITIONS, {"key": {"path": ["warehouse", "msd_track"]}})
    return node["assetNodeOrError"]["partitionKeys"]


def load_selector(ui: DagsterUI) -> dict[str, Any]:
    """The implicit asset job's subset that the asset graph launches for the load's assets:
    every asset of load_folders and their checks (what the UI sends)."""
    from msd_dagster.definitions import folder_load_selection

    assets, checks = folder_load_selection()
    return {
        "pipelineName": ASSET_JOB,
        "repositoryName": REPOSITORY,
        "repositoryLocationName": LOCATION,
        "assetSelection": [{"path": key.path} for key in assets],
        "assetCheckSelection": [
            {"assetKey": {"path": key.asset_key.path}, "name": key.name} for key in checks
        ],
    }


def total_check_executions(ui: DagsterUI) -> list[dict[str, Any]]:
    """The whole-dataset check's latest executions, newest first."""
    variables = {"key": {"path": ["warehouse", "all_folders"]}, "check": TOTAL_TRACKS, "limit": 10}
    return ui.graphql(CHECK_EXECUTIONS, variables)["assetCheckExecutions"]


def wait_for_new_run(ui: DagsterUI, filter_: dict[str, Any], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while not (runs := ui.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]):
        assert time.monotonic() < deadline, f"no run matching {filter_}"
        time.sleep(0.5)
    [run] = runs
    return run["runId"]


def follow_run_page_live(
    page, ui: DagsterUI, run_id: str, folders: list[str], held, screenshots: Path, name: str
) -> None:
    """Open the run page while its step waits for the database (``held``, the write lock),
    release it, and without reloading see each folder's log line appear while the run is
    still going, then the step list end with the step succeeded."""
    # The run's log filtered (as typed into its Filter box) to the folders' summary lines, so
    # that every one of them is drawn as it comes (the log draws only the rows in view).
    page.goto(f"/runs/{run_id}?" + urlencode({"logs": FOLDER_LINES}))
    expect(page.get_by_text("Executing (1)", exact=True)).to_be_visible(timeout=120_000)
    page.evaluate(RECORD_FOLDER_ROWS)
    shot(page, screenshots, f"{name}-waiting")
    held.close()  # the loads go on
    # No reload from here on: what the page shows came over its subscription.
    expect(page.get_by_text("Succeeded (1)", exact=True)).to_be_visible(timeout=240_000)
    expect(page.get_by_text("Executing (0)", exact=True)).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=60_000)
    shot(page, screenshots, f"{name}-done")
    run = ui.run(run_id)
    assert run["status"] == "SUCCESS", run
    seen = page.evaluate("() => window.msdFolderRows")
    assert sorted(seen) == sorted(folders), seen
    # The first folder's line reached the page before the run ended, while the next folders
    # were loading: live, not after the fact. (The others follow it one by one; on a busy
    # machine the page may draw the last ones just after the run's end.)
    assert seen[folders[0]] < run["endTime"], (seen, run["endTime"])


def rerun_from_failure_with_clicks(
    page, ui: DagsterUI, failed_id: str, screenshots: Path, name: str
) -> dict[str, Any]:
    """docs/ui.md, "Rerun a failed run": the run page's Re-execute menu → From failure. The
    re-execution, once it has ended."""
    page.goto(f"/runs/{failed_id}")
    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    rerun_all = page.get_by_role("button", name=re.compile(r"^Re-execute all"))
    expect(rerun_all).to_be_visible()
    rerun_all.locator("xpath=following::button[1]").click()  # the menu beside it
    from_failure = page.get_by_text("From failure", exact=True)
    expect(from_failure).to_be_visible()
    shot(page, screenshots, name)
    from_failure.click()

    tags = [{"key": "dagster/parent_run_id", "value": failed_id}]
    deadline = time.monotonic() + 60
    while not (reruns := ui.graphql(RUNS, {"filter": {"tags": tags}})["runsOrError"]["results"]):
        assert time.monotonic() < deadline, "the click launched no re-execution"
        time.sleep(0.5)
    [rerun] = reruns
    done = ui.wait_for_run(rerun["runId"], timeout=150)
    # The run's one step, again: it loads the folder (the failed run committed nothing of it).
    assert done["status"] == "SUCCESS", done
    assert {s["stepKey"]: s["status"] for s in done["stepStats"]} == {STEP: "SUCCESS"}
    assert done["parentRunId"] == failed_id
    assert tags_of(done)["dagster/is_resume_retry"] == "true"
    return done


def test_materialize_a_partition_with_clicks(
    page, dagster_ui: DagsterUI, screenshots: Path, story: dict[str, Any]
):
    page.goto(f"/locations/{LOCATION}/jobs/{PARTITION_JOB}")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(re.compile(r"Launch runs to materialize \d+ assets"))).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has_text=UI_PARTITION).first.click()
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    shot(page, screenshots, "01-launch-dialog")
    clicked = time.time()
    launch.click()
    run_id = new_run_id(dagster_ui, UI_PARTITION, after=clicked - 5)
    story["ui_run"] = run_id
    shot(page, screenshots, "02-launched")

    run = dagster_ui.wait_for_run(run_id, timeout=150)
    story["ui_run_ended"] = time.time()
    assert run["status"] == "SUCCESS", run
    tags = tags_of(run)
    assert tags["dagster/partition"] == UI_PARTITION
    assert tags["msd/job"] == "partition"
    assert {s["stepKey"]: s["status"] for s in run["stepStats"]} == {STEP: "SUCCESS"}
    assert dagster_ui.partition_rows(UI_PARTITION) == dagster_ui.expected_rows(UI_PARTITION)

    # The run's page says so too.
    page.goto(f"/runs/{run_id}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text(run_id[:8]).first).to_be_visible()
    expect(page.get_by_text(f"partition: {UI_PARTITION}")).to_be_visible()
    shot(page, screenshots, "03-run")


def test_partitions_view_shows_materialized_partitions(
    page, dagster_ui: DagsterUI, screenshots: Path, story: dict[str, Any]
):
    page.goto("/assets/warehouse/msd_track?view=partitions")
    materialized = page.get_by_text(re.compile(r"^Materialized \(\d+\)$"))
    expect(materialized).to_be_visible()
    expect(page.get_by_text("Failed (0)", exact=True)).to_be_visible()
    for partition in PARTITIONS:
        expect(page.get_by_text(partition, exact=True).first).to_be_visible()
    # The count a person reads is the one the instance holds.
    node = dagster_ui.graphql(ASSET_PARTITIONS, {"key": {"path": ["warehouse", "msd_track"]}})
    done = node["assetNodeOrError"]["assetPartitionStatuses"]["materializedPartitions"]
    assert UI_PARTITION in done
    expect(materialized).to_have_text(f"Materialized ({len(done)})")
    shot(page, screenshots, "04-partitions")

    page.get_by_text(UI_PARTITION, exact=True).first.click()
    expect(page).to_have_url(re.compile(r"partition=A%2FB"))
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()
    ui_run = story.get("ui_run")
    if ui_run:  # the latest materialization is the run launched with clicks
        expect(page.get_by_text(ui_run[:8]).first).to_be_visible()
    row_count = page.get_by_role("row").filter(has_text="dagster/partition_row_count")
    expect(row_count).to_contain_text(str(dagster_ui.expected_rows(UI_PARTITION)["msd_track"]))
    shot(page, screenshots, "05-partition-detail")


def test_checks_tab_shows_check_results(page, dagster_ui: DagsterUI, screenshots: Path):
    page.goto("/assets/warehouse/msd_track?view=checks")
    expect(page.get_by_text("Checks (1)")).to_be_visible()  # the folder check
    rows = page.locator("[class*='checkRow']")
    expect(rows.filter(has_text=ROWS_CHECK)).to_contain_text("Succeeded")
    # Selected by default (Dagster takes the first by name): the blocking folder check.
    expect(page.locator("[class*='checkRowSelected']")).to_contain_text(ROWS_CHECK)
    expect(page.get_by_text("blocking", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^The folder's rows in the database"))).to_be_visible()
    expect(page.get_by_text("Passed").first).to_be_visible()
    # The latest result's numbers, as its description, without opening its metadata.
    expect(
        page.get_by_text(
            re.compile(
                r"^database (\d+) = frame \1 = files \1; missing 0, duplicates 0, "
                r"unresolved references 0$"
            )
        ).first
    ).to_be_visible()
    # Plotted: only numbers comparable across folders (each named once in the Metadata table
    # and once above its chart); the row counts are one JSON entry, not a chart.
    for label in PLOTTED:
        expect(page.get_by_text(label, exact=True)).to_have_count(2)
    expect(page.get_by_text("rows", exact=True)).to_have_count(1)
    expect(page.get_by_text("database_rows")).to_have_count(0)
    shot(page, screenshots, "06-checks")

    page.get_by_text("Execution history", exact=True).click()
    n = dagster_ui.expected_rows(UI_PARTITION)["msd_track"]
    history = page.get_by_role("row").filter(has_text=UI_PARTITION)
    expect(history.first).to_contain_text("Passed")
    expect(history.first).to_contain_text(f"database {n} = frame {n} = files {n}; missing 0")
    shot(page, screenshots, "07-check-history")


def test_whole_dataset_check_runs_from_its_execute_button(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    page.goto(f"/assets/warehouse/all_folders?view=checks&checkDetail={TOTAL_TRACKS}")
    expect(page.get_by_text("non-blocking", exact=True)).to_be_visible()
    execute = page.get_by_role("button", name="execute Execute", exact=True)
    expect(execute).to_be_enabled()
    clicked = time.time()
    execute.click()
    execution = None
    deadline = time.monotonic() + 120
    while execution is None or execution["status"] == "IN_PROGRESS":
        assert time.monotonic() < deadline, f"check not evaluated in time: {execution}"
        time.sleep(0.5)
        latest = total_check_executions(dagster_ui)
        if latest and latest[0]["timestamp"] >= clicked - 5:
            execution = latest[0]
    assert execution["status"] == "SUCCEEDED", execution
    metadata = {m["label"]: m.get("intValue") for m in execution["evaluation"]["metadataEntries"]}
    with dagster_ui.db() as db:
        tracks = db.execute("SELECT COUNT(*) FROM msd_track").fetchone()[0]
    assert metadata["tracks_in_database"] == metadata["valid_song_files"] == tracks
    # What a person then sees in the check's panel (reloaded rather than waiting for a poll).
    page.reload()
    row = page.locator("[class*='checkRow']").filter(has_text=TOTAL_TRACKS)
    expect(row).to_contain_text("Succeeded", timeout=30_000)
    expect(page.get_by_text("Passed").first).to_be_visible()
    expect(page.get_by_text("tracks_in_database").first).to_be_visible()
    shot(page, screenshots, "08-total-check")

    # The folder check cannot be executed on its own (it is evaluated by the load): Dagster
    # disables its button and says why on hover; docs/ui.md says so.
    page.goto(f"/assets/warehouse/msd_track?view=checks&checkDetail={ROWS_CHECK}")
    expect(page.locator("[class*='checkRowSelected']")).to_contain_text(ROWS_CHECK)
    execute = page.get_by_role("button", name="execute Execute", exact=True)
    expect(execute).to_be_disabled()
    execute.hover()
    expect(
        page.get_by_text("This check cannot execute without materializing the asset.").first
    ).to_be_visible()


def test_rerun_a_failed_partition_from_failure_with_clicks(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    """A run the UI made fails; fixed, it is re-executed from failure with clicks."""
    before = dagster_ui.expected_rows(UI_PARTITION)
    dagster_ui.refuse_track_inserts(UI_PARTITION, "e2e: the database refuses A/B")
    try:
        failed_id = dagster_ui.client.submit_job_execution(
            PARTITION_JOB, tags={"dagster/partition": UI_PARTITION}, run_config=NO_RETRIES
        )
        failed = dagster_ui.wait_for_run(failed_id, timeout=150)
        assert failed["status"] == "FAILURE", failed
    finally:
        dagster_ui.repair_database()  # the fix, made before the rerun

    # Why, on the run page: the step's failure (a dagster.Failure) reads first as its
    # description, naming the folder, the stage and the reason, with the failed folders as
    # metadata; and the folder's own line in the log, without a stack. (Dagster 1.13 prints
    # the stack of its own frames under the step failure; no code location can remove it.)
    reason = "A/B (load): IntegrityError: e2e: the database refuses A/B"
    page.goto(f"/runs/{failed_id}?" + urlencode({"logs": "failed"}))
    failure = page.get_by_text(f"Failure: 1 of 1 folder(s) failed: {reason}").first
    expect(failure).to_be_visible(timeout=60_000)  # after "Loading run logs…"
    expect(page.get_by_text("failed_folders", exact=True).first).to_be_visible()
    expect(
        page.get_by_text(
            re.compile(r"^A/B failed \(load\): IntegrityError: e2e: the database")
        ).first
    ).to_be_visible()
    shot(page, screenshots, "09-failed-run")
    done = rerun_from_failure_with_clicks(page, dagster_ui, failed_id, screenshots, "09-menu")
    assert tags_of(done)["dagster/partition"] == UI_PARTITION
    # Reloaded once, nothing duplicated.
    assert dagster_ui.partition_rows(UI_PARTITION) == before
    page.goto(f"/runs/{done['runId']}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    shot(page, screenshots, "10-rerun-succeeded")


@pytest.mark.timeout(600)
def test_backfill_from_the_warehouse_group_with_clicks(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    """docs/ui.md, "Backfill": the warehouse group's "Materialize all" (its tables; the external
    all_folders is left out), the other assets of the load added when asked, several folders →
    Launch backfill. Dagster runs it as one run over the range of consecutive folders, of the
    same job, snapshot and step as a run of msd-dagster load; its run page streams each folder
    while it goes."""
    targets = BACKFILL_CLICKED
    before = dagster_ui.graphql(NEWEST_BACKFILL)["partitionBackfillsOrError"]["results"]
    page.goto(f"/locations/{LOCATION}/asset-groups/warehouse")
    # The 12 tables of the group's 13 assets: all_folders is external, nothing materializes it.
    materialize = page.get_by_role("button", name="Materialize all (12)…")
    expect(materialize).to_be_enabled()
    materialize.click()
    # load_folders cannot be subset: the UI asks before adding its raw and normalized assets.
    confirm = page.get_by_role("dialog").filter(has_text="will also yield new materializations")
    expect(confirm).to_contain_text("raw / song_files")
    shot(page, screenshots, "11-additional-assets")
    confirm.get_by_role("button", name="Confirm").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog.get_by_text(re.compile(r"Launch runs to materialize 16 assets"))).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    # The dropdown renders only the rows in view (it scrolls a virtual list): its filter box
    # brings each folder up.
    search = page.get_by_placeholder("Filter partitions", exact=True)
    for partition in targets:
        search.fill(partition)
        page.get_by_role("menuitem").filter(has_text=partition).first.click()
    page.keyboard.press("Escape")
    expect(dialog.get_by_text(f"{len(targets)} partitions", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch backfill")
    expect(launch).to_be_enabled()
    shot(page, screenshots, "12-backfill-dialog")
    with contextlib.ExitStack() as held:
        held.enter_context(dagster_ui.writes_held())  # the run waits at its first write
        launch.click()
        deadline = time.monotonic() + 60
        while True:
            newest = dagster_ui.graphql(NEWEST_BACKFILL)["partitionBackfillsOrError"]["results"]
            if newest and newest != before:
                backfill_id = newest[0]["id"]
                break
            assert time.monotonic() < deadline, "the click launched no backfill"
            time.sleep(0.5)
        tags = [{"key": "dagster/backfill", "value": backfill_id}]
        run_id = wait_for_new_run(dagster_ui, {"tags": tags}, timeout=120)
        follow_run_page_live(
            page, dagster_ui, run_id, targets, held, screenshots, "13-backfill-run"
        )

    backfill = dagster_ui.wait_for_backfill(backfill_id, timeout=240)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert sorted(backfill["partitionNames"]) == targets
    [run] = backfill["runs"]  # an asset backfill: no per-partition table, one ranged run
    assert run["runId"] == run_id and run["status"] == "SUCCESS", run
    tags = tags_of(run)
    assert (tags[RANGE_START], tags[RANGE_END]) == (targets[0], targets[-1])
    # The run shape of msd-dagster load's runs (test below): the asset job's subset of the
    # load's assets and checks, one step.
    job = dagster_ui.graphql(JOB_SNAPSHOT, {"selector": load_selector(dagster_ui)})
    assert dagster_ui.run_shape(run["runId"]) == (
        ASSET_JOB,
        job["pipelineOrError"]["pipelineSnapshotId"],
        {STEP: "SUCCESS"},
    )
    for partition in targets:
        assert dagster_ui.partition_rows(partition) == dagster_ui.expected_rows(partition)
    page.goto("/runs/b/" + backfill_id)
    expect(page.get_by_text(backfill_id).first).to_be_visible()
    shot(page, screenshots, "14-backfill")


def origin_less_failed_run(ui: DagsterUI) -> str:
    """A failed run created without the code location's origin, as ``msd-dagster load`` once
    created its runs: the run page must warn about it (the control of the next test)."""
    import dagster as dg

    from msd_dagster.definitions import partition_job

    with dg.DagsterInstance.from_config(str(ui.home)) as instance:
        run = instance.create_run_for_job(
            job_def=partition_job(), tags={"dagster/partition": NOT_A_FOLDER}
        )
        instance.report_run_failed(run, "e2e: a run without the location's origin")
    return run.run_id


@pytest.mark.timeout(600)
def test_a_failed_cli_run_is_reexecuted_from_failure_like_a_ui_run(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    """``msd-dagster load`` into the UI's instance: its runs are the code location's own
    (origin and job snapshot), so "From failure" works on them with no code-location warning,
    and the folder ends up with exactly its rows."""
    others = [p for p in PARTITIONS if p != CLI_FOLDER]
    loaded = dagster_ui.cli_load(
        "--partition", *others, "--workers", "2", "--skip-additional-files"
    )
    output = loaded.stdout + loaded.stderr
    assert loaded.returncode == 0, output
    assert f"loaded {len(others)} of {len(others)} folder(s)" in loaded.stdout
    # The instance has the recommended configuration: nothing to warn about.
    assert "No dagster instance configuration file" not in output
    assert "does not use msd-dagster's instance storage" not in output
    for folder in others:
        assert dagster_ui.partition_rows(folder) == dagster_ui.expected_rows(folder), folder

    # A load whose second run (two folders) fails on one of them, its page followed live.
    dagster_ui.refuse_track_inserts(CLI_FOLDER, "e2e: the database refuses C/A")
    try:
        with contextlib.ExitStack() as held:
            held.enter_context(dagster_ui.writes_held())  # its first run waits at its first write
            started = time.time()
            load = dagster_ui.cli_load_started(
                "--partition", *CLI_FAILING_LOAD, "--workers", "1", "--skip-additional-files"
            )
            try:
                first_run = wait_for_new_run(
                    dagster_ui,
                    {
                        "tags": [
                            {"key": "msd/launched_by", "value": "cli"},
                            {"key": RANGE_START, "value": CLI_FAILING_LOAD[0]},
                        ],
                        "createdAfter": started,  # not the earlier load's B/B run
                    },
                )
                follow_run_page_live(
                    page,
                    dagster_ui,
                    first_run,
                    CLI_FAILING_LOAD[:2],
                    held,
                    screenshots,
                    "15-cli-run",
                )
                output, _ = load.communicate(timeout=240)
            finally:
                if load.poll() is None:
                    load.kill()
                    load.wait()
    finally:
        dagster_ui.repair_database()  # the fix, made before the rerun
    assert load.returncode == 1, output
    assert f"{CLI_FOLDER}: FAILED" in output
    tags = [
        {"key": "msd/launched_by", "value": "cli"},
        {"key": RANGE_START, "value": CLI_FAILED_RANGE[0]},
        {"key": RANGE_END, "value": CLI_FAILED_RANGE[-1]},
    ]
    # This load's own run: earlier tests on the same server may have loaded the same range.
    filter_ = {"pipelineName": ASSET_JOB, "tags": tags, "createdAfter": started}
    [cli_run] = dagster_ui.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]
    failed_id = cli_run["runId"]
    assert dagster_ui.run(failed_id)["status"] == "FAILURE"

    # What the UI compares: the run's origin and snapshot with the loaded job's. The job is the
    # implicit asset job's subset that the asset graph launches for the load's assets.
    origin = dagster_ui.graphql(RUN_ORIGIN, {"runId": failed_id})["runOrError"]
    job = dagster_ui.graphql(JOB_SNAPSHOT, {"selector": load_selector(dagster_ui)})[
        "pipelineOrError"
    ]
    assert origin["repositoryOrigin"] == {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
    }
    assert origin["pipelineSnapshotId"] == job["pipelineSnapshotId"]

    # The control: a run without the location's origin gets the warning icon and tooltip.
    control = origin_less_failed_run(dagster_ui)
    page.goto(f"/runs/{control}")
    warned = page.get_by_role("button", name=re.compile(r"Re-execute all"))
    expect(warned.get_by_role("img", name="warning")).to_be_visible()
    warned.hover()
    expect(page.get_by_text(LOCATION_WARNING).first).to_be_visible()

    # The CLI's run: no icon, no tooltip.
    page.goto(f"/runs/{failed_id}")
    expect(page.get_by_text("e2e: the database refuses C/A").first).to_be_visible()
    shot(page, screenshots, "16-cli-failed-run")
    rerun_all = page.get_by_role("button", name=re.compile(r"^Re-execute all"))
    expect(rerun_all).to_have_text("Re-execute all (*)")
    expect(rerun_all.get_by_role("img")).to_have_count(0)
    rerun_all.hover()
    page.wait_for_timeout(1500)  # longer than the tooltip took to show on the control
    expect(page.get_by_text(LOCATION_WARNING)).to_have_count(0)
    shot(page, screenshots, "17-cli-run")

    done = rerun_from_failure_with_clicks(page, dagster_ui, failed_id, screenshots, "18-menu")
    assert (tags_of(done)[RANGE_START], tags_of(done)[RANGE_END]) == tuple(CLI_FAILED_RANGE)
    for folder in CLI_FAILED_RANGE:
        assert dagster_ui.partition_rows(folder) == dagster_ui.expected_rows(folder)
    node = dagster_ui.graphql(ASSET_PARTITIONS, {"key": {"path": ["warehouse", "msd_track"]}})
    done_folders = node["assetNodeOrError"]["assetPartitionStatuses"]["materializedPartitions"]
    assert sorted(done_folders) == sorted(PARTITIONS)

    # The rerun skipped C/B (loaded by the failed run) and recorded its passed results again:
    # the group page shows every table's check passed, none "Skipped".
    page.set_viewport_size({"width": 1400, "height": 6000})  # the graph draws nodes in view
    page.goto(f"/locations/{LOCATION}/asset-groups/warehouse")
    page.wait_for_timeout(1500)  # the nodes are placed, then drawn
    shot(page, screenshots, "19-group-after-rerun")
    for table in TABLE_ORDER:  # each node's "Asset checks" row links to the table's checks
        badge = page.locator(f"a[href$='/assets/warehouse/{table}?view=checks']")
        expect(badge).to_have_text(re.compile(r"1 / 1 Passed$"), timeout=30_000)
    # all_folders' whole-dataset check may still show the failed load's result (C/A missing):
    # the totals sensor evaluates it again after the rerun, at most once a minute.
    totals = page.locator("a[href$='/assets/warehouse/all_folders?view=checks']")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        expect(totals).to_have_text(re.compile(r"Passed$"), timeout=30_000)  # drawn
        if totals.inner_text().strip().startswith("1 / 1"):
            break
        page.wait_for_timeout(10_000)
        page.reload()
    expect(page.get_by_text(re.compile(r"0 / 1 Passed"))).to_have_count(0)


def test_a_folder_that_is_not_at_the_source_is_refused_by_name(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    """A typo in the Materialize dialog's "Add a partition" registers a folder that does not
    exist; its run fails at once, saying so on the run page; the folder is deleted again from
    an asset's menu."""
    page.goto(f"/locations/{LOCATION}/jobs/{PARTITION_JOB}")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Add a partition").click()
    add = page.get_by_role("dialog").filter(has_text=f"Add a partition for {PARTITIONS_DEF}")
    add.get_by_role("textbox").fill(BOGUS)
    add.get_by_role("button", name="Save").click()
    expect(add).to_have_count(0)
    page.wait_for_timeout(1000)
    # Dagster selects the new key itself, except when its list of keys reloads at that moment.
    if not dialog.get_by_text("1 partition", exact=True).is_visible():
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_role("menuitem").filter(has_text=BOGUS).first.click()
        page.keyboard.press("Escape")  # closes the partition list, not the dialog
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    clicked = time.time()
    dialog.get_by_role("button", name="Launch 1 run").click()
    run_id = new_run_id(dagster_ui, BOGUS, after=clicked - 5)
    run = dagster_ui.wait_for_run(run_id, timeout=150)
    assert run["status"] == "FAILURE", run
    assert BOGUS in partition_keys(dagster_ui)

    page.goto(f"/runs/{run_id}")
    reason = re.compile(rf"{BOGUS} \(list\): SourceError: data/{BOGUS}/: no song files at .*")
    expect(page.get_by_text(reason).first).to_be_visible()
    expect(page.get_by_text("not a folder of this dataset").first).to_be_visible()
    shot(page, screenshots, "15-not-a-folder")

    # Asset page → the menu beside Materialize → Delete partitions.
    page.goto("/assets/warehouse/msd_track")
    page.get_by_role("button", name="arrow_drop_down").first.click()
    page.get_by_role("menuitem", name="Delete partitions").click()
    delete = page.get_by_role("dialog").filter(has_text=f"Delete {PARTITIONS_DEF} partitions")
    delete.get_by_text("Select a partition").click()
    page.get_by_role("menuitem").filter(has_text=BOGUS).first.click()
    delete.get_by_text("Select partition keys").click()  # closes the list, not the dialog
    delete.get_by_role("button", name="Delete 1 partition").click()
    deadline = time.monotonic() + 30
    while BOGUS in (keys := partition_keys(dagster_ui)):
        assert time.monotonic() < deadline, "the click deleted no partition"
        time.sleep(0.5)
    assert keys == list(PARTITIONS)


def test_check_history_reads_the_numbers_of_every_folder(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    page.goto(f"/assets/warehouse/msd_bar?view=checks&checkDetail={ROWS_CHECK}")
    page.get_by_text("Execution history", exact=True).click()
    for folder in PARTITIONS:
        n = f"{dagster_ui.expected_rows(folder)['msd_bar']:,}"
        latest = page.get_by_role("row").filter(has_text=folder).first  # newest first
        expect(latest).to_contain_text("Passed")
        expect(latest).to_contain_text(
            f"database {n} = frame {n} = files {n}; missing 0, duplicates 0, "
            "unresolved references 0"
        )
    docs_shot(page, screenshots, "16-check-history", "check-history.png")


def test_warehouse_group_page_is_the_entry_point(page, dagster_ui: DagsterUI, screenshots: Path):
    """The page the README sends a user to first: every table with its checks, partitions
    and kind."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"/locations/{LOCATION}/asset-groups/warehouse")
    # The graph draws the nodes in view only: a few tables, each with these rows.
    expect(page.get_by_text("100% filled").first).to_be_visible(timeout=60_000)  # "Loading..."
    expect(page.get_by_text(re.compile(r"^1 / 1 Passed$")).first).to_be_visible()
    expect(page.get_by_text("SQL", exact=True).first).to_be_visible()
    expect(page.get_by_text("10 partitions").first).to_be_visible()
    docs_shot(page, screenshots, "17-warehouse-group", "warehouse-group.png")

    page.goto(f"/locations/{LOCATION}/asset-groups/warehouse/list")  # its List tab
    for table in TABLE_ORDER:  # a slash ends a regex in Playwright's selector: escaped
        link = page.get_by_role("link", name=re.compile(rf"^warehouse \/ {table}\b"))
        expect(link.first).to_be_visible()


def test_catalog_filtered_to_the_warehouse(page, dagster_ui: DagsterUI, screenshots: Path):
    page.goto("/assets?" + urlencode({"asset-selection": "group:warehouse"}))
    for table in TABLE_ORDER:
        link = page.get_by_role("link", name=re.compile(rf"^warehouse \/ {table}\b"))
        expect(link.first).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(r"^additional_files \/ "))).to_have_count(0)
    shot(page, screenshots, "18-catalog-warehouse")
    # Unfiltered, the optional AdditionalFiles assets come first (by key) and say what they are.
    page.goto("/assets")
    expect(page.get_by_text(re.compile(r"^additional_files \/ artists$")).first).to_be_visible()
    optional = page.get_by_text(re.compile(r"^Optional: only for a dataset with AdditionalFiles"))
    expect(optional.first).to_be_visible()


def test_totals_sensor_runs_by_default_and_follows_the_loads(
    dagster_ui: DagsterUI, story: dict[str, Any]
):
    selector = {
        "repositoryName": REPOSITORY,
        "repositoryLocationName": LOCATION,
        "sensorName": msd_totals_after_loads.name,
    }
    state = dagster_ui.graphql(SENSOR_STATE, {"selector": selector})["sensorOrError"]
    assert state["sensorState"]["status"] == "RUNNING"
    if "ui_run_ended" not in story:
        pytest.skip("the clicked run did not succeed (see its test)")
    tags = [{"key": "dagster/sensor_name", "value": msd_totals_after_loads.name}]
    filter_ = {"pipelineName": msd_totals_job.name, "tags": tags}
    deadline = time.monotonic() + 150  # a tick at most every 60 s
    while True:
        runs = dagster_ui.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]
        finished = [dagster_ui.run(r["runId"]) for r in runs]
        if any(r["status"] == "SUCCESS" for r in finished):
            break
        assert time.monotonic() < deadline, f"no totals run from the sensor: {finished}"
        time.sleep(2)
    by_sensor = {r["runId"] for r in finished if r["status"] == "SUCCESS"}
    results = [e for e in total_check_executions(dagster_ui) if e["runId"] in by_sensor]
    assert results and all(e["status"] == "SUCCEEDED" for e in results), results


def test_asset_graph_shows_the_four_groups(page, screenshots: Path):
    page.set_viewport_size({"width": 1400, "height": 1300})
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    page.goto("/asset-groups?" + urlencode({"expanded": expanded}))
    expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="zoom_out")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(2000)  # the graph's layout is drawn after its toolbar
    # Opened at a fixed zoom around the middle (which of the five groups shows there depends
    # on the layout): three steps out show the whole graph.
    for _ in range(3):
        page.get_by_role("button", name="zoom_out").click()
        page.wait_for_timeout(300)
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    for asset in ("song_files", "songs", "genres", "msd_track", "msd_segment", "msd_artist"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    docs_shot(page, screenshots, "19-asset-graph", "asset-graph.png")


def latest_materialization(ui: DagsterUI, key: list[str]) -> dict[str, Any] | None:
    found = ui.graphql(MATERIALIZATIONS, {"key": {"path": key}, "limit": 1})["assetOrError"]
    records = found.get("assetMaterializations") or []
    return records[0] if records else None


def test_the_dataset_profile_is_materialized_with_a_click_and_shows_its_plots(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    """The profile asset's page: Materialize, then its Markdown metadata shows every plot."""
    with dagster_ui.db() as db:
        loaded = db.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'msd_track'"
        ).fetchone()[0]
    if not loaded:  # this test alone: load one folder first (the load profiles it too)
        done = dagster_ui.cli_load("--partition", "A/A")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "dataset profile: " in done.stdout
    key = list(PROFILE_KEY.path)
    before = latest_materialization(dagster_ui, key)
    page.goto(f"/assets/{'/'.join(key)}")
    page.get_by_role("button", name=re.compile(r"Materialize$")).click()  # icon + text
    deadline = time.monotonic() + 120
    while (latest := latest_materialization(dagster_ui, key)) in (None, before):
        assert time.monotonic() < deadline, "the click materialized nothing"
        time.sleep(1)
    assert dagster_ui.run(latest["runId"])["status"] in ("STARTED", "SUCCESS")
    assert (dagster_ui.root / "msd_home" / "profile" / PAGE_NAME).is_file()

    page.reload()
    page.get_by_text("[Show Markdown]").first.click()
    images = page.locator('[role="dialog"] img[src^="data:image/png;base64,"]')
    expect(images).to_have_count(PROFILE_FIGURES)
    expect(images.first).to_be_visible()
    widths = images.evaluate_all("images => images.map(image => image.naturalWidth)")
    assert all(width >= 400 for width in widths), widths  # decoded by the browser
    heading = page.get_by_role("heading", name="Songs per year")
    heading.scroll_into_view_if_needed()  # the dialog opens scrolled to its Close button
    expect(heading).to_be_visible()
    docs_shot(page, screenshots, "20-dataset-profile", "profile.png")
