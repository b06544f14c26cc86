"""Cassandra's cell-level change metadata (write times, TTLs, deletions) <-> JSON for the DLQ.

A cell change only lands correctly with its write times: the sinks merge it cell by cell, newest
write winning. So a dead letter of a Cassandra table keeps them beside its (masked) values, and a
replay re-merges the change exactly as streaming would have. Only changes rejected after masking
carry them: a range deletion's bounds are key values, which are masked by then.
"""

from __future__ import annotations

from typing import Any

from cdc_pipeline.core.cells import CellChange, CellWrite, ClusteringBound, RangeDeletion
from cdc_pipeline.core.value_codec import decode_value, encode_value


def _write(write: CellWrite | None) -> list[int | None] | None:
    return None if write is None else [write.timestamp, write.expires_at]


def _read_write(raw: list[int | None] | None) -> CellWrite | None:
    if raw is None:
        return None
    timestamp, expires_at = raw
    assert timestamp is not None
    return CellWrite(timestamp, expires_at)


def _bound(bound: ClusteringBound) -> dict[str, Any]:
    return {"values": [encode_value(v) for v in bound.values], "inclusive": bound.inclusive}


def _read_bound(raw: dict[str, Any]) -> ClusteringBound:
    return ClusteringBound(tuple(decode_value(v) for v in raw["values"]), bool(raw["inclusive"]))


def encode_cell_change(change: CellChange) -> dict[str, Any]:
    return {
        "cells": {name: _write(write) for name, write in change.cells.items()},
        "liveness": _write(change.liveness),
        "row_deletion": change.row_deletion,
        "partition_deletion": change.partition_deletion,
        "range_deletions": [
            {"start": _bound(r.start), "end": _bound(r.end), "timestamp": r.timestamp} for r in change.range_deletions
        ],
    }


def decode_cell_change(raw: dict[str, Any]) -> CellChange:
    cells = {name: _read_write(write) for name, write in raw["cells"].items()}
    return CellChange(
        cells={name: write for name, write in cells.items() if write is not None},
        liveness=_read_write(raw["liveness"]),
        row_deletion=raw["row_deletion"],
        partition_deletion=raw["partition_deletion"],
        range_deletions=tuple(
            RangeDeletion(_read_bound(r["start"]), _read_bound(r["end"]), int(r["timestamp"]))
            for r in raw["range_deletions"]
        ),
    )
