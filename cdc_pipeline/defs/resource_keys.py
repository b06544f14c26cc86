"""The resource keys the definitions use, derived from the names in the pipeline config."""

from __future__ import annotations

DEAD_LETTER_QUEUE = "dead_letter_queue"
MASKING = "masking"


def source_key(source_name: str) -> str:
    return f"source_{source_name}"


def sink_key(sink_name: str) -> str:
    return f"sink_{sink_name}"
