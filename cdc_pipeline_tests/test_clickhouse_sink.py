"""The embedded ClickHouse sink, when another process holds its path, fails with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLD = """
import sys
from cdc_pipeline.sinks.clickhouse_sink import ClickHouseSink
sink = ClickHouseSink("warehouse", sys.argv[1], "db")  # chdb keeps the path while the client lives
sink.checkpoint("shop")
print("holding", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""
OPEN = """
import sys
from cdc_pipeline.sinks.clickhouse_sink import ClickHouseSink
ClickHouseSink("warehouse", sys.argv[1], "db").checkpoint("shop")
"""


def test_a_chdb_path_held_by_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, dsn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        second = subprocess.run([sys.executable, "-c", OPEN, dsn], capture_output=True, text=True, timeout=120)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert second.returncode != 0
    assert "ClickHouseSinkUnavailable: sink 'warehouse': the embedded ClickHouse at" in second.stderr
    assert str(tmp_path / "chdb") in second.stderr and "one process at a time" in second.stderr
