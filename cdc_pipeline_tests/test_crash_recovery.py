"""kill -9 the replicating process at each step of a batch; a restart must converge exactly."""

from __future__ import annotations

import signal
from pathlib import Path

from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, SOURCE, PipelineHarness, assert_same_rows, run_replication_cli

# In the order a batch reaches them.
CRASH_POINTS = [
    "after_read",
    "postgres_mid_write",
    "postgres_before_commit",
    f"after_sink_{PG_SINK}",
    "clickhouse_mid_write",
    "clickhouse_before_checkpoint",
    f"after_sink_{CH_SINK}",
]


def apply_workload(harness: PipelineHarness, round_number: int) -> None:
    base = round_number * 100
    harness.source_execute(
        "BEGIN",
        *[f"INSERT INTO accounts VALUES ({base + i}, 'acct {base + i} 😀', {i}.25)" for i in range(20)],
        "COMMIT",
        f"UPDATE accounts SET balance = balance * 2, name = CONCAT(name, ' upd') WHERE id % 3 = 0 AND id >= {base}",
        f"UPDATE accounts SET id = id + 50 WHERE id = {base + 1}",  # a primary-key move
        f"DELETE FROM accounts WHERE id = {base + 2}",
        "BEGIN",
        *[f"INSERT INTO ledger VALUES ('r{round_number}', {i}, {i * 7}.125)" for i in range(10)],
        f"DELETE FROM ledger WHERE region = 'r{round_number}' AND seq = 3",
        f"UPDATE ledger SET amount = -amount WHERE region = 'r{round_number}' AND seq > 5",
        "COMMIT",
    )


def assert_sinks_equal_source(harness: PipelineHarness) -> None:
    for table, key in (("accounts", "id"), ("ledger", "seq")):
        source = sorted(harness.source_rows(table, key), key=lambda r: tuple(map(str, r.values())))
        for where, rows in (
            ("ClickHouse", harness.clickhouse_rows(table, key)),
            ("PostgreSQL", harness.postgres_rows(table, key)),
        ):
            assert_same_rows(sorted(rows, key=lambda r: tuple(map(str, r.values()))), source, f"{where} {table}")


def test_kill_9_at_every_step_of_a_batch_then_restart_converges(harness: PipelineHarness, tmp_path: Path) -> None:
    harness.use_private_clickhouse()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    harness.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(64), balance DECIMAL(20,4))",
        "CREATE TABLE ledger (region VARCHAR(8), seq INT, amount DECIMAL(12,3), PRIMARY KEY (region, seq))",
    )
    for round_number, crash_at in enumerate(CRASH_POINTS):
        apply_workload(harness, round_number)
        crashed = run_replication_cli(harness.write_config_file(), dagster_home, SOURCE, crash_at)
        assert crashed.returncode == -signal.SIGKILL, f"{crash_at}: {crashed.returncode}\n{crashed.stderr[-3000:]}"
        restarted = run_replication_cli(harness.write_config_file(), dagster_home, SOURCE)
        assert restarted.returncode == 0, restarted.stderr[-3000:]
        assert_sinks_equal_source(harness)
