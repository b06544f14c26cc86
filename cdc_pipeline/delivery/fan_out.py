"""One batch into several sinks: masked once, what masking refused stored once, then delivered into
every sink in parallel threads, so a batch takes as long as its slowest sink, not the sum.

Replication batches and initial-load slices both go through here (a DLQ replay, whose letters are
masked already and aimed at one sink each, calls `deliver` itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection
from cdc_pipeline.delivery.steps import SinkDelivery, deliver
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.registry import type_mapper


@dataclass
class FannedOut:
    masked: ChangeBatch
    deliveries: dict[str, SinkDelivery]
    mask_seconds: float
    dead_letter_seconds: float


class SinkFanOut:
    def __init__(
        self,
        pipeline: PipelineConfig,
        sinks: Mapping[str, Sink],
        masker: Masker,
        record_rejections: Callable[[list[Rejection]], object],
        warn: Callable[[str], None],
    ) -> None:
        self.sinks = dict(sinks)
        self._outages = pipeline.sink_outages
        self._masker = masker
        self._record = record_rejections
        self._warn = warn
        # Mappers remember the layouts they computed: kept for as long as the fan-out.
        self._mappers = {name: type_mapper(pipeline, name) for name in self.sinks}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.sinks)), thread_name_prefix="cdc-sink")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def deliver(self, batch: ChangeBatch, sink_names: Iterable[str], advance_checkpoint: bool = True) -> FannedOut:
        """Mask `batch` (in place: the unmasked values are gone once this returns), store what
        masking refused (it concerns every sink, so before any checkpoint passes it), then deliver it
        into the named sinks."""
        started = time.perf_counter()
        masked = self._masker.mask_batch(batch)
        masked_at = time.perf_counter()
        self._record(masked.rejections)
        recorded_at = time.perf_counter()
        futures = {
            name: self._pool.submit(
                deliver,
                self.sinks[name],
                self._mappers[name],
                masked,
                self._record,
                self._outages,
                self._warn,
                advance_checkpoint,
            )
            for name in sink_names
        }
        deliveries = {name: future.result() for name, future in futures.items()}
        return FannedOut(masked, deliveries, masked_at - started, recorded_at - masked_at)
