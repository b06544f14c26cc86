"""The pipeline's YAML configuration, validated by pydantic when it is loaded.

Secrets never appear in this file's values: a field named ``*_env`` holds the *name* of an
environment variable, which the Dagster resources read through ``dg.EnvVar``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from cdc_pipeline.core.sink_names import sink_table_name

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

EnvVarName = Annotated[str, Field(pattern=_ENV_PATTERN, description="name of an environment variable")]


class _StrictModel(BaseModel):
    """Unknown keys are errors: a typo in the YAML must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSelection(_StrictModel):
    """Which source tables replicate, as `database.table` glob patterns."""

    include: list[str] = Field(default_factory=lambda: ["*.*"])
    exclude: list[str] = Field(default_factory=list)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns_name_database_and_table(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if pattern.count(".") != 1:
                raise ValueError(f"pattern {pattern!r} must have the form 'database.table' (globs allowed)")
        return patterns

    def literal_tables(self) -> list[str]:
        """The included names without globs: tables known before any change arrives."""
        return [pattern for pattern in self.include if not any(ch in pattern for ch in "*?[")]

    def selects(self, database: str, table: str) -> bool:
        qualified = f"{database}.{table}"
        included = any(fnmatch.fnmatchcase(qualified, p) for p in self.include)
        return included and not any(fnmatch.fnmatchcase(qualified, p) for p in self.exclude)


class RetentionConfig(_StrictModel):
    """When the `source_log_retained` check warns that a sink's checkpoint nears what the source purges."""

    warn_when_hours_left: float = Field(
        default=24,
        ge=0,
        description="MySQL: warn when the server may purge the binlog a sink's checkpoint is in within this time",
    )
    warn_when_percent_used: float = Field(
        default=80,
        gt=0,
        le=100,
        description="PostgreSQL: share of max_slot_wal_keep_size the slot holds; Cassandra: share of"
        " cdc_total_space cdc_raw holds (at 100% the node refuses writes to CDC tables)",
    )


class _SourceConfigBase(_StrictModel):
    """What every source kind's config answers; a kind overrides what applies to it."""

    # Its changes are cells (Cassandra) merged per column in the sink: only sinks that hold cell tables take them.
    writes_cell_tables: ClassVar[bool] = False

    def marks_safe(self, statement: str) -> bool:
        """Whether the operator marked an unreadable DDL statement as changing nothing the sinks hold."""
        return False


class MySqlSourceConfig(_SourceConfigBase):
    kind: Literal["mysql"] = "mysql"
    host: str = "127.0.0.1"
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = "root"
    password_env: EnvVarName | None = None
    server_id: int = Field(default=4379, ge=1, le=2**32 - 1, description="replica id this reader announces")
    tables: TableSelection = Field(default_factory=TableSelection)
    key_columns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="'database.table' -> key columns, for tables without a primary key",
    )
    resume_by: Literal["position", "gtid"] = Field(
        default="position",
        description="'gtid' (MariaDB): resume by GTID, which survives a failover to another server",
    )
    compiled_row_decoder: bool = Field(
        default=True,
        description="decode row images with the pipeline's compiled decoder (false: mysql-replication's own)",
    )
    retention: RetentionConfig | None = Field(
        default=None, description="thresholds for this source; default: the pipeline's top-level retention"
    )
    safe_statements: list[str] = Field(
        default_factory=list,
        description="regular expressions (searched, case-insensitive; string literals read as '?') of DDL"
        " statements the pipeline cannot read that change nothing the sinks hold; any other unreadable"
        " statement holds its table until marked safe",
    )

    @field_validator("safe_statements")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"safe_statements[{index}] {pattern!r} is not a regular expression: {error}") from None
        return patterns

    def marks_safe(self, statement: str) -> bool:
        return any(re.search(pattern, statement, re.IGNORECASE) for pattern in self.safe_statements)


class PostgresSourceConfig(_SourceConfigBase):
    """A PostgreSQL database read through logical decoding (pgoutput) from a replication slot."""

    kind: Literal["postgres"]
    dsn_env: EnvVarName = Field(description="environment variable holding the libpq DSN of the source database")
    slot: str | None = Field(
        default=None, pattern=_NAME_PATTERN, description="replication slot name; default 'cdc_<source name>'"
    )
    publication: str | None = Field(
        default=None,
        pattern=_NAME_PATTERN,
        description="publication to decode; default 'cdc_<source name>'. Created FOR the selected tables when missing",
    )
    tables: TableSelection = Field(default_factory=TableSelection, description="'schema.table' glob patterns")
    key_columns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="'schema.table' -> key columns, for tables without a primary key",
    )
    retention: RetentionConfig | None = Field(
        default=None, description="thresholds for this source; default: the pipeline's top-level retention"
    )

    def slot_name(self, source_name: str) -> str:
        return self.slot or f"cdc_{source_name}".lower()

    def publication_name(self, source_name: str) -> str:
        return self.publication or f"cdc_{source_name}".lower()


class CassandraSourceConfig(_SourceConfigBase):
    """A Cassandra node whose CDC commit-log segments (cdc_raw) are read on the node's own machine."""

    writes_cell_tables: ClassVar[bool] = True

    kind: Literal["cassandra"]
    hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"], min_length=1, description="contact points")
    port: int = Field(default=9042, ge=1, le=65535, description="native transport (CQL) port")
    username_env: EnvVarName | None = Field(default=None, description="environment variable holding the user name")
    password_env: EnvVarName | None = Field(default=None, description="environment variable holding the password")
    cassandra_yaml: str = Field(
        min_length=1,
        description="path of the node's cassandra.yaml: the segment reader needs it, and cdc_raw_directory comes"
        " from it (default <cassandra home>/data/cdc_raw)",
    )
    tables: TableSelection = Field(
        default_factory=TableSelection,
        description="'keyspace.table' glob patterns; tables matched by a glob replicate if they have cdc = true,"
        " a table named without globs must have it",
    )
    retention: RetentionConfig | None = Field(
        default=None, description="thresholds for this source; default: the pipeline's top-level retention"
    )

    @model_validator(mode="after")
    def _credentials_come_in_pairs(self) -> CassandraSourceConfig:
        if (self.username_env is None) != (self.password_env is None):
            missing = "password_env" if self.password_env is None else "username_env"
            raise ValueError(f"{missing} is required when the other of username_env/password_env is set")
        return self


def _source_kind(value: Any) -> str:
    # `kind` may be left out for MySQL sources: the first source kind the pipeline had.
    if isinstance(value, dict):
        return str(value.get("kind", "mysql"))
    return str(getattr(value, "kind", "mysql"))


SourceConfig = Annotated[
    Annotated[MySqlSourceConfig, Tag("mysql")]
    | Annotated[PostgresSourceConfig, Tag("postgres")]
    | Annotated[CassandraSourceConfig, Tag("cassandra")],
    Discriminator(_source_kind),
]


class _SinkConfigBase(_StrictModel):
    """What every sink kind's config answers; a kind overrides what applies to it."""

    # Takes a Cassandra source's cell tables (per-cell merge state, sinks/cell_merge/).
    holds_cell_tables: ClassVar[bool] = False

    @property
    def embedded_path(self) -> str | None:
        """The on-disk path of an embedded engine this sink runs in the pipeline's own process, if any."""
        return None


class ClickHouseSinkConfig(_SinkConfigBase):
    kind: Literal["clickhouse"] = "clickhouse"
    holds_cell_tables: ClassVar[bool] = True
    dsn: str = Field(default="chdb:///tmp/cdc_pipeline/chdb", description="chdb:///path or http(s)://host:port")
    dsn_env: EnvVarName | None = Field(default=None, description="read the DSN from this variable instead")
    database: str = Field(default="cdc", pattern=_NAME_PATTERN)
    busy_timeout_seconds: int = Field(
        default=60, ge=0, le=3600, description="chdb: how long to wait for another process to release the path"
    )

    @property
    def embedded_path(self) -> str | None:
        """The on-disk path of an embedded (chdb) sink configured in this file, else None."""
        return self.dsn.removeprefix("chdb://") if self.dsn_env is None and self.dsn.startswith("chdb:") else None


class PostgresSinkConfig(_SinkConfigBase):
    kind: Literal["postgres"] = "postgres"
    holds_cell_tables: ClassVar[bool] = True
    dsn_env: EnvVarName = Field(description="environment variable holding the libpq DSN")
    schema_name: str = Field(default="cdc", pattern=_NAME_PATTERN, alias="schema")
    hypertables: dict[str, str] = Field(
        default_factory=dict,
        description="TimescaleDB: 'database.table' -> the key column its sink table is a hypertable on"
        " (applied when the sink database has the timescaledb extension)",
    )


SinkConfig = Annotated[ClickHouseSinkConfig | PostgresSinkConfig, Field(discriminator="kind")]


def config_models(config_union: Any) -> list[type[BaseModel]]:
    """The per-kind models of `SourceConfig` or `SinkConfig`, in their order."""
    union = get_args(config_union)[0]
    return [get_args(member)[0] if get_origin(member) is Annotated else member for member in get_args(union)]


def kind_of(model: type[BaseModel]) -> str:
    """The `kind` a config model answers to."""
    return str(get_args(model.model_fields["kind"].annotation)[0])


MaskAction = Literal["hash", "token", "redact", "truncate", "null", "none"]


class MaskRule(_StrictModel):
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


class MaskingConfig(_StrictModel):
    hmac_key_env: EnvVarName = Field(
        default="CDC_MASKING_KEY", description="environment variable holding the HMAC key for hash/token"
    )
    classify_by_name: bool = Field(default=True, description="mask PII/PHI columns recognised by their name")
    rules: list[MaskRule] = Field(default_factory=list)


class TypeOverride(_StrictModel):
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


class BatchConfig(_StrictModel):
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


class ReplicationConfig(_StrictModel):
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


class SinkOutageConfig(_StrictModel):
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


class DlqConfig(_StrictModel):
    dsn_env: EnvVarName = Field(description="environment variable holding the PostgreSQL DSN of the DLQ")
    schema_name: str = Field(default="cdc_dlq", pattern=_NAME_PATTERN, alias="schema")


class PipelineConfig(_StrictModel):
    sources: dict[str, SourceConfig] = Field(min_length=1)
    sinks: dict[str, SinkConfig] = Field(min_length=1)
    dlq: DlqConfig
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    type_overrides: list[TypeOverride] = Field(default_factory=list)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    replication: ReplicationConfig = Field(default_factory=ReplicationConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    sink_outages: SinkOutageConfig = Field(default_factory=SinkOutageConfig)

    @field_validator("sources", "sinks")
    @classmethod
    def _names_are_identifiers(cls, named: dict[str, object]) -> dict[str, object]:
        for name in named:
            if not re.fullmatch(_NAME_PATTERN, name):
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
        # Two source tables in one sink table overwrite each other's rows.
        seen: dict[str, str] = {}
        for source_name, source in self.sources.items():
            for table in source.tables.literal_tables():
                named = f"sources.{source_name}.tables.include {table!r}"
                earlier = seen.setdefault(sink_table_name(table), named)
                if earlier != named:
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

    def retention_of(self, source_name: str) -> RetentionConfig:
        """The source's own thresholds if it has them, else the pipeline's."""
        return self.sources[source_name].retention or self.retention

    @property
    def embedded_clickhouse_path(self) -> str | None:
        paths = [s.embedded_path for s in self.sinks.values() if s.embedded_path]
        return paths[0] if paths else None
