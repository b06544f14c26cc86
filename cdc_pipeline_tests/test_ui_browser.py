"""The initial load as a user runs it: a backfill launched from the Dagster UI in a real browser.

`dagster dev` (webserver and daemon) serves this project's code location; headless Chromium opens the
asset graph, then the table's snapshot asset, launches a backfill over all its key-range partitions, and
the daemon runs the chunks in run subprocesses. Screenshots land in pytest's tmp_path, and also in
$CDC_UI_SCREENSHOT_DIR when set (that is how docs/ui/*.png are refreshed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.snapshots.jobs import plan_snapshot_job_name
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline_tests.dagster_ui import (
    Browser,
    DagsterUi,
    dagster_dev,
    headless_chromium,
    prepare_dagster_home,
    wait_until,
    xpath_literal,
)
from cdc_pipeline_tests.harness import SOURCE, PipelineHarness, assert_same_rows

ROWS = 3000
CHUNK_ROWS = 1000
CHUNKS = 3
BACKFILL_TIMEOUT = 180  # seconds; chunk runs start processes of their own on a machine shared with other tests

BACKFILL_QUERY = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions error { message } }
    ... on PythonError { message }
  }
}
"""
PARTITION_STATS_QUERY = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
}
"""
PARTITION_KEYS_QUERY = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeysByDimension { partitionKeys } } }
}
"""
BACKFILL_RUNS_QUERY = """
query ($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    __typename
    ... on Runs { results { runId status } }
  }
}
"""


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Belt and braces: the driver's path is given, so Selenium Manager is never consulted; were it ever
    # run, it must not try to download a browser or a driver.
    monkeypatch.setenv("SE_OFFLINE", "true")
    with headless_chromium(tmp_path / "screenshots") as browser:
        yield browser
    target = os.environ.get("CDC_UI_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        # Not the page a failed wait left behind (timeout.png): only what the test meant to show.
        for screenshot in (tmp_path / "screenshots").glob("*.png"):
            if screenshot.name.startswith("timeout"):
                continue
            shutil.copy2(screenshot, Path(target) / screenshot.name)


def _plan_with_the_cli(env: dict[str, str], table: str, work_dir: Path) -> None:
    """Register the key-range chunks as the snapshot asset's partitions in the instance dagster dev serves.

    In a subprocess, as a user would: the plan adopts the handoff into the ClickHouse sink, and chdb lets
    only one process open its path (the run processes of the UI will need it next).
    """
    run_config = work_dir / "plan.yaml"
    run_config.write_text(
        yaml.safe_dump({"ops": {f"plan_snapshot_{SOURCE}_op": {"config": {"table": table, "chunk_rows": CHUNK_ROWS}}}})
    )
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [str(dagster), "job", "execute", "-m", "cdc_pipeline.definitions", "-j", plan_snapshot_job_name(SOURCE)]
        + ["-c", str(run_config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def _backfill_finished(ui: DagsterUi, backfill_id: str) -> dict[str, Any] | None:
    backfill = ui.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill", backfill
    if backfill["status"] in ("REQUESTED", "CANCELING", "FAILING"):
        return None
    return dict(backfill)


def _partition_keys(ui: DagsterUi, asset_path: Sequence[str]) -> list[str]:
    node = ui.graphql(PARTITION_KEYS_QUERY, {"path": list(asset_path)})["assetNodeOrError"]
    return [key for dimension in node["partitionKeysByDimension"] for key in dimension["partitionKeys"]]


def _screenshot_the_asset_graph(browser: Browser, ui: DagsterUi, expected_asset: str) -> None:
    """The global asset graph with every group open, top to bottom, fitted to the window."""
    browser.open(f"{ui.url}/asset-groups")
    browser.find_text("snapshots")
    # The graph's settings menu (the gear below the zoom slider) holds both layout switches.
    browser.click_icon_button("settings")
    browser.click_text("Expand all groups")
    browser.find_text(expected_asset)
    browser.click_icon_button("settings")
    browser.click_text("Change graph to vertical orientation")
    # Both settings persist (URL and local storage); the first render after a reload fits the whole graph.
    browser.driver.refresh()
    browser.find_text(expected_asset)
    browser.wait_until_gone("//*[@aria-label='loading']", "the asset nodes to load")
    browser.screenshot("asset_graph.png")


def _partition_stats(ui: DagsterUi, asset_path: Sequence[str]) -> dict[str, int]:
    node = ui.graphql(PARTITION_STATS_QUERY, {"path": list(asset_path)})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    return dict(node["partitionStats"])


def test_a_backfill_launched_from_the_ui_loads_the_table_into_every_sink(
    harness: PipelineHarness, browser: Browser, tmp_path: Path
) -> None:
    # Runs execute in subprocesses of the daemon: the chdb path must be theirs alone.
    harness.use_private_clickhouse()
    table = f"{harness.database}.orders"
    harness.configure_source(tables={"include": [table]})
    harness.source_execute(
        "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2), note VARCHAR(40), placed DATETIME(6))",
        *[
            "INSERT INTO orders VALUES "
            + ", ".join(
                f"({i}, {i}.75, 'order {i}', '2024-05-{1 + i % 28:02d} 10:{i % 60:02d}:00.{i:06d}')"
                for i in range(start, start + 500)
            )
            for start in range(1, ROWS + 1, 500)
        ],
    )
    dagster_home = prepare_dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "CDC_PIPELINE_CONFIG": str(harness.write_config_file()), "DAGSTER_HOME": str(dagster_home)}
    _plan_with_the_cli(env, table, tmp_path)

    asset_key = snapshot_asset_key(SOURCE, table)
    with dagster_dev(
        dagster_home=dagster_home, env=env, module="cdc_pipeline.definitions", log_path=tmp_path / "dagster_dev.log"
    ) as ui:
        assert _partition_stats(ui, asset_key.path)["numPartitions"] == CHUNKS

        _screenshot_the_asset_graph(browser, ui, expected_asset=asset_key.path[-1])

        # The snapshot asset's page: its "Materialize…" button opens the partition dialog, where "All"
        # selects every chunk and "Launch backfill" hands the backfill to the daemon.
        asset_url = f"{ui.url}/assets/{'/'.join(asset_key.path)}"
        browser.open(asset_url)
        browser.click_button("Materialize…")
        dialog = "//*[@role='dialog']"
        browser.find_text_containing("Launch runs to materialize", within=dialog)
        browser.click_button("All", within=dialog)
        browser.find_text(f"{CHUNKS} partitions", within=dialog)
        browser.click_button("Launch backfill", within=dialog)
        toast = browser.find_text_containing("Created backfill")
        backfill_id = toast.text.removeprefix("Created backfill").split()[0]

        backfill = wait_until(
            lambda: _backfill_finished(ui, backfill_id), BACKFILL_TIMEOUT, f"backfill {backfill_id} to finish"
        )
        runs = ui.graphql(BACKFILL_RUNS_QUERY, {"id": backfill_id})["runsOrError"]["results"]
        assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, runs, ui.log_tail())
        assert [run["status"] for run in runs] == ["SUCCESS"] * CHUNKS, runs
        stats = _partition_stats(ui, asset_key.path)
        assert stats == {"numMaterialized": CHUNKS, "numPartitions": CHUNKS, "numFailed": 0, "numMaterializing": 0}

        # The partition grid is the load's progress bar: all chunks green, one chunk's metadata open.
        browser.open(f"{asset_url}?view=partitions")
        browser.find_text(f"Materialized ({CHUNKS})")
        middle = sorted(_partition_keys(ui, asset_key.path), key=lambda key: Chunk.parse(key).index)[1]
        browser.click(f"//*[@title={xpath_literal(middle)}]", f"partition {middle}")
        browser.find_text(f"{CHUNK_ROWS + 1} .. {2 * CHUNK_ROWS}")  # its key_range metadata
        browser.screenshot("backfill_done.png")
    # Every process dagster dev started has ended, none of them needing SIGKILL.
    assert ui.alive_after_shutdown == [] and ui.killed_at_shutdown == [], ui

    # The UI and its runs have stopped: chdb's path is free for the read (in a subprocess, as harness does).
    source = harness.source_rows("orders")
    assert len(source) == ROWS
    assert_same_rows(harness.postgres_rows("orders"), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("orders"), source, "ClickHouse")
    assert harness.dead_letters() == []
