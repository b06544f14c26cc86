"""Every registered source and sink kind conforms to the protocols the pipeline uses, and the config
and the registries agree on the kinds (a pure check: nothing here talks to a database).

mypy already checks each registry line (a kind's sink class against `Sink`, its source classes
against `ChangeSource` and `SnapshotSource`). This test checks what mypy cannot see: every kind a
config may name has a registry line and the reverse; a kind's resource hands out the classes its
registry line names; those classes carry every protocol member with the protocol's parameters; and
resources built from a config hold environment variable names, never secrets.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any, get_type_hints

import dagster as dg
import pytest

from cdc_pipeline.config.base import config_models, kind_of
from cdc_pipeline.config.loading import PipelineConfigError, parse_pipeline_config
from cdc_pipeline.config.sinks import SINK_CONFIG_MODELS, PostgresSinkConfig
from cdc_pipeline.config.sources import SourceConfig
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.registry import SINK_KINDS, UnknownSinkKind, sink_kind
from cdc_pipeline.sources.change_source import ChangeSource
from cdc_pipeline.sources.registry import SOURCE_KINDS, UnknownSourceKind, source_kind
from cdc_pipeline.sources.snapshot_source import SnapshotSource
from cdc_pipeline_tests.in_memory import InMemoryChangeSource, InMemorySink

# The smallest valid config of each kind; a kind added to a registry must add its own here.
MINIMAL_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "source": {
        "mysql": {"kind": "mysql", "password_env": "SOURCE_PASSWORD"},
        "postgres": {"kind": "postgres", "dsn_env": "SOURCE_DSN"},
        "cassandra": {
            "kind": "cassandra",
            "cassandra_yaml": "/etc/cassandra/cassandra.yaml",
            "username_env": "SOURCE_USER",
            "password_env": "SOURCE_PASSWORD",
        },
    },
    "sink": {
        "clickhouse": {"kind": "clickhouse", "dsn_env": "SINK_DSN"},
        "postgres": {"kind": "postgres", "dsn_env": "SINK_DSN"},
    },
}


def _protocol_members(protocol: type) -> list[str]:
    attributes = getattr(protocol, "__annotations__", {})
    methods = [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]
    return sorted({*attributes, *methods})


def _conforms(implementation: type, protocol: type) -> list[str]:
    """What `implementation` lacks of `protocol`: missing members, or methods whose parameters differ."""
    problems = []
    for member in _protocol_members(protocol):
        # A data member may be set only in __init__ (`self.name = name`).
        assigned = f"self.{member} =" in inspect.getsource(implementation)
        if not hasattr(implementation, member) and member not in get_type_hints(implementation) and not assigned:
            problems.append(f"{implementation.__name__} has no {member}")
            continue
        wanted = vars(protocol).get(member)
        if callable(wanted):
            expected = list(inspect.signature(wanted).parameters)
            actual = list(inspect.signature(getattr(implementation, member)).parameters)
            if actual[: len(expected)] != expected or any(
                inspect.signature(getattr(implementation, member)).parameters[extra].default is inspect.Parameter.empty
                for extra in actual[len(expected) :]
            ):
                problems.append(
                    f"{implementation.__name__}.{member}{actual} differs from {protocol.__name__}{expected}"
                )
    return problems


def _returned_class(method: Any) -> type:
    returned = get_type_hints(method)["return"]
    assert isinstance(returned, type), f"{method.__qualname__} must name the class it returns"
    return returned


def test_every_config_kind_has_a_registry_line_and_every_registry_line_a_config_model() -> None:
    assert {kind_of(model) for model in config_models(SourceConfig)} == set(SOURCE_KINDS)
    assert {kind_of(model) for model in SINK_CONFIG_MODELS.values()} == set(SINK_KINDS) == set(SINK_CONFIG_MODELS)
    for kind, registered in [*SOURCE_KINDS.items(), *SINK_KINDS.items()]:
        assert kind_of(registered.config_model) == kind
    assert set(MINIMAL_CONFIGS["source"]) == set(SOURCE_KINDS)
    assert set(MINIMAL_CONFIGS["sink"]) == set(SINK_KINDS)


@pytest.mark.parametrize("kind", sorted(SINK_KINDS))
def test_each_sink_kind_conforms_to_the_sink_protocol(kind: str) -> None:
    registered = sink_kind(kind)
    config = registered.config_model.model_validate(MINIMAL_CONFIGS["sink"][kind])
    resource = registered.resource_from_config(config)
    assert isinstance(resource, dg.ConfigurableResource)
    assert _returned_class(type(resource).sink) is registered.sink_class
    assert _conforms(registered.sink_class, Sink) == []


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_each_source_kind_conforms_to_the_source_protocols(kind: str) -> None:
    registered = source_kind(kind)
    config = registered.config_model.model_validate(MINIMAL_CONFIGS["source"][kind])
    resource = registered.resource_from_config(config)
    assert isinstance(resource, dg.ConfigurableResource)
    change_source = _returned_class(type(resource).change_source)
    assert _conforms(change_source, ChangeSource) == []
    assert change_source.log_name == registered.log_name
    assert _conforms(_returned_class(type(resource).snapshot_source), SnapshotSource) == []


@pytest.mark.parametrize("side", ["source", "sink"])
def test_resources_built_from_a_config_hold_variable_names_not_secrets(
    side: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SOURCE_PASSWORD", "SOURCE_DSN", "SOURCE_USER", "SINK_DSN"):
        monkeypatch.setenv(name, f"secret-of-{name}")
    kinds = SOURCE_KINDS if side == "source" else SINK_KINDS
    for kind, registered in kinds.items():
        config = registered.config_model.model_validate(MINIMAL_CONFIGS[side][kind])
        resource = registered.resource_from_config(config)
        assert isinstance(resource, dg.ConfigurableResource)
        # Dagster reads a dg.EnvVar when a run starts; until then the resource holds the variable's name.
        values = list(vars(resource).values())
        secrets_from = {value.env_var_name for value in values if isinstance(value, dg.EnvVar)}
        assert secrets_from, f"{side} kind {kind}: its secret comes from no environment variable"
        plain = [value for value in values if isinstance(value, str) and not isinstance(value, dg.EnvVar)]
        assert not [value for value in plain if value.startswith("secret-of-")], (kind, plain)


def test_an_unknown_kind_fails_naming_the_known_ones() -> None:
    with pytest.raises(UnknownSinkKind, match="'snowflake' is not registered \\(known: clickhouse, postgres\\)"):
        sink_kind("snowflake")
    with pytest.raises(UnknownSourceKind, match="'oracle' is not registered \\(known: cassandra, mysql, postgres\\)"):
        source_kind("oracle")


CASSANDRA_INTO_POSTGRES = """
sources:
  events: {kind: cassandra, cassandra_yaml: /etc/cassandra/cassandra.yaml}
sinks:
  analytics: {kind: postgres, dsn_env: ANALYTICS_DSN}
dlq: {dsn_env: ANALYTICS_DSN}
"""


def test_a_source_of_cell_tables_is_refused_with_a_sink_that_cannot_hold_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_pipeline_config(CASSANDRA_INTO_POSTGRES).sinks["analytics"].holds_cell_tables
    # A sink kind without cell tables (none of today's): the config is refused, naming both ends.
    monkeypatch.setattr(PostgresSinkConfig, "holds_cell_tables", False)
    with pytest.raises(PipelineConfigError) as refused:
        parse_pipeline_config(CASSANDRA_INTO_POSTGRES)
    assert "sources.events (cassandra) writes cell tables, which sinks.analytics (postgres) cannot hold" in str(
        refused.value
    )


def test_the_in_memory_fakes_conform_to_the_protocols_they_stand_in_for() -> None:
    assert _conforms(InMemorySink, Sink) == []
    assert _conforms(InMemoryChangeSource, ChangeSource) == []


def test_the_engine_and_the_sink_registry_load_without_dagster() -> None:
    # Delivery, the initial load and the DLQ replay reach the sink registry; Dagster (its resources)
    # loads only where the code location builds them. A fresh process, so nothing is imported yet.
    engine = "cdc_pipeline.delivery.session, cdc_pipeline.snapshot.loader, cdc_pipeline.dlq.replay"
    probe = f"import sys, {engine}; print('dagster' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
