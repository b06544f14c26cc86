"""The pipeline's YAML configuration, validated by pydantic when it is loaded.

Secrets never appear in this file's values: a field named ``*_env`` holds the *name* of an
environment variable, which the Dagster resources read through ``dg.EnvVar``.

The source and sink kinds' models are in sources.py and sinks.py; this module holds the pipeline as a
whole and its pipeline-level sections (masking, type overrides, batches, replication, outages, DLQ).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, InstanceOf, field_validator, model_validator

from cdc_pipeline.config.base import NAME_PATTERN, EnvVarName, StrictModel
from cdc_pipeline.config.sinks import SinkConfigBase, validate_sink_configs
from cdc_pipeline.config.sources import RetentionConfig, SourceConfig
from cdc_pipeline.core.sink_names import sink_table_name

MaskAction = Literal["hash", "token", "redact", "truncate", "null", "none"]


class MaskRule(StrictModel):
    """A masking rule for the columns that match `table` ('database.table' glob) and `column` (glob)."""

    table: str = "*.*"
    column: str
    action: MaskAction
    length: int | None = Field(default=None, ge=0, description="characters kept by 'truncate'")

    @model_validator(mode="after")
    def _truncate_needs_length(self) -> MaskRule:
        if self.action == "truncate" and self.length is None:
            raise ValueError(f"rule for column {self.column!r}: action 'truncate' needs 'length'")
        return self


class MaskingConfig(StrictModel):
    hmac_key_env: EnvVarName = Field(
        default="CDC_MASKING_KEY", description="environment variable holding the HMAC key for hash/token"
    )
    classify_by_name: bool = Field(default=True, description="mask PII/PHI columns recognised by their name")
    rules: list[MaskRule] = Field(default_factory=list)


class TypeOverride(StrictModel):
    table: str = Field(description="'database.table'")
    column: str
    sink: str | None = Field(default=None, description="sink name; all sinks when omitted")
    type: str = Field(description="sink column type, e.g. 'String' or 'text'")

    @field_validator("type")
    @classmethod
    def _type_is_plain(cls, value: str) -> str:
        # The override is spliced into DDL, so only type syntax is allowed, and only one type.
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_ ,()'\[\]]*", value):
            raise ValueError(f"type {value!r} contains characters that are not part of a type name")
        problem = _not_one_type(value)
        if problem is not None:
            raise ValueError(f"type {value!r} is not one column type: {problem}")
        return value


# Words that start a column clause after the type: an override holding one adds to the column's DDL.
_COLUMN_CLAUSE_WORDS = frozenset(
    "default not null constraint check references primary unique generated collate codec ttl materialized"
    " alias ephemeral comment settings".split()
)


def _not_one_type(text: str) -> str | None:
    """Why `text` is more than one type (a comma outside parentheses or quotes, a column clause,
    unbalanced parentheses or quotes); None for one type such as `Decimal(12, 4)`, `Map(String,
    UInt64)`, `double precision` or `text[]`."""
    depth, quoted, top_level = 0, False, []
    for character in text:
        if quoted:
            quoted = character != "'"
            continue
        if character == "'":
            quoted = True
        elif character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth < 0:
                return "a ')' closes nothing"
        elif character == "," and depth == 0:
            return "a comma outside parentheses starts another column or clause"
        if depth == 0 and character not in "()'":
            top_level.append(character)
    if quoted or depth:
        return "unbalanced quotes or parentheses"
    clauses = sorted(_COLUMN_CLAUSE_WORDS & set("".join(top_level).lower().split()))
    return f"{', '.join(clauses).upper()} is a column clause, not part of a type" if clauses else None


class BatchConfig(StrictModel):
    """How big a micro-batch may grow: whichever limit is reached first ends it (at a transaction end,
    so one transaction larger than a limit still makes one batch)."""

    # 10,000: a MySQL backlog of ten-column rows drained at the same rate with 10,000 as with 50,000
    # rows a batch (about 15,000 rows/s on 2 cores) and the run's allocated memory fell from about
    # 390 to 260 MiB (README, "Benchmark"); larger batches only add memory once writes are bulk.
    max_rows: int = Field(default=10_000, ge=1, description="row changes per micro-batch")
    max_bytes: int = Field(
        default=8 * 2**20,
        ge=2**16,
        description="bytes of change-log data per micro-batch; a run's memory grows by about 20 times this"
        " (decoded values, masked and mapped copies, the sinks' buffers); 8 MiB is about 50,000 rows of ten"
        " ordinary columns",
    )
    max_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="how long one micro-batch may keep reading a busy log"
    )
    poll_interval_seconds: int = Field(default=5, ge=1, le=3600, description="the replication sensor's interval")


class ReplicationConfig(StrictModel):
    """How runs replicate: one long-lived run per source looping micro-batches, or a run per batch."""

    mode: Literal["continuous", "per_run"] = Field(
        default="continuous",
        description="'continuous': the sensor keeps one run per source alive, which loops micro-batches;"
        " 'per_run': the sensor launches a run per micro-batch when the log moves",
    )
    lifetime_minutes: float = Field(
        default=60,
        gt=0,
        le=24 * 60,
        description="a continuous run ends after this long (at a batch boundary) and the sensor starts the next:"
        " new code and config take effect, memory is recycled, run history stays small",
    )
    idle_poll_seconds: float = Field(
        default=0.25, ge=0.01, le=0.5, description="a continuous run's wait between looks at an idle change log"
    )
    report_interval_seconds: float = Field(
        default=60,
        ge=1,
        le=3600,
        description="a continuous run materializes each sink table that changed at most this often (bounds"
        " Dagster's storage); the run's log carries the stages' timings over the same interval",
    )
    start_sensors: bool = Field(
        default=False,
        description="the replication sensors, the sink health sensor and the hourly checks start with the code"
        " location (a deployment such as docker-compose replicates without a click); by default an operator"
        " switches them on in the UI",
    )


class SinkOutageConfig(StrictModel):
    """What a write does when its sink is unavailable (server down, refused, full, permission revoked)."""

    write_attempts: int = Field(
        default=3, ge=1, le=20, description="tries per run before the sink is left to lag until the next run"
    )
    first_retry_delay_seconds: float = Field(
        default=1.0, ge=0, le=60, description="wait before the second try; doubled before each further one"
    )
    lag_tolerance_seconds: int = Field(
        default=30,
        ge=0,
        description="sink_is_fresh fails when the sink's newest applied change is older than this while the"
        " source holds newer ones (measured lag, see defs/replication/progress.py)",
    )


class DlqConfig(StrictModel):
    dsn_env: EnvVarName = Field(description="environment variable holding the PostgreSQL DSN of the DLQ")
    schema_name: str = Field(default="cdc_dlq", pattern=NAME_PATTERN, alias="schema")


class PipelineConfig(StrictModel):
    sources: dict[str, SourceConfig] = Field(min_length=1)
    # Validated by kind before the rest (config/sinks.py: validate_sink_configs).
    sinks: dict[str, InstanceOf[SinkConfigBase]] = Field(min_length=1)
    dlq: DlqConfig
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    type_overrides: list[TypeOverride] = Field(default_factory=list)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    replication: ReplicationConfig = Field(default_factory=ReplicationConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    sink_outages: SinkOutageConfig = Field(default_factory=SinkOutageConfig)

    @model_validator(mode="before")
    @classmethod
    def _sinks_by_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("sinks"), dict):
            return {**data, "sinks": validate_sink_configs(data["sinks"])}
        return data

    @field_validator("sources", "sinks")
    @classmethod
    def _names_are_identifiers(cls, named: dict[str, object]) -> dict[str, object]:
        for name in named:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"name {name!r} must be a letter or '_' followed by letters, digits or '_'")
        return named

    @model_validator(mode="after")
    def _overrides_name_known_sinks(self) -> PipelineConfig:
        for index, override in enumerate(self.type_overrides):
            if override.sink is not None and override.sink not in self.sinks:
                raise ValueError(
                    f"type_overrides[{index}].sink: {override.sink!r} is not one of the sinks {sorted(self.sinks)}"
                )
        return self

    @model_validator(mode="after")
    def _literal_tables_have_their_own_sink_tables(self) -> PipelineConfig:
        # Two source tables in one sink table overwrite each other's rows; the sources of one Cassandra
        # cluster's nodes replicate the same tables (their owner is the cluster).
        # sink table -> (owner, source table) holding it, and where the config names it first
        seen: dict[str, tuple[tuple[str, str], str]] = {}
        for source_name, source in self.sources.items():
            for table in source.tables.literal_tables():
                named = f"sources.{source_name}.tables.include {table!r}"
                holder = (source.table_owner(source_name), table)
                earlier_holder, earlier = seen.setdefault(sink_table_name(table), (holder, named))
                if earlier_holder != holder:
                    raise ValueError(
                        f"{earlier} and {named} would both be the sink table {sink_table_name(table)!r}"
                        " (<database>__<table>): leave one of them out"
                    )
        return self

    @model_validator(mode="after")
    def _cell_tables_have_sinks_that_hold_them(self) -> PipelineConfig:
        # Every source feeds every sink: a sink that cannot merge cells would get rows it cannot apply.
        for source_name, source in self.sources.items():
            if not source.writes_cell_tables:
                continue
            for sink_name, sink in self.sinks.items():
                if not sink.holds_cell_tables:
                    raise ValueError(
                        f"sources.{source_name} ({source.kind}) writes cell tables, which sinks.{sink_name}"
                        f" ({sink.kind}) cannot hold: replicate it into sinks of another kind"
                    )
        return self

    @model_validator(mode="after")
    def _one_embedded_clickhouse_path(self) -> PipelineConfig:
        # chdb serves one on-disk path per process, and a run writes every sink from one process.
        paths = {name: sink.embedded_path for name, sink in self.sinks.items()}
        distinct = {path for path in paths.values() if path is not None}
        if len(distinct) > 1:
            named = ", ".join(f"sinks.{name}.dsn={path!r}" for name, path in sorted(paths.items()) if path)
            raise ValueError(f"embedded ClickHouse sinks must share one chdb path (one per process): {named}")
        return self

    @model_validator(mode="after")
    def _one_streaming_source_per_embedded_clickhouse(self) -> PipelineConfig:
        # A continuous run holds its chdb path for its lifetime; two sources would take it from each other.
        if self.replication.mode == "continuous" and self.embedded_clickhouse_path and len(self.sources) > 1:
            raise ValueError(
                f"replication.mode 'continuous' with {len(self.sources)} sources and an embedded ClickHouse sink"
                f" ({self.embedded_clickhouse_path!r}): chdb serves its path to one process, so only one source"
                " can stream into it; use a ClickHouse server (dsn_env) or replication.mode 'per_run'"
            )
        return self

    @model_validator(mode="after")
    def _sources_sharing_tables_can_take_turns(self) -> PipelineConfig:
        # Sources that write the same tables into a sink without merge locks take turns (run_tags.py); a
        # continuous run holds its turn for its lifetime, and the other sources would wait that long.
        if self.replication.mode != "continuous":
            return self
        unlocked = sorted(name for name, sink in self.sinks.items() if not sink.locks_cell_merges)
        for source_name in self.sources:
            sharing = self.sources_sharing_tables_with(source_name)
            if len(sharing) > 1 and unlocked:
                raise ValueError(
                    f"replication.mode 'continuous' with sources {sharing}, which write the same tables, and"
                    f" sinks {unlocked}, which cannot merge two runs' writes at once: such runs take turns, so"
                    " use replication.mode 'per_run' (or only PostgreSQL sinks, which lock what they merge)"
                )
        return self

    def sources_sharing_tables_with(self, source_name: str) -> list[str]:
        """The sources whose tables have the same owner in the sinks as `source_name`'s (itself included):
        the node sources of one Cassandra cluster."""
        owner = self.sources[source_name].table_owner(source_name)
        return [name for name, source in self.sources.items() if source.table_owner(name) == owner]

    def retention_of(self, source_name: str) -> RetentionConfig:
        """The source's own thresholds if it has them, else the pipeline's."""
        return self.sources[source_name].retention or self.retention

    @property
    def embedded_clickhouse_path(self) -> str | None:
        paths = [s.embedded_path for s in self.sinks.values() if s.embedded_path]
        return paths[0] if paths else None
