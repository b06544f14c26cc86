"""Batches one after another until the run's end condition: a drained backlog, a lifetime, a stop request.

While the log has nothing new the loop only asks the source for its high-water mark, every
`idle_poll_seconds`; it reads as soon as the mark moves past where the last read reached. A batch
cut by its limits (rows, bytes, seconds) is followed at once by the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.session import BatchReport, ReplicationSession

# Why a loop ended when its run was asked to stop (terminated from the UI, SIGTERM, Ctrl-C).
STOPPED_ON_REQUEST = "stopped at a batch boundary on request"


@dataclass(frozen=True)
class Progress:
    """How current each sink is: every source change committed before `applied_through` (epoch
    seconds) is in it. The measured lag is now - applied_through."""

    sinks: dict[str, float]


class ReplicationLoop:
    def __init__(
        self,
        session: ReplicationSession,
        limits: BatchLimits,
        idle_poll_seconds: float,
        on_batch: Callable[[BatchReport, Progress], None],
        on_idle: Callable[[Progress], None],
        stop_requested: threading.Event,
        should_yield: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._session = session
        self._limits = limits
        self._idle_poll = idle_poll_seconds
        self._on_batch = on_batch
        self._on_idle = on_idle
        self._stop = stop_requested
        self._should_yield = should_yield
        # Where the last batch read the log through (None: no batch yet).
        self.reached: SourcePosition | None = None

    def run(
        self,
        deadline: float | None,
        until_caught_up: bool,
        stop_at: SourcePosition | None = None,
        max_batches: int | None = None,
    ) -> str:
        """Loop until `deadline` (time.monotonic()), a stop request, `max_batches` batches, or (with
        `until_caught_up`) the first batch that reaches the log's end, or `stop_at` when given.
        Returns why it ended."""
        # Where the last complete read left the log (None: read at once).
        read_through: SourcePosition | None = None
        # Sinks that took the last batch, which reached the log's end: current while nothing moves.
        current: set[str] = set()
        batches = 0
        while True:
            if self._stop.is_set():
                return STOPPED_ON_REQUEST
            if deadline is not None and time.monotonic() >= deadline:
                return "lifetime reached"
            if max_batches is not None and batches >= max_batches:
                return f"{batches} batches done (max_batches)"
            yielding = self._should_yield()
            if yielding is not None:
                return yielding
            head = self._session.source.high_water_mark()
            rest_ends_at = self._session.rest_ends_at()
            if rest_ends_at is not None and time.monotonic() >= rest_ends_at:
                read_through = None  # a sink that was down is due: read from its checkpoint
            if read_through is not None and head == read_through:
                if until_caught_up:
                    return "caught up"
                self._on_idle(Progress({name: time.time() for name in current}))
                self._stop.wait(self._idle_poll)
                continue
            report = self._session.replicate_batch(self._limits, stop_at)
            batches += 1
            reached_end = report.end == report.start or at_or_past(report.read_to, head)
            delivered = report.delivered_to
            if reached_end:
                # Everything committed before the read began is in the sinks that took the batch.
                progress = {name: report.read_started_at for name in delivered}
                read_through = report.read_to if at_or_past(report.read_to, head) else head
                current = set(delivered)
            else:
                last = report.last_commit_ts
                progress = {name: float(last) for name in delivered} if last is not None else {}
                read_through = None
                current = set()
            self.reached = report.read_to
            self._on_batch(report, Progress(progress))
            if until_caught_up and (reached_end or (stop_at is not None and at_or_past(report.read_to, stop_at))):
                return "caught up" if reached_end else f"reached {stop_at}"


def at_or_past(position: SourcePosition, head: SourcePosition) -> bool:
    """Whether a read that reached `position` covered the log up to `head`."""
    # Positions of another kind (a failover to another server) do not compare: read again.
    return type(position) is type(head) and position >= head  # type: ignore[operator]
