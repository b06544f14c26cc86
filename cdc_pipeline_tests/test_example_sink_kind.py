"""Adding a sink kind is a folder, a config model and one registry line.

The example kind here is the in-memory sink of in_memory.py (a sink class that runs the shared write
algorithm, and a Dagster resource); this file adds its config model and registers it, nothing else.
The pipeline then validates configs naming the kind, builds its resource, maps rows for it and
replicates into it through Dagster like into a built-in kind, with a real PostgreSQL DLQ.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Literal

import dagster as dg
import pytest

from cdc_pipeline.config.loading import PipelineConfigError, parse_pipeline_config
from cdc_pipeline.config.sinks import SinkConfigBase
from cdc_pipeline.core.changes import ChangeOp
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.defs.builder import build_definitions, resources_from_config
from cdc_pipeline.defs.resource_keys import source_key
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sinks.postgres.column_types import postgres_column
from cdc_pipeline.sinks.registry import SinkKind, register_sink_kind, sink_kind, unregister_sink_kind
from cdc_pipeline_tests.in_memory import (
    LOGS,
    SINKS,
    InMemoryLog,
    InMemorySink,
    InMemorySinkResource,
    InMemorySourceResource,
)


# -- the whole example kind: a config model and a registry line -------------------------------------
class InMemorySinkConfig(SinkConfigBase):
    kind: Literal["memory"] = "memory"
    sink_id: str


MEMORY = SinkKind(
    "memory",
    InMemorySinkConfig,
    lambda config: InMemorySinkResource(sink_id=config.sink_id),
    InMemorySink,
    postgres_column,
)
# ----------------------------------------------------------------------------------------------------

_ids = itertools.count()
CONFIG = """
sources:
  shop: {{kind: mysql, tables: {{include: ["shop.*"]}}}}
sinks:
  scratch: {{kind: memory, sink_id: {sink_id}}}
dlq: {{dsn_env: EXAMPLE_DLQ_DSN}}
masking: {{hmac_key_env: EXAMPLE_MASKING_KEY}}
"""


@pytest.fixture
def memory_kind() -> Iterator[SinkKind]:
    register_sink_kind(MEMORY)
    yield MEMORY
    unregister_sink_kind(MEMORY.kind)


def test_a_registered_kind_is_configured_built_and_replicated_into_like_a_built_in_one(
    memory_kind: SinkKind, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"example_kind_{next(_ids)}"
    monkeypatch.setenv("EXAMPLE_DLQ_DSN", postgres.create_database(name))
    monkeypatch.setenv("EXAMPLE_MASKING_KEY", "example-key")
    SINKS[name] = sink = InMemorySink("scratch")
    schema = TableSchema(
        "shop",
        "orders",
        (ColumnSchema("id", "int", "int", nullable=False), ColumnSchema("note", "text", "text", True)),
        ("id",),
    )
    LOGS[name] = log = InMemoryLog(schemas={"shop.orders": schema})
    try:
        log.commit(1_700_000_000, ("shop.orders", ChangeOp.INSERT, {"id": 1, "note": "first"}))
        log.commit(1_700_000_001, ("shop.orders", ChangeOp.INSERT, {"id": 2, "note": "second"}))
        log.commit(1_700_000_002, ("shop.orders", ChangeOp.DELETE, {"id": 1, "note": "first"}))
        pipeline = parse_pipeline_config(CONFIG.format(sink_id=name))
        assert isinstance(pipeline.sinks["scratch"], InMemorySinkConfig)
        resources = resources_from_config(pipeline)  # the registry builds the example kind's resource
        assert isinstance(resources["sink_scratch"], InMemorySinkResource)
        resources[source_key("shop")] = InMemorySourceResource(log_id=name)
        definitions = build_definitions(pipeline, resources=resources)
        with dg.instance_for_test() as instance:
            result = definitions.resolve_job_def("replicate_shop").execute_in_process(instance=instance)
            materialized = {tuple(event.asset_key.path) for event in result.get_asset_materialization_events()}
        assert result.success
        # Row 1 inserted then deleted; values in the COPY text form of the type map the example reuses.
        assert sink.live_rows("shop.orders") == {("2",): ["2", "second"]}
        assert str(sink.checkpoints["shop"]) == str(log.end)
        assert ("scratch", "shop__orders") in materialized
    finally:
        del SINKS[name], LOGS[name]
        postgres.drop_database(name)


def test_a_kind_is_known_while_registered_and_refused_by_name_after(memory_kind: SinkKind) -> None:
    assert sink_kind("memory") is memory_kind
    with pytest.raises(ValueError, match="registered already"):
        register_sink_kind(SinkKind("memory", InMemorySinkConfig, lambda c: None, InMemorySink, postgres_column))
    unregister_sink_kind("memory")
    with pytest.raises(PipelineConfigError, match="expected tags: 'clickhouse', 'postgres'"):
        parse_pipeline_config(CONFIG.format(sink_id="x"))
    register_sink_kind(memory_kind)  # for the fixture's own unregistering
