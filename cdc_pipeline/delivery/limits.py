"""How far one micro-batch may read: rows, bytes of change-log data, seconds."""

from __future__ import annotations

from dataclasses import dataclass

from cdc_pipeline.config.models import BatchConfig


@dataclass(frozen=True)
class BatchLimits:
    max_rows: int
    max_bytes: int
    max_seconds: float

    @classmethod
    def from_config(cls, config: BatchConfig, max_rows: int | None = None) -> BatchLimits:
        """The config's limits; `max_rows` (a run's own setting) overrides the row limit."""
        return cls(max_rows or config.max_rows, config.max_bytes, config.max_seconds)
