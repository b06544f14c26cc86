"""The sensor's decisions and the delivery's outage path, on the in-memory source and sink
(in_memory.py): milliseconds per case. The same behaviours are proven against real servers in
test_dagster_surface.py, test_streaming.py and test_sink_outage.py; these cover the decisions'
branches without waiting for a server.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData

from cdc_pipeline.config.loading import parse_pipeline_config
from cdc_pipeline.config.models import MaskingConfig, PipelineConfig
from cdc_pipeline.core.changes import ChangeOp, Rejection
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.defs.replication import sensors
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import DeadLetterQueueResource, MaskingResource
from cdc_pipeline.defs.run_tags import REACHED_TAG, SOURCE_TAG
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.session import EverySinkUnavailable, ReplicationSession
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline_tests.in_memory import (
    LOGS,
    SINKS,
    InMemoryChangeSource,
    InMemoryLog,
    InMemorySink,
    InMemorySinkResource,
    InMemorySourceResource,
)

SOURCE, FIRST, SECOND = "shop", "warehouse", "analytics"
TABLE = "shop.orders"
_ids = itertools.count()

CONFIG = f"""
sources:
  {SOURCE}: {{kind: mysql, tables: {{include: ["shop.*"]}}}}
sinks:
  {FIRST}: {{kind: postgres, dsn_env: UNUSED_DSN}}
  {SECOND}: {{kind: postgres, dsn_env: UNUSED_DSN}}
dlq: {{dsn_env: UNUSED_DSN}}
replication: {{mode: per_run}}
batch: {{poll_interval_seconds: 1}}
sink_outages: {{write_attempts: 1, first_retry_delay_seconds: 0}}
"""


@dataclass
class InMemoryPipeline:
    pipeline: PipelineConfig
    log: InMemoryLog
    sinks: dict[str, InMemorySink]
    log_id: str

    def resources(self) -> dict[str, object]:
        return {
            source_key(SOURCE): InMemorySourceResource(log_id=self.log_id),
            **{sink_key(name): InMemorySinkResource(sink_id=f"{self.log_id}/{name}") for name in self.sinks},
            # Never reached by these decisions: the sensor asks the source only, the session gets its recorder.
            DEAD_LETTER_QUEUE: DeadLetterQueueResource(dsn="unused", schema_name="dlq"),
            MASKING: MaskingResource(hmac_key="in-memory-key"),
        }

    def definitions(self) -> dg.Definitions:
        return build_definitions(self.pipeline, resources=self.resources())

    def evaluate(self, instance: dg.DagsterInstance, cursor: str | None) -> SensorExecutionData:
        definitions = self.definitions()
        sensor = definitions.resolve_sensor_def(f"{SOURCE}_binlog_sensor")
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=self.resources(), definitions=definitions
        )
        return sensor.evaluate_tick(context)

    def job(self) -> dg.JobDefinition:
        return self.definitions().resolve_job_def(f"replicate_{SOURCE}")

    def order(self, order_id: int, quantity: int, op: ChangeOp = ChangeOp.INSERT) -> str:
        return str(self.log.commit(1_700_000_000 + order_id, (TABLE, op, {"id": order_id, "quantity": quantity})))


@pytest.fixture
def memory() -> Iterator[InMemoryPipeline]:
    log_id = f"log{next(_ids)}"
    schema = TableSchema(
        "shop",
        "orders",
        (ColumnSchema("id", "int", "int", nullable=False), ColumnSchema("quantity", "int", "int", nullable=True)),
        ("id",),
    )
    LOGS[log_id] = InMemoryLog(schemas={TABLE: schema})
    sinks = {name: InMemorySink(name) for name in (FIRST, SECOND)}
    SINKS.update({f"{log_id}/{name}": sink for name, sink in sinks.items()})
    yield InMemoryPipeline(parse_pipeline_config(CONFIG), LOGS[log_id], sinks, log_id)
    del LOGS[log_id]
    for name in sinks:
        del SINKS[f"{log_id}/{name}"]


# -- the sensor ------------------------------------------------------------------------------------


def test_sensor_requests_the_new_range_skips_when_idle_or_busy_and_retries_a_failed_run(
    memory: InMemoryPipeline,
) -> None:
    high_water = memory.order(1, 5)
    with dg.instance_for_test() as instance:
        first = memory.evaluate(instance, cursor=None)
        (request,) = first.run_requests
        assert request.run_key == f"{SOURCE}:start-{high_water}"
        assert request.run_config["ops"][f"replicate_{SOURCE}"]["config"]["stop_at"] == high_water
        assert first.cursor == high_water

        idle = memory.evaluate(instance, cursor=high_water)
        assert not idle.run_requests and f"no new binlog events past {high_water}" in str(idle.skip_message)

        running = instance.create_run_for_job(
            memory.job(), tags={SOURCE_TAG: SOURCE}, status=dg.DagsterRunStatus.STARTED
        )
        newer = memory.order(2, 7)
        busy = memory.evaluate(instance, cursor=high_water)
        assert not busy.run_requests and running.run_id in str(busy.skip_message)

        instance.report_run_failed(running)
        retried = memory.evaluate(instance, cursor=newer)
        assert [r.run_key for r in retried.run_requests] == [f"{SOURCE}:{newer}-{newer}:retry-of-{running.run_id}"]


def test_sensor_backs_off_after_consecutive_failures_and_retries_once_the_pause_is_over(
    memory: InMemoryPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    high_water = memory.order(1, 5)
    with dg.instance_for_test() as instance:
        failed = []
        for _ in range(3):
            run = instance.create_run_for_job(
                memory.job(), tags={SOURCE_TAG: SOURCE}, status=dg.DagsterRunStatus.STARTED
            )
            instance.report_run_failed(run)
            failed.append(run.run_id)
        waiting = memory.evaluate(instance, cursor=high_water)
        assert not waiting.run_requests
        assert "the last 3 runs" in str(waiting.skip_message) and "backing off" in str(waiting.skip_message)
        assert memory.log.reads == 0  # backing off asks the source nothing

        # Three failures with a 1 s poll interval: a 4 s pause. The sensor's clock moves past it.
        later = time.time() + 5
        monkeypatch.setattr(sensors, "time", SimpleNamespace(time=lambda: later))
        retried = memory.evaluate(instance, cursor=high_water)
        assert [r.run_key for r in retried.run_requests] == [
            f"{SOURCE}:{high_water}-{high_water}:retry-of-{failed[-1]}"
        ]


def test_sensor_continues_a_run_that_stopped_short_of_its_range(memory: InMemoryPipeline) -> None:
    reached = memory.order(1, 5)
    high_water = memory.order(2, 6)
    with dg.instance_for_test() as instance:
        instance.create_run_for_job(
            memory.job(), tags={SOURCE_TAG: SOURCE, REACHED_TAG: reached}, status=dg.DagsterRunStatus.SUCCESS
        )
        # Nothing new at the source since the cursor, but the last run stopped at `reached`.
        (request,) = memory.evaluate(instance, cursor=high_water).run_requests
        assert request.run_key == f"{SOURCE}:{reached}-{high_water}"

        instance.create_run_for_job(
            memory.job(), tags={SOURCE_TAG: SOURCE, REACHED_TAG: high_water}, status=dg.DagsterRunStatus.SUCCESS
        )
        done = memory.evaluate(instance, cursor=high_water)
        assert not done.run_requests and "no new binlog events" in str(done.skip_message)


# -- the outage path -------------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.letters: list[Rejection] = []

    def record(self, source: str, rejections: list[Rejection]) -> int:
        self.letters.extend(rejections)
        return len(rejections)


def _session(memory: InMemoryPipeline, recorder: _Recorder) -> ReplicationSession:
    source = InMemoryChangeSource(SOURCE, memory.log)
    masker = Masker(MaskingConfig(), "in-memory-key")
    return ReplicationSession(
        SOURCE,
        memory.pipeline,
        source,
        memory.sinks,
        recorder,
        masker,
        warn=lambda message: None,
        rest_down_sinks=False,
    )


def _quantities(sink: InMemorySink) -> dict[int, int]:
    return {int(values[0]): int(values[1]) for values in sink.live_rows(TABLE).values()}


def test_a_sink_that_is_down_lags_alone_then_catches_up_from_its_own_checkpoint(memory: InMemoryPipeline) -> None:
    recorder = _Recorder()
    session = _session(memory, recorder)
    limits = BatchLimits(max_rows=100, max_bytes=10**9, max_seconds=60)
    memory.order(1, 5)
    first = session.replicate_batch(limits)
    assert first.delivered_to == [FIRST, SECOND]

    memory.sinks[SECOND].down = True
    memory.order(2, 7)
    memory.order(1, 6, ChangeOp.UPDATE)
    lagging = session.replicate_batch(limits)
    assert lagging.delivered_to == [FIRST]
    assert "in-memory sink analytics is down" in str(lagging.deliveries[SECOND].unavailable)
    assert _quantities(memory.sinks[FIRST]) == {1: 6, 2: 7}
    assert _quantities(memory.sinks[SECOND]) == {1: 5}
    assert memory.sinks[SECOND].checkpoints[SOURCE] == first.end

    memory.sinks[SECOND].down = False
    caught_up = session.replicate_batch(limits)
    assert caught_up.delivered_to == [FIRST, SECOND]
    # Read from the lagging sink's checkpoint: the other sink skips the rows it already holds.
    first_result = caught_up.deliveries[FIRST].result
    assert first_result is not None and first_result.skipped_already_applied == 2
    assert _quantities(memory.sinks[SECOND]) == _quantities(memory.sinks[FIRST]) == {1: 6, 2: 7}
    assert memory.sinks[SECOND].checkpoints[SOURCE] == memory.sinks[FIRST].checkpoints[SOURCE] == lagging.end
    assert recorder.letters == []  # an outage sends nothing to the DLQ


def test_every_sink_down_fails_the_batch_and_moves_no_checkpoint(memory: InMemoryPipeline) -> None:
    session = _session(memory, _Recorder())
    limits = BatchLimits(max_rows=100, max_bytes=10**9, max_seconds=60)
    memory.order(1, 5)
    session.replicate_batch(limits)
    before = {name: sink.checkpoints[SOURCE] for name, sink in memory.sinks.items()}
    for sink in memory.sinks.values():
        sink.down = True
    memory.order(2, 7)
    with pytest.raises(EverySinkUnavailable, match=f"every sink of {SOURCE} is unavailable"):
        session.replicate_batch(limits)
    assert {name: sink.checkpoints[SOURCE] for name, sink in memory.sinks.items()} == before


def test_a_stop_at_of_another_kind_of_log_is_refused_naming_the_form_it_must_have(memory: InMemoryPipeline) -> None:
    memory.order(1, 5)
    with dg.instance_for_test() as instance:
        result = memory.job().execute_in_process(
            run_config={"ops": {f"replicate_{SOURCE}": {"config": {"stop_at": "16/B374D848"}}}},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "binlog position '16/B374D848' is not of the form 'file:offset'" in str(failure.step_failure_data.error)
    assert memory.log.reads == 0 and all(sink.checkpoints == {} for sink in memory.sinks.values())
