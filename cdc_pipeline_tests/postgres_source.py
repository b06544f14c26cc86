"""A per-test pipeline whose source is a PostgreSQL database read by logical decoding.

The source is its own database on the session's embedded PostgreSQL (wal_level=logical); the
sinks are a chdb database and a schema of the test's PostgreSQL sink database, as in harness.py.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg2
import yaml
from psycopg2 import sql

from cdc_pipeline.config.loading import parse_pipeline_config
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.config.sources import PostgresSourceConfig
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import DeadLetterQueueResource, MaskingResource
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sinks.postgres import names as postgres_names
from cdc_pipeline.sinks.postgres.resource import PostgresSinkResource
from cdc_pipeline.sources.postgres.catalog import PostgresCatalog
from cdc_pipeline.sources.postgres.connection import PostgresSourceSettings
from cdc_pipeline.sources.postgres.resource import PostgresSourceResource
from cdc_pipeline_tests.harness import (
    CH_SINK,
    MASKING_KEY,
    PG_SINK,
    PipelineRunner,
    canonical,
    read_clickhouse_rows_from,
)

SOURCE = "store"
SCHEMA = "public"


@dataclass
class PostgresSourceHarness(PipelineRunner):
    source_name: ClassVar[str] = SOURCE
    postgres: LocalPostgres
    source_dsn: str
    sink_dsn: str
    chdb_dsn: str
    clickhouse_database: str
    slot: str  # slots are cluster-wide: one per test
    # Literal names give the tables assets and snapshot backfills; the glob replicates all.
    tables: list[str] = field(default_factory=lambda: [f"{SCHEMA}.*"])
    # True when subprocesses (the CLI, crash tests) write the chdb path: this process must not open it.
    clickhouse_in_subprocess: bool = False
    # "per_run" for tests of the per-batch sensor; continuous is the default mode.
    replication_mode: str = "continuous"

    def use_private_clickhouse(self, work_dir: Path) -> None:
        """Give the pipeline a chdb path of its own, for tests that replicate in subprocesses."""
        self.chdb_dsn = f"chdb://{work_dir / 'chdb'}"
        self.clickhouse_in_subprocess = True

    def write_config_file(self, work_dir: Path) -> Path:
        path = work_dir / "pipeline.yaml"
        path.write_text(yaml.safe_dump(self.config_dict()))
        return path

    def config_dict(self) -> dict[str, Any]:
        return {
            "sources": {
                SOURCE: {
                    "kind": "postgres",
                    "dsn_env": "CDC_TEST_SOURCE_DSN",
                    "slot": self.slot,
                    "publication": self.slot,
                    "tables": {"include": self.tables},
                }
            },
            "sinks": {
                CH_SINK: {"kind": "clickhouse", "dsn": self.chdb_dsn, "database": self.clickhouse_database},
                PG_SINK: {"kind": "postgres", "dsn_env": "CDC_TEST_PG_DSN", "schema": "replica"},
            },
            "dlq": {"dsn_env": "CDC_TEST_PG_DSN", "schema": "dlq"},
            "batch": {"max_rows": 50_000, "poll_interval_seconds": 1},
            "replication": {"mode": self.replication_mode},
        }

    @property
    def pipeline(self) -> PipelineConfig:
        return parse_pipeline_config(yaml.safe_dump(self.config_dict()))

    @property
    def source_config(self) -> PostgresSourceConfig:
        config = self.pipeline.sources[SOURCE]
        assert isinstance(config, PostgresSourceConfig)
        return config

    def resources(self) -> dict[str, Any]:
        return {
            source_key(SOURCE): PostgresSourceResource(dsn=self.source_dsn),
            sink_key(CH_SINK): ClickHouseSinkResource(dsn=self.chdb_dsn, database=self.clickhouse_database),
            sink_key(PG_SINK): PostgresSinkResource(dsn=self.sink_dsn, schema_name="replica"),
            DEAD_LETTER_QUEUE: DeadLetterQueueResource(dsn=self.sink_dsn, schema_name="dlq"),
            MASKING: MaskingResource(hmac_key=MASKING_KEY),
        }

    def create_slot(self) -> None:
        """Publication and slot before any change: what the pipeline creates on its first run."""
        source = self.resources()[source_key(SOURCE)].change_source(SOURCE, self.source_config)
        source.ensure_slot()

    # -- the three sides -------------------------------------------------------------------------

    def source_execute(self, *statements: str, parameters: tuple[Any, ...] | None = None) -> None:
        """Run the statements in one transaction."""
        with closing(psycopg2.connect(self.source_dsn)) as connection:
            with connection, connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement, parameters)

    def _vocabulary(self, table: str) -> dict[str, str]:
        catalog = PostgresCatalog(PostgresSourceSettings(self.source_dsn, SOURCE), self.source_config.tables, {})
        schema = catalog.table(SCHEMA, table)
        assert schema is not None, table
        return {column.name: column.data_type for column in schema.columns}

    def source_rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        types = self._vocabulary(table)
        # Columns the pipeline carries as text are compared in their text form.
        columns = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(name)) if kind == "text" else sql.Identifier(name)
            for name, kind in types.items()
        )
        query = sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
            columns, sql.Identifier(SCHEMA), sql.Identifier(table), sql.Identifier(key)
        )
        with closing(psycopg2.connect(self.source_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            rows = cursor.fetchall()
        return [{n: canonical(t, v) for (n, t), v in zip(types.items(), row, strict=True)} for row in rows]

    def clickhouse_rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        return read_clickhouse_rows_from(
            self.clickhouse_in_subprocess,
            self.chdb_dsn,
            self.clickhouse_database,
            f"{SCHEMA}.{table}",
            self._vocabulary(table),
            key,
        )

    def postgres_rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        types = self._vocabulary(table)
        view = sql.Identifier("replica", postgres_names.fit(f"{sink_table_name(f'{SCHEMA}.{table}')}_current"))
        with closing(psycopg2.connect(self.sink_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(view, sql.Identifier(key)))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        return [{n: canonical(types[n], v) for n, v in zip(names, row, strict=False) if n in types} for row in rows]

    def dead_letters(self) -> list[tuple[str, str, str, str, Any]]:
        with closing(psycopg2.connect(self.sink_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('dlq.dead_letters')")
            if cursor.fetchone()[0] is None:
                return []
            cursor.execute("SELECT source_table, sink, stage, error, payload FROM dlq.dead_letters ORDER BY id")
            return cursor.fetchall()

    def slot_position(self) -> str | None:
        with closing(psycopg2.connect(self.source_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (self.source_config.slot_name(SOURCE),),
            )
            row = cursor.fetchone()
        return str(row[0]) if row else None


def drop_slots(postgres: LocalPostgres, database: str) -> None:
    """A database with a replication slot cannot be dropped: drop its slots first."""
    with closing(psycopg2.connect(postgres.dsn())) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s", (database,)
        )
