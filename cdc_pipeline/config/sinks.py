"""The sink kinds' config models, and how the pipeline's `sinks` are validated by kind.

One model per kind (ClickHouse, PostgreSQL) and what they share (`SinkConfigBase`). A sink entry is
validated by the model registered for its `kind`: the built-in kinds here, others through
`sinks/registry.py: register_sink_kind` (a new sink kind, or a test's example kind), so that adding a
kind never edits a union.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError

from cdc_pipeline.config.base import NAME_PATTERN, EnvVarName, StrictModel, kind_of


class SinkConfigBase(StrictModel):
    """What every sink kind's config answers; a kind overrides what applies to it."""

    kind: str

    # Takes a Cassandra source's cell tables (per-cell merge state, sinks/cell_merge/).
    holds_cell_tables: ClassVar[bool] = False
    # Two runs may merge into one cell table at once: the sink locks the rows a merge reads until it
    # has written them. Without it, runs that share tables (the node sources of one Cassandra cluster)
    # take turns (run_tags.py), or one merge could overwrite the other's cells.
    locks_cell_merges: ClassVar[bool] = False

    @property
    def embedded_path(self) -> str | None:
        """The on-disk path of an embedded engine this sink runs in the pipeline's own process, if any."""
        return None


class ClickHouseSinkConfig(SinkConfigBase):
    kind: Literal["clickhouse"] = "clickhouse"
    holds_cell_tables: ClassVar[bool] = True
    dsn: str = Field(default="chdb:///tmp/cdc_pipeline/chdb", description="chdb:///path or http(s)://host:port")
    dsn_env: EnvVarName | None = Field(default=None, description="read the DSN from this variable instead")
    database: str = Field(default="cdc", pattern=NAME_PATTERN)
    busy_timeout_seconds: int = Field(
        default=60, ge=0, le=3600, description="chdb: how long to wait for another process to release the path"
    )

    @property
    def embedded_path(self) -> str | None:
        """The on-disk path of an embedded (chdb) sink configured in this file, else None."""
        return self.dsn.removeprefix("chdb://") if self.dsn_env is None and self.dsn.startswith("chdb:") else None


class PostgresSinkConfig(SinkConfigBase):
    kind: Literal["postgres"] = "postgres"
    holds_cell_tables: ClassVar[bool] = True
    # Advisory locks on the touched partitions and SELECT ... FOR UPDATE (sinks/postgres/cell_tables.py).
    locks_cell_merges: ClassVar[bool] = True
    dsn_env: EnvVarName = Field(description="environment variable holding the libpq DSN")
    schema_name: str = Field(default="cdc", pattern=NAME_PATTERN, alias="schema")
    hypertables: dict[str, str] = Field(
        default_factory=dict,
        description="TimescaleDB: 'database.table' -> the key column its sink table is a hypertable on"
        " (applied when the sink database has the timescaledb extension)",
    )


# kind -> its config model.
_MODELS: dict[str, type[SinkConfigBase]] = {}
SINK_CONFIG_MODELS: Mapping[str, type[SinkConfigBase]] = _MODELS


def register_sink_config(model: type[SinkConfigBase]) -> None:
    """Let `sinks` entries of the model's kind validate with it; a kind is registered once."""
    kind = kind_of(model)
    registered = _MODELS.get(kind)
    if registered is not None and registered is not model:
        raise ValueError(f"sink kind {kind!r} is registered already, with {registered.__name__}")
    _MODELS[kind] = model


def unregister_sink_config(kind: str) -> None:
    _MODELS.pop(kind, None)


for _model in (ClickHouseSinkConfig, PostgresSinkConfig):
    register_sink_config(_model)


def validate_sink_configs(sinks: Mapping[str, Any]) -> dict[str, Any]:
    """Each entry by its kind's model; one ValidationError with every problem at its key path
    (`sinks.<name>.<key>`), worded as pydantic words a tagged union's."""
    validated: dict[str, Any] = {}
    problems: list[Any] = []
    expected = ", ".join(repr(kind) for kind in _MODELS)
    for name, entry in sinks.items():
        if isinstance(entry, SinkConfigBase):
            validated[name] = entry
            continue
        tag = entry.get("kind") if isinstance(entry, dict) else None
        model = _MODELS.get(tag) if isinstance(tag, str) else None
        if model is None:
            kind_error = "union_tag_invalid" if tag is not None else "union_tag_not_found"
            context = {"discriminator": "'kind'", "tag": str(tag), "expected_tags": expected}
            problems.append({"type": kind_error, "loc": ("sinks", name), "input": entry, "ctx": context})
            continue
        try:
            validated[name] = model.model_validate(entry)
        except ValidationError as invalid:
            problems.extend({**problem, "loc": ("sinks", name, *problem["loc"])} for problem in invalid.errors())
    if problems:
        raise ValidationError.from_exception_data("PipelineConfig", problems)
    return validated
