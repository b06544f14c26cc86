"""The streaming job: bounded batches in one run, kill -9 anywhere across batches, the sensor's choices."""

from __future__ import annotations

import signal
from pathlib import Path

import dagster as dg

from cdc_pipeline_tests.harness import SOURCE, PipelineHarness, run_replication_cli
from cdc_pipeline_tests.test_crash_recovery import CRASH_POINTS, apply_workload, assert_sinks_equal_source


def _stream_summary(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    outputs = [event for event in result.all_events if event.event_type_value == "STEP_OUTPUT"]
    assert len(outputs) == 1
    return {key: value.value for key, value in outputs[0].step_output_data.metadata.items()}


def _create_tables(harness: PipelineHarness) -> None:
    harness.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(64), balance DECIMAL(20,4))",
        "CREATE TABLE ledger (region VARCHAR(8), seq INT, amount DECIMAL(12,3), PRIMARY KEY (region, seq))",
    )


def test_one_run_drains_the_backlog_in_bounded_batches(harness: PipelineHarness) -> None:
    _create_tables(harness)
    for round_number in range(4):
        apply_workload(harness, round_number)
    harness.extra_config["batch"] = {"max_rows": 10}
    result = harness.stream()
    assert_sinks_equal_source(harness)
    summary = _stream_summary(result)
    assert summary["ended"] == "caught up"
    # 4 rounds of 4 transactions of more than 10 rows, plus single-row ones: cut into many batches.
    assert int(summary["batches"]) >= 8, summary


def test_kill_9_across_batches_of_one_streaming_run_converges(harness: PipelineHarness, tmp_path: Path) -> None:
    """Small batches, so the run delivers some before dying at the point's 3rd hit; the next run resumes."""
    harness.use_private_clickhouse()
    harness.extra_config["batch"] = {"max_rows": 8}
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    _create_tables(harness)
    config = harness.write_config_file()
    for round_number, crash_at in enumerate([*CRASH_POINTS, f"before_release_{SOURCE}"]):
        apply_workload(harness, round_number)
        apply_workload(harness, round_number + 50)
        # Each run resumes from where the last one died, then dies at its own point.
        crashed = run_replication_cli(config, dagster_home, SOURCE, crash_at, streaming=True, crash_on_hit=3)
        assert crashed.returncode == -signal.SIGKILL, f"{crash_at}: {crashed.returncode}\n{crashed.stderr[-3000:]}"
    restarted = run_replication_cli(config, dagster_home, SOURCE, streaming=True)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert_sinks_equal_source(harness)


def test_stream_run_records_measured_lag_for_the_freshness_check(harness: PipelineHarness) -> None:
    _create_tables(harness)
    apply_workload(harness, 0)
    instance = dg.DagsterInstance.ephemeral()
    harness.stream(instance=instance)
    assert_sinks_equal_source(harness)
