"""The embedded default as a user meets it: `dagster dev` and a backfill launched from the UI, in a browser.

`dagster dev` (webserver and daemon) serves the embedded default's code location, whose sensors start
running with it; headless Chromium opens the asset graph, then a table's snapshot asset, launches a
backfill over all its key-range partitions, and the daemon runs the chunks in run subprocesses.
Screenshots land in pytest's tmp_path, and also in $CDC_UI_SCREENSHOT_DIR when set (that is how
docs/ui/*.png are refreshed).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.snapshots.jobs import plan_snapshot_job_name
from cdc_pipeline.embedded.environment import POSTGRES_SINK, REPLICA_SCHEMA, SOURCE_NAME, EmbeddedEnvironment
from cdc_pipeline.embedded.shop import SCHEMA as SHOP_SCHEMA
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline_tests.dagster_ui import (
    Browser,
    DagsterUi,
    dagster_dev,
    headless_chromium,
    prepare_dagster_home,
    xpath_literal,
)
from cdc_pipeline_tests.harness import read_clickhouse_rows_from
from cdc_pipeline_tests.polling import wait_until

EMBEDDED_LOCATION = "cdc_pipeline.embedded.definitions"
CHUNKS = 3  # 150 customers of the shop's history, 50 per chunk
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
    ... on Runs { results { runId status startTime endTime } }
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


def _dagster_cli(env: dict[str, str], *arguments: str) -> None:
    """`dagster job execute` on the embedded code location, in a process of its own, as a user would."""
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [str(dagster), "job", "execute", "-m", EMBEDDED_LOCATION, *arguments],
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
    browser.choose_from_menu("settings", "Expand all groups")
    browser.find_text(expected_asset)
    browser.choose_from_menu("settings", "Change graph to vertical orientation")
    # Both settings persist (URL and local storage); the first render after a reload fits the whole graph.
    browser.driver.refresh()
    browser.find_text(expected_asset)
    browser.wait_until_gone("//*[@aria-label='loading']", "the asset nodes to load")
    browser.screenshot("asset_graph.png")


def _partition_stats(ui: DagsterUi, asset_path: Sequence[str]) -> dict[str, int]:
    node = ui.graphql(PARTITION_STATS_QUERY, {"path": list(asset_path)})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    return dict(node["partitionStats"])


def _most_at_once(runs: list[dict[str, Any]]) -> int:
    """The largest number of runs that were running at the same moment."""
    edges = sorted([(run["startTime"], 1) for run in runs] + [(run["endTime"], -1) for run in runs])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def _runs_of(ui: DagsterUi, job: str, status: str) -> list[dict[str, Any]]:
    query = (
        "query ($job: String!, $status: [RunStatus!]) { runsOrError(filter: {pipelineName: $job, statuses: $status})"
    )
    query += " { ... on Runs { results { runId status } } } }"
    return list(ui.graphql(query, {"job": job, "status": [status]})["runsOrError"]["results"])


def _materializations(ui: DagsterUi, path: list[str]) -> int:
    query = "query ($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {"
    query += " assetMaterializations(limit: 10) { timestamp } } } }"
    asset = ui.graphql(query, {"path": path})["assetOrError"]
    return len(asset.get("assetMaterializations") or [])


def _customers_at(server_dir: Path, database: str, query: str) -> list[tuple[Any, ...]]:
    server = LocalPostgres(server_dir, keep_data=True).start()
    try:
        with closing(psycopg2.connect(server.dsn(database))) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            return [tuple(row) for row in cursor.fetchall()]
    finally:
        server.stop()


def test_the_embedded_default_streams_in_the_ui_and_a_backfill_launched_there_loads_a_table(
    browser: Browser, tmp_path: Path
) -> None:
    data_dir = tmp_path / "embedded"
    dagster_home = prepare_dagster_home(tmp_path / "dagster_home")
    # The embedded location sets its own variables; none of the test session's may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "DAGSTER_"))}
    env |= {"CDC_EMBEDDED_DATA": str(data_dir), "DAGSTER_HOME": str(dagster_home)}
    table = f"{SHOP_SCHEMA}.customers"
    asset_key = snapshot_asset_key(SOURCE_NAME, table)
    plan_config = tmp_path / "plan.yaml"
    plan_config.write_text(
        yaml.safe_dump({"ops": {f"plan_snapshot_{SOURCE_NAME}_op": {"config": {"table": table, "chunk_rows": 50}}}})
    )
    try:
        # The first import of the location creates the shop with its history (150 customers), then the
        # slot; the plan records the handoff and registers the key-range chunks as partitions.
        _dagster_cli(env, "-j", plan_snapshot_job_name(SOURCE_NAME), "-c", str(plan_config))
        with dagster_dev(
            dagster_home=dagster_home,
            env=env,
            module=EMBEDDED_LOCATION,
            log_path=tmp_path / "dagster_dev.log",
            after_stop=lambda: EmbeddedEnvironment.shut_down(data_dir),
        ) as ui:
            assert _partition_stats(ui, asset_key.path)["numPartitions"] == CHUNKS
            _screenshot_the_asset_graph(browser, ui, expected_asset=asset_key.path[-1])

            # The snapshot asset's page: "Materialize…" opens the partition dialog, where "All" selects
            # every chunk and "Launch backfill" hands the backfill to the daemon.
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
            # dagster.yaml lets two chunks of one backfill load at once.
            assert _most_at_once(runs) <= 2, runs
            stats = _partition_stats(ui, asset_key.path)
            assert stats == {"numMaterialized": CHUNKS, "numPartitions": CHUNKS, "numFailed": 0, "numMaterializing": 0}

            # Meanwhile the sensors that start with the location keep the shop changing and stream it: one
            # long-lived run, which let the backfill's chunks have the chdb path and was started again.
            wait_until(lambda: _runs_of(ui, "simulate_shop_activity", "SUCCESS"), 120, "a shop activity run")
            wait_until(lambda: _runs_of(ui, f"stream_{SOURCE_NAME}", "STARTED"), 120, "a streaming run")
            wait_until(
                lambda: _materializations(ui, [POSTGRES_SINK, f"{SHOP_SCHEMA}__orders"]) >= 2,
                120,
                "the orders table to materialize from the stream",
            )
            assert not _runs_of(ui, f"stream_{SOURCE_NAME}", "FAILURE"), ui.log_tail()

            # A sink table's metadata over its batches (rows, lag, DLQ count), as Dagster plots it.
            browser.open(f"{ui.url}/assets/{POSTGRES_SINK}/{SHOP_SCHEMA}__orders")
            browser.click_button("Plots")
            plot_title = browser.find_text("lag_seconds")
            browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", plot_title)
            browser.screenshot("sink_table_plots.png")

            # The partition grid is the load's progress bar: all chunks green, one chunk's metadata open.
            browser.open(f"{asset_url}?view=partitions")
            browser.find_text(f"Materialized ({CHUNKS})")
            middle = sorted(_partition_keys(ui, asset_key.path), key=lambda key: Chunk.parse(key).index)[1]
            browser.click(f"//*[@title={xpath_literal(middle)}]", f"partition {middle}")
            browser.find_text_containing(" .. ")  # its key_range metadata
            browser.screenshot("backfill_done.png")
        # Every process dagster dev started has ended, none of them needing SIGKILL.
        assert ui.alive_after_shutdown == [] and ui.killed_at_shutdown == [], ui

        # Catch up with the last activity, then: every customer, history and new, in both sinks.
        _dagster_cli(env, "-j", f"replicate_{SOURCE_NAME}")
        query = "SELECT id, created_at FROM {} ORDER BY id"
        source = _customers_at(data_dir / "source-postgres" / "data", "shop", query.format("shop.customers"))
        in_postgres = _customers_at(
            data_dir / "sink-postgres" / "data", "analytics", query.format(f"{REPLICA_SCHEMA}.shop__customers_current")
        )
        assert len(source) > 150 and in_postgres == source
        in_clickhouse = read_clickhouse_rows_from(
            True, f"chdb://{data_dir / 'chdb'}", REPLICA_SCHEMA, table, {"id": "int", "created_at": "timestamp"}, "id"
        )
        assert [(row["id"], row["created_at"]) for row in in_clickhouse] == [
            (row[0], row[1].astimezone(dt.UTC).replace(tzinfo=None)) for row in source
        ]
    finally:
        EmbeddedEnvironment.shut_down(data_dir)
