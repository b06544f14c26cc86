"""How current each sink is, measured by the runs that write it and read by the freshness check.

A replication run knows, after each batch, up to when the source's history is in each sink: the
time its read began when the batch reached the log's end (everything committed before then is
in), else the commit time of the batch's last transaction. It keeps that per source and sink in the
Dagster instance's key-value store: one small row per sink, overwritten at most twice a second, not
an event per batch (the event log would grow with every batch). The measured lag is now minus that
time; if the run dies, the value stops moving and the lag grows, which is what the check must see.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import dagster as dg

_KEY_PREFIX = "cdc_pipeline/applied_through"
_MIN_WRITE_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True)
class SinkProgress:
    applied_through: float  # epoch seconds: every source change committed before it is in the sink
    checkpoint: str
    recorded_at: float

    def lag_seconds(self, now: float) -> float:
        return max(0.0, now - self.applied_through)


def _key(source_name: str, sink_name: str) -> str:
    return f"{_KEY_PREFIX}/{source_name}/{sink_name}"


def read_progress(instance: dg.DagsterInstance, source_name: str, sink_name: str) -> SinkProgress | None:
    key = _key(source_name, sink_name)
    raw = instance.run_storage.get_cursor_values({key}).get(key)
    if raw is None:
        return None
    values = json.loads(raw)
    return SinkProgress(float(values["applied_through"]), str(values["checkpoint"]), float(values["recorded_at"]))


class ProgressRecorder:
    """Writes each sink's progress, at most twice a second per sink (and always when asked to flush)."""

    def __init__(self, instance: dg.DagsterInstance, source_name: str) -> None:
        self._instance = instance
        self._source_name = source_name
        self._pending: dict[str, SinkProgress] = {}
        self._written_at: dict[str, float] = {}

    def record(self, sink_name: str, applied_through: float, checkpoint: str) -> None:
        now = time.time()
        previous = self._pending.get(sink_name)
        if previous is not None and previous.applied_through > applied_through:
            return  # a replayed older batch never makes a sink look less current
        self._pending[sink_name] = SinkProgress(applied_through, checkpoint, now)
        if now - self._written_at.get(sink_name, 0.0) >= _MIN_WRITE_INTERVAL_SECONDS:
            self._write([sink_name], now)

    def flush(self) -> None:
        self._write(list(self._pending), time.time())

    def _write(self, sink_names: list[str], now: float) -> None:
        pairs = {}
        for name in sink_names:
            progress = self._pending[name]
            pairs[_key(self._source_name, name)] = json.dumps(
                {"applied_through": progress.applied_through, "checkpoint": progress.checkpoint, "recorded_at": now}
            )
            self._written_at[name] = now
        if pairs:
            self._instance.run_storage.set_cursor_values(pairs)
