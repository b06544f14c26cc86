"""The steps of delivering a batch: read the sinks' checkpoints, deliver (map -> write -> record what
was refused -> checkpoint) into each sink, release the log they all passed.

Replication runs, initial-load chunks and DLQ replays all write through `deliver`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cdc_pipeline.config.models import SinkOutageConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.sinks.availability import SinkUnavailable
from cdc_pipeline.sinks.base import Sink, WriteResult
from cdc_pipeline.sources.change_source import ChangeSource


@dataclass
class SinkDelivery:
    """What one sink did with a batch (the rows themselves are not kept: a loop must not hold two batches)."""

    sink: str
    mapped_tables: list[str]
    mapped_rows: int
    mapped_rejections: list[Rejection]
    result: WriteResult | None = None
    # None: the sink took the batch; else why it could not (it stays at its checkpoint).
    unavailable: str | None = None
    attempts: int = 0
    map_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def rejections(self) -> list[Rejection]:
        """Everything of this batch that went to the DLQ for this sink (map and write stages)."""
        return [*self.mapped_rejections, *(self.result.rejections if self.result else [])]

    @classmethod
    def not_written(cls, sink: str, reason: str) -> SinkDelivery:
        """The sink could not be asked (its checkpoint was unreadable): it gets nothing this batch."""
        return cls(sink, [], 0, [], unavailable=reason)


@dataclass
class ReleaseOutcome:
    released: bool
    # Sinks whose checkpoint could not be read: the log is kept until they answer.
    unreadable: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int | str] = field(default_factory=dict)


def read_checkpoints(
    source_name: str, sinks: Mapping[str, Sink]
) -> tuple[dict[str, Checkpoint | None], dict[str, str]]:
    """Each reachable sink's checkpoint (None: it has none yet), and why the others cannot say."""
    checkpoints: dict[str, Checkpoint | None] = {}
    unreachable: dict[str, str] = {}
    for name, sink in sinks.items():
        try:
            checkpoints[name] = sink.checkpoint(source_name)
        except SinkUnavailable as down:
            unreachable[name] = down.reason
    return checkpoints, unreachable


def deliver(
    sink: Sink,
    mapper: TypeMapper,
    batch: ChangeBatch,
    record_rejections: Callable[[list[Rejection]], object],
    outages: SinkOutageConfig,
    warn: Callable[[str], None],
    advance_checkpoint: bool = True,
) -> SinkDelivery:
    """Map a masked batch for `sink` and write it; what the map or the sink refuses goes to
    `record_rejections` before the sink's checkpoint moves past it.

    Every write of the pipeline goes through here: replication batches (which advance the
    checkpoint), initial-load slices and DLQ replays (which never do). A sink that is down is tried
    `outages.write_attempts` times with doubling waits, then left at its checkpoint: the delivery
    says why, and the other sinks are not held up."""
    started = time.perf_counter()
    mapped = mapper.map_batch(batch)
    delivery = SinkDelivery(sink.name, list(mapped.tables), mapped.row_count, mapped.rejections)
    delivery.map_seconds = time.perf_counter() - started

    def record_with_map_rejections(rejections: list[Rejection]) -> None:
        # Map-stage rejections are stored with the write-stage ones, in the sink's write, before
        # its checkpoint moves.
        record_rejections([*mapped.rejections, *rejections])

    delay = outages.first_retry_delay_seconds
    started = time.perf_counter()
    for attempt in range(1, outages.write_attempts + 1):
        delivery.attempts = attempt
        try:
            delivery.result = sink.write(mapped, record_with_map_rejections, advance_checkpoint=advance_checkpoint)
            break
        except SinkUnavailable as down:
            if attempt == outages.write_attempts:
                delivery.unavailable = down.reason
                break
            warn(f"{down} (try {attempt} of {outages.write_attempts}); trying again in {delay:g} s")
            time.sleep(delay)
            delay *= 2
    delivery.write_seconds = time.perf_counter() - started
    if delivery.unavailable is None and advance_checkpoint:
        crash_point(f"after_sink_{sink.name}")
    return delivery


def release_log(
    source_name: str,
    source: ChangeSource,
    sinks: Mapping[str, Sink],
    written: Mapping[str, Checkpoint | None] | None = None,
) -> ReleaseOutcome:
    """After every sink wrote: let the source free the log they all passed (never while one cannot
    say where it is). `written`: every sink's checkpoint as its write just left it, when all wrote."""
    unreadable: dict[str, str] = {}
    if written is not None and written.keys() == sinks.keys():
        checkpoints = dict(written)
    else:
        checkpoints, unreadable = read_checkpoints(source_name, sinks)
    crash_point(f"before_release_{source_name}")
    if not unreadable:
        source.release(checkpoints)
    return ReleaseOutcome(released=not unreadable, unreadable=unreadable, usage=source.log_usage())


def listed(reasons: Mapping[str, str]) -> str:
    return "; ".join(f"'{name}' ({reason})" for name, reason in sorted(reasons.items()))
