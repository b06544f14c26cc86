"""How much WAL the server keeps for the replication slot, and where each sink's checkpoint stands.

The slot holds the WAL from its restart_lsn on, unless `max_slot_wal_keep_size` (-1: unlimited)
caps it: once the slot would hold more, `wal_status` turns 'unreserved' and the next checkpoint
may remove that WAL and invalidate the slot ('lost'). `safe_wal_size` is how much more WAL the
server can write before that (NULL when unlimited).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.retention import RetentionStatus, SinkRetention
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber, lsn_of
from cdc_pipeline.sources.postgres.replication_slot import ReplicationSlot


@dataclass(frozen=True)
class SlotRetention:
    """The slot's row in pg_replication_slots (None fields: NULL there), and the server's WAL limits."""

    exists: bool
    wal_status: str | None
    safe_wal_size: int | None
    restart_lsn: LogSequenceNumber | None
    confirmed_flush_lsn: LogSequenceNumber | None
    invalidation_reason: str | None
    keep_size_bytes: int | None  # max_slot_wal_keep_size; None: unlimited
    flush_lsn: LogSequenceNumber
    oldest_wal: LogSequenceNumber | None  # start of the oldest WAL segment on disk, if the role may list them

    @property
    def lost(self) -> bool:
        return self.exists and self.wal_status == "lost"


def _lsn(text: str | None) -> LogSequenceNumber | None:
    return LogSequenceNumber.parse(text) if text is not None else None


def slot_retention(slot: ReplicationSlot) -> SlotRetention:
    def read(cursor: psycopg2.extensions.cursor) -> tuple[Any, ...]:
        cursor.execute(
            "SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'),"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
            " pg_current_wal_flush_lsn()::text"
        )
        keep_mb, segment_size, flush = cursor.fetchone()
        # invalidation_reason exists from PostgreSQL 17 on; to_jsonb leaves it out on older servers.
        cursor.execute(
            "SELECT wal_status, safe_wal_size, restart_lsn::text, confirmed_flush_lsn::text,"
            " to_jsonb(s) ->> 'invalidation_reason' FROM pg_replication_slots s WHERE slot_name = %s",
            (slot.name,),
        )
        row = cursor.fetchone()
        oldest_wal = None
        cursor.execute("SELECT has_function_privilege('pg_ls_waldir()', 'EXECUTE')")
        if cursor.fetchone()[0]:
            cursor.execute(r"SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
            name = cursor.fetchone()[0]
            if name is not None:
                # A segment file is named timeline, log and segment number, 8 hex digits each.
                oldest_wal = LogSequenceNumber((int(name[8:16], 16) << 32) + int(name[16:24], 16) * int(segment_size))
        return keep_mb, segment_size, flush, row, oldest_wal

    keep_mb, segment_size, flush, row, oldest_wal = slot.connection.run(read)
    keep = int(keep_mb) * 1024 * 1024 if int(keep_mb) >= 0 else None
    if row is None:
        return SlotRetention(False, None, None, None, None, None, keep, LogSequenceNumber.parse(flush), oldest_wal)
    wal_status, safe, restart, confirmed, reason = row
    return SlotRetention(
        True,
        wal_status,
        int(safe) if safe is not None else None,
        _lsn(restart),
        _lsn(confirmed),
        reason,
        keep,
        LogSequenceNumber.parse(flush),
        oldest_wal,
    )


def wal_retention(
    source_name: str, slot: ReplicationSlot, checkpoints: Mapping[str, Checkpoint | None]
) -> RetentionStatus:
    state = slot_retention(slot)
    oldest_kept = state.restart_lsn or state.oldest_wal
    log: dict[str, int | float | str] = {
        "slot": slot.name,
        "wal_status": state.wal_status or ("missing" if not state.exists else "unknown"),
        "max_slot_wal_keep_size": state.keep_size_bytes if state.keep_size_bytes is not None else "unlimited",
        "wal_flush_lsn": str(state.flush_lsn),
    }
    if state.safe_wal_size is not None:
        log["safe_wal_size"] = state.safe_wal_size
    if state.invalidation_reason:
        log["invalidation_reason"] = state.invalidation_reason
    percent_used = None
    if state.keep_size_bytes and state.safe_wal_size is not None:
        # safe_wal_size is what remains of the keep size; what the slot holds is the rest. The server
        # counts in whole segments, so safe_wal_size can exceed the limit by part of a segment: not below 0.
        percent_used = max(0.0, round(100 * (1 - state.safe_wal_size / state.keep_size_bytes), 1))
    at_risk = None
    if state.wal_status == "unreserved":
        at_risk = "wal_status is 'unreserved': the next checkpoint may remove WAL the slot needs"
    sinks: dict[str, SinkRetention] = {}
    for sink, checkpoint in checkpoints.items():
        position = lsn_of(checkpoint.position) if checkpoint is not None else state.confirmed_flush_lsn
        text = str(checkpoint) if checkpoint is not None else None
        if position is None:
            sinks[sink] = SinkRetention(sink, text)  # no position yet, or not a WAL position (refused at resume)
            continue
        lost = lost_range(state, position) if checkpoint is not None else None
        sinks[sink] = SinkRetention(
            sink,
            text,
            lost=lost,
            bytes_left=state.safe_wal_size,
            percent_used=percent_used,
            bytes_behind=max(0, state.flush_lsn.value - position.value),
            at_risk=at_risk,
        )
    return RetentionStatus(source_name, str(oldest_kept) if oldest_kept else "none", log, sinks)


def lost_range(state: SlotRetention, checkpoint: LogSequenceNumber) -> str | None:
    """The WAL after `checkpoint` that is gone for the pipeline, or None while the slot still holds it."""
    if not state.exists:
        return f"{checkpoint} up to the new slot (replication slot missing)"
    if state.lost:
        kept = f"the oldest WAL kept ({state.oldest_wal})" if state.oldest_wal else "the WAL the server still keeps"
        return f"{checkpoint} up to {kept}"
    if state.confirmed_flush_lsn is not None and checkpoint < state.confirmed_flush_lsn:
        # The slot moved past the checkpoint (recreated, or advanced by someone else): decoding from
        # it would silently skip the changes in between.
        return f"{checkpoint} up to {state.confirmed_flush_lsn} (the slot's position)"
    return None
