"""The source kinds' config models and the `SourceConfig` union the pipeline's `sources` hold.

One model per kind (MySQL, PostgreSQL, Cassandra), what they share (`_SourceConfigBase`), and the
parts a source's config is made of: its table selection and its retention thresholds.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from cdc_pipeline.config.base import NAME_PATTERN, EnvVarName, StrictModel


class TableSelection(StrictModel):
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


class RetentionConfig(StrictModel):
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


class _SourceConfigBase(StrictModel):
    """What every source kind's config answers; a kind overrides what applies to it."""

    # Its changes are cells (Cassandra) merged per column in the sink: only sinks that hold cell tables take them.
    writes_cell_tables: ClassVar[bool] = False

    def marks_safe(self, statement: str) -> bool:
        """Whether the operator marked an unreadable DDL statement as changing nothing the sinks hold."""
        return False

    def table_owner(self, source_name: str) -> str:
        """Who holds this source's tables in the sinks (their owner claims): the source itself. Two
        owners cannot share a sink table: their rows would overwrite each other's."""
        return source_name


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
        default=None, pattern=NAME_PATTERN, description="replication slot name; default 'cdc_<source name>'"
    )
    publication: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
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
    cluster: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="the cluster this node belongs to: a source per node reads that node's cdc_raw, and the"
        " sources naming one cluster write the same sink tables (each change arrives once per replica and"
        " the sinks merge cells, so the copies land once in effect)",
    )

    def table_owner(self, source_name: str) -> str:
        # Every replica's source writes the cluster's tables: the claim is the cluster's.
        return f"cluster:{self.cluster}" if self.cluster is not None else source_name

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
