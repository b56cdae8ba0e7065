"""End to end in a real browser: what a person sees and clicks in the Dagster UI.

Headless Chromium (Debian's ``/usr/bin/chromium``, see ``scripts/install_browser.sh``) driven
by Playwright against the ``dagster_ui`` server: launch a partition run with clicks, then read
the partitions view, the checks tab and the asset graph. Screenshots go to the pytest temporary
folder; with ``MSD_UPDATE_SCREENSHOTS=1`` the asset graph is also saved to
``docs/images/asset-graph.png`` (shown in the README).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from msd_dagster.defs.assets.folders import ROWS_CHECK
from msd_dagster.defs.checks import TOTAL_TRACKS
from msd_dagster_tests.ui_fixtures import (
    E2E_MARKS,
    LOCATION,
    NO_RETRIES,
    PARTITION_JOB,
    PARTITIONS,
    REPO_ROOT,
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
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "images" / "asset-graph.png"
UI_PARTITION = "A/B"  # the partition materialized with clicks
BACKFILL_CLICKED = ["B/A", "B/B", "B/C"]  # consecutive folders: one ranged run
STEP = "load_folders"  # the partition job's one step
GROUPS = ("raw", "normalized", "warehouse")

NEWEST_BACKFILL = """
query { partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id } } } }
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId } } }
}
"""
MATERIALIZED = """
query Materialized($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } }
    }
  }
}
"""
TOTAL_CHECK = f"""
query Total($key: AssetKeyInput!) {{
  assetCheckExecutions(assetKey: $key, checkName: "{TOTAL_TRACKS}", limit: 1) {{
    runId
    status
    timestamp
    evaluation {{ success metadataEntries {{ label ... on IntMetadataEntry {{ intValue }} }} }}
  }}
}}
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
    assert run["status"] == "SUCCESS", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
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
    node = dagster_ui.graphql(MATERIALIZED, {"key": {"path": ["warehouse", "msd_track"]}})
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
    expect(page.get_by_text("Checks (2)")).to_be_visible()  # the folder check and the total
    rows = page.locator("[class*='checkRow']")
    expect(rows.filter(has_text=ROWS_CHECK)).to_contain_text("Succeeded")
    expect(rows.filter(has_text=TOTAL_TRACKS)).to_be_visible()
    shot(page, screenshots, "06-checks")

    rows.filter(has_text=ROWS_CHECK).click()
    expect(page).to_have_url(re.compile(f"checkDetail={ROWS_CHECK}"))
    expect(page.get_by_text("blocking", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^The folder's rows in the database"))).to_be_visible()
    expect(page.get_by_text("Passed").first).to_be_visible()
    page.get_by_text("Execution history", exact=True).click()
    history = page.get_by_role("row").filter(has_text=UI_PARTITION)
    expect(history.first).to_contain_text("Passed")
    shot(page, screenshots, "07-check-history")


def test_whole_dataset_check_runs_from_its_execute_button(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    page.goto(f"/assets/warehouse/msd_track?view=checks&checkDetail={TOTAL_TRACKS}")
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
        found = dagster_ui.graphql(TOTAL_CHECK, {"key": {"path": ["warehouse", "msd_track"]}})
        latest = found["assetCheckExecutions"]
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


def test_asset_graph_shows_the_pipeline(page, screenshots: Path):
    # Tall enough for the expanded groups to fit when the graph centers itself.
    page.set_viewport_size({"width": 1200, "height": 1300})
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    page.goto("/asset-groups?" + urlencode({"expanded": expanded}))
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    for asset in ("song_files", "songs", "genres", "msd_track", "msd_segment", "msd_artist"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    update_docs = os.environ.get("MSD_UPDATE_SCREENSHOTS") == "1"
    page.wait_for_timeout(1500 if update_docs else 300)  # the nodes take their status colours
    path = shot(page, screenshots, "09-asset-graph")
    if update_docs:
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        DOCS_SCREENSHOT.write_bytes(path.read_bytes())


def test_rerun_a_failed_partition_from_failure_with_clicks(
    page, dagster_ui: DagsterUI, screenshots: Path
):
    """README, "Rerun a failed partition": the run page's Re-execute menu → From failure."""
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

    page.goto(f"/runs/{failed_id}")
    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    expect(page.get_by_text("e2e: the database refuses A/B").first).to_be_visible()
    rerun_all = page.get_by_role("button", name=re.compile(r"^Re-execute all"))
    expect(rerun_all).to_be_visible()
    rerun_all.locator("xpath=following::button[1]").click()  # the menu beside it
    from_failure = page.get_by_text("From failure", exact=True)
    expect(from_failure).to_be_visible()
    shot(page, screenshots, "09-rerun-menu")
    from_failure.click()

    tags = [{"key": "dagster/parent_run_id", "value": failed_id}]
    deadline = time.monotonic() + 60
    while not (
        reruns := dagster_ui.graphql(RUNS, {"filter": {"tags": tags}})["runsOrError"]["results"]
    ):
        assert time.monotonic() < deadline, "the click launched no re-execution"
        time.sleep(0.5)
    [rerun] = reruns
    done = dagster_ui.wait_for_run(rerun["runId"], timeout=150)
    assert done["status"] == "SUCCESS", done
    # The run's one step, again: it loads the folder (the failed run loaded nothing).
    assert {s["stepKey"]: s["status"] for s in done["stepStats"]} == {STEP: "SUCCESS"}
    tags = {t["key"]: t["value"] for t in done["tags"]}
    assert tags["dagster/partition"] == UI_PARTITION
    assert tags["dagster/is_resume_retry"] == "true"
    # Reloaded once, nothing duplicated.
    assert dagster_ui.partition_rows(UI_PARTITION) == before
    page.goto(f"/runs/{rerun['runId']}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    shot(page, screenshots, "10-rerun-succeeded")


def test_backfill_partitions_with_clicks(page, dagster_ui: DagsterUI, screenshots: Path):
    """README, "Backfill": the job's Materialize dialog with several folders → Launch backfill,
    which Dagster runs as one run over the range of consecutive folders."""
    targets = BACKFILL_CLICKED
    before = dagster_ui.graphql(NEWEST_BACKFILL)["partitionBackfillsOrError"]["results"]
    page.goto(f"/locations/{LOCATION}/jobs/{PARTITION_JOB}")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    for partition in targets:
        page.get_by_role("menuitem").filter(has_text=partition).first.click()
    page.keyboard.press("Escape")
    expect(dialog.get_by_text(f"{len(targets)} partitions", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch backfill")
    expect(launch).to_be_enabled()
    shot(page, screenshots, "11-backfill-dialog")
    launch.click()

    deadline = time.monotonic() + 60
    while True:
        newest = dagster_ui.graphql(NEWEST_BACKFILL)["partitionBackfillsOrError"]["results"]
        if newest and newest != before:
            backfill_id = newest[0]["id"]
            break
        assert time.monotonic() < deadline, "the click launched no backfill"
        time.sleep(0.5)
    backfill = dagster_ui.wait_for_backfill(backfill_id, timeout=240)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert sorted(backfill["partitionNames"]) == targets
    results = backfill["partitionStatuses"]["results"]
    assert sorted(r["partitionName"] for r in results) == targets
    assert all(r["runStatus"] == "SUCCESS" for r in results), results
    [run] = backfill["runs"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == targets[0]
    assert tags["dagster/asset_partition_range_end"] == targets[-1]
    assert {r["runId"] for r in results} == {run["runId"]}
    for partition in targets:
        assert dagster_ui.partition_rows(partition) == dagster_ui.expected_rows(partition)
    page.goto("/runs/b/" + backfill_id)
    expect(page.get_by_text(backfill_id).first).to_be_visible()
    shot(page, screenshots, "12-backfill")
