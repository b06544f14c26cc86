"""The embedded ClickHouse path is served to one process at a time: a second one waits, then fails clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdc_pipeline.config.loading import PipelineConfigError, parse_pipeline_config
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.mapping.mapper import MappedBatch
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition

# Holds the path until its stdin closes.
HOLD = """
import sys
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
sink = ClickHouseSink("warehouse", sys.argv[1], "db")  # chdb keeps the path while the client lives
sink.checkpoint("shop")
print("holding", flush=True)
sys.stdin.read()
"""
# Opens the path, waiting at most argv[2] seconds for it.
OPEN = """
import sys
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
ClickHouseSink("warehouse", sys.argv[1], "db", busy_timeout_seconds=float(sys.argv[2])).checkpoint("shop")
print("opened", flush=True)
"""


def _hold(dsn: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, dsn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=60)


def test_a_busy_path_fails_after_the_timeout_with_a_clear_error(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    holder = _hold(dsn)
    try:
        second = subprocess.run([sys.executable, "-c", OPEN, dsn, "1"], capture_output=True, text=True, timeout=120)
    finally:
        _release(holder)
    assert second.returncode != 0
    assert "ClickHouseSinkUnavailable: sink 'warehouse': the embedded ClickHouse at" in second.stderr
    assert str(tmp_path / "chdb") in second.stderr and "stayed busy for 1s" in second.stderr


def test_a_busy_path_is_waited_for_until_the_other_process_lets_go(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    holder = _hold(dsn)
    waiting = subprocess.Popen(
        [sys.executable, "-c", OPEN, dsn, "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Release the path only once the second process has found it busy and says it waits.
        assert waiting.stderr is not None
        lines = iter(waiting.stderr.readline, "")  # the engine prints its own complaint first
        assert any("is busy in another process; waiting up to 120s" in line for line in lines)
        _release(holder)
        out, _ = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
    assert waiting.returncode == 0 and out.strip() == "opened"


def test_two_embedded_paths_in_one_pipeline_are_refused() -> None:
    text = """
sources: {shop: {}}
sinks:
  a: {kind: clickhouse, dsn: "chdb:///data/one"}
  b: {kind: clickhouse, dsn: "chdb:///data/two"}
dlq: {dsn_env: DLQ_DSN}
"""
    with pytest.raises(
        PipelineConfigError, match=r"one chdb path .*sinks\.a\.dsn='/data/one', sinks\.b\.dsn='/data/two'"
    ):
        parse_pipeline_config(text)


def test_the_newest_checkpoint_is_current_when_versions_do_not_follow_the_log(chdb_dsn: str, worker_name: str) -> None:
    # A Cassandra checkpoint's version floor is 0 at every position: the order of the rows decides.
    # (The worker's one chdb path, a database of the test's own.)
    sink = ClickHouseSink("warehouse", chdb_dsn, f"checkpoints_{worker_name}")
    segment = 1_733_580_000_000
    for offset in (100, 200, 300, 400):
        sink.adopt_checkpoint("events", Checkpoint(CommitLogPosition(segment, offset)))  # the first only
        sink.write(MappedBatch("warehouse", "events", *_moved(segment, offset), None), lambda rejections: None)
    assert sink.checkpoint("events") == Checkpoint(CommitLogPosition(segment, 500))


def _moved(segment: int, offset: int) -> tuple[Checkpoint, Checkpoint]:
    return Checkpoint(CommitLogPosition(segment, offset)), Checkpoint(CommitLogPosition(segment, offset + 100))
