"""One source's replication into all its sinks, a batch at a time, with everything kept open between batches.

The source object (its catalog and decoders), the sinks (the chdb session, the schema state they
learned), the DLQ store, the masker and the type mappers live as long as the session: a loop of
batches pays for them once. A batch is read from the smallest checkpoint of the sinks asked, fanned
out into them in parallel (fan_out.py), and the log they all passed is released. A sink that is
down rests (it is not asked again for a while, with a doubling pause) and catches up from its own
checkpoint when it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.core.gc_pause import cyclic_gc_paused
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.delivery.fan_out import SinkFanOut
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.steps import ReleaseOutcome, SinkDelivery, listed, read_checkpoints, release_log
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sources.change_source import ChangeSource, LogPassedCheckpoints

# A sink found down is left alone this long at first, doubling up to the maximum, so a loop that
# polls every fraction of a second does not hammer it; its rows wait in the source's log.
_FIRST_REST_SECONDS = 5.0
_MAX_REST_SECONDS = 60.0


class DeadLetterRecorder(Protocol):
    """Where a batch's rejections go (the DLQ store, dlq/store.py); returns how many it stored."""

    def record(self, source: str, rejections: Iterable[Rejection]) -> int: ...


class EverySinkUnavailable(RuntimeError):
    """No sink of the source can be written: nothing can move, the run fails and is retried."""


@dataclass
class BatchReport:
    """What one batch did, without its rows."""

    source_rows: int
    tables: list[str]
    start: Checkpoint
    end: Checkpoint
    # Where the log was read through (PostgreSQL: past the reader's own mark), for idle detection.
    read_to: SourcePosition
    last_commit_ts: int | None
    read_started_at: float
    upstream_rejections: list[Rejection]
    # The batch's schema changes as the log states them: '<table>: <what changed>'.
    schema_changes: list[str]
    deliveries: dict[str, SinkDelivery]
    release: ReleaseOutcome
    # Seconds per stage: read, mask, dead_letter, map/<sink>, write/<sink>, release.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def delivered_to(self) -> list[str]:
        return [name for name, delivery in self.deliveries.items() if delivery.unavailable is None]


@dataclass
class _Rest:
    until: float
    seconds: float
    reason: str


class ReplicationSession:
    def __init__(
        self,
        source_name: str,
        pipeline: PipelineConfig,
        source: ChangeSource,
        sinks: Mapping[str, Sink],
        dead_letters: DeadLetterRecorder,
        masker: Masker,
        warn: Callable[[str], None],
        rest_down_sinks: bool = True,
    ) -> None:
        self.source_name = source_name
        self.source = source
        self.sinks = dict(sinks)
        self._rest_down_sinks = rest_down_sinks
        self._resting: dict[str, _Rest] = {}

        def record(rejections: list[Rejection]) -> int:
            return dead_letters.record(source_name, rejections)

        self._fan_out = SinkFanOut(pipeline, self.sinks, masker, record, warn)

    def close(self) -> None:
        self._fan_out.close()
        self.source.close()

    def check(self) -> None:
        self.source.check()

    def replicate_batch(self, limits: BatchLimits, stop_at: SourcePosition | None = None) -> BatchReport:
        """Read, mask, store the failures, map and write into every sink in parallel, then release."""
        # A batch's changes live until it is written, in objects without cycles (core/gc_pause.py).
        with cyclic_gc_paused():
            return self._replicate_batch(limits, stop_at)

    def _replicate_batch(self, limits: BatchLimits, stop_at: SourcePosition | None) -> BatchReport:
        read_started_at = time.time()
        stages: dict[str, float] = {}
        clock = time.perf_counter()
        asked = {name: sink for name, sink in self.sinks.items() if not self._is_resting(name)}
        checkpoints, unreachable = read_checkpoints(self.source_name, asked)
        unreachable.update({name: rest.reason for name, rest in self._resting.items() if name not in asked})
        for name, reason in unreachable.items():
            self._note_down(name, reason)
        if not checkpoints:
            raise EverySinkUnavailable(f"every sink of {self.source_name} is unavailable: {listed(unreachable)}")
        try:
            batch = self._read(checkpoints, limits, stop_at)
        except LogPassedCheckpoints:
            # Another run of the source may have written the sinks and moved the log on since the
            # checkpoints were read (two runs started together): with the checkpoints read again the
            # log no longer starts past them. If it still does, the changes in between are gone.
            fresh, gone = read_checkpoints(self.source_name, {name: self.sinks[name] for name in checkpoints})
            if fresh == checkpoints:
                raise
            checkpoints = fresh
            unreachable.update(gone)
            batch = self._read(checkpoints, limits, stop_at)
        crash_point("after_read")
        clock = _lap(stages, "read", clock)
        fanned = self._fan_out.deliver(batch, checkpoints)
        masked, deliveries = fanned.masked, fanned.deliveries
        stages["mask"], stages["dead_letter"] = fanned.mask_seconds, fanned.dead_letter_seconds
        for name, reason in unreachable.items():
            deliveries[name] = SinkDelivery.not_written(name, reason)
        for name, delivery in deliveries.items():
            stages[f"map/{name}"] = delivery.map_seconds
            stages[f"write/{name}"] = delivery.write_seconds
            if delivery.unavailable is None:
                self._resting.pop(name, None)
            elif name not in unreachable:
                self._note_down(name, delivery.unavailable)
        written = {name: d.result.checkpoint for name, d in deliveries.items() if d.result is not None}
        if not written:
            # Nothing moved: a run that delivered to no sink must not look green.
            down = {name: d.unavailable or "" for name, d in deliveries.items()}
            raise EverySinkUnavailable(f"every sink of {self.source_name} is unavailable: {listed(down)}")
        clock = time.perf_counter()
        release = release_log(self.source_name, self.source, self.sinks, written)
        _lap(stages, "release", clock)
        return BatchReport(
            source_rows=masked.row_count,
            tables=sorted(masked.tables),
            start=masked.start,
            end=masked.end,
            read_to=masked.log_read_to or masked.end.position,
            last_commit_ts=masked.last_commit_ts,
            read_started_at=read_started_at,
            upstream_rejections=masked.rejections,
            schema_changes=[f"{c.table or '(no table found)'}: {c.describe()}" for c in masked.schema_changes],
            deliveries=deliveries,
            release=release,
            stage_seconds=stages,
        )

    def _read(
        self, checkpoints: dict[str, Checkpoint | None], limits: BatchLimits, stop_at: SourcePosition | None
    ) -> ChangeBatch:
        return self.source.read_batch(
            checkpoints, stop_at, limits.max_rows, max_bytes=limits.max_bytes, max_seconds=limits.max_seconds
        )

    def rest_ends_at(self) -> float | None:
        """When the first resting sink is to be asked again (time.monotonic()); None: none rests.

        A sink that was down needs a batch read from its own (older) checkpoint when it is back, even
        if nothing new arrives at the source: the loop reads then instead of idling."""
        return min((rest.until for rest in self._resting.values()), default=None)

    def _is_resting(self, name: str) -> bool:
        rest = self._resting.get(name)
        return rest is not None and time.monotonic() < rest.until

    def _note_down(self, name: str, reason: str) -> None:
        if not self._rest_down_sinks:
            return
        previous = self._resting.get(name)
        if previous is not None and time.monotonic() < previous.until:
            return
        seconds = min(previous.seconds * 2, _MAX_REST_SECONDS) if previous else _FIRST_REST_SECONDS
        self._resting[name] = _Rest(time.monotonic() + seconds, seconds, reason)


def _lap(stages: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    stages[stage] = now - since
    return now
