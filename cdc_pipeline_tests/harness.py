"""A per-test pipeline wired to the session's real servers, and row comparison across them."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import psycopg2
import psycopg2.extras
import yaml
from psycopg2 import sql

from cdc_pipeline.config.loading import parse_pipeline_config
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.fault_injection import CRASH_AT_ENV, CRASH_ON_HIT_ENV
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.core.type_families import BINARY_TYPES
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import DeadLetterQueueResource, MaskingResource
from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sinks.postgres import names as postgres_names
from cdc_pipeline.sinks.postgres.resource import PostgresSinkResource
from cdc_pipeline.sources.mysql.resource import MySqlSourceResource

MASKING_KEY = "test-masking-key-not-a-secret"
SOURCE = "shop"
CH_SINK = "warehouse"
PG_SINK = "analytics"


class PipelineRunner:
    """Runs a test pipeline's jobs in process with the test's own resources (shared by the harnesses)."""

    source_name: ClassVar[str]

    @property
    def pipeline(self) -> PipelineConfig:
        raise NotImplementedError

    def resources(self) -> dict[str, Any]:
        raise NotImplementedError

    def definitions(self) -> dg.Definitions:
        return build_definitions(self.pipeline, self.resources())

    def replicate(self, instance: dg.DagsterInstance | None = None, **run_config: Any) -> dg.ExecuteInProcessResult:
        """The per-run job in process: drains the log (stop_at, max_rows per batch, max_batches)."""
        job = self.definitions().resolve_job_def(f"replicate_{self.source_name}")
        config = {"ops": {f"replicate_{self.source_name}": {"config": run_config}}} if run_config else None
        result = job.execute_in_process(run_config=config, instance=instance)
        assert result.success
        return result

    def stream(
        self,
        instance: dg.DagsterInstance | None = None,
        raise_on_error: bool = True,
        tags: dict[str, str] | None = None,
        **run_config: Any,
    ) -> dg.ExecuteInProcessResult:
        """The streaming job in process; by default until the backlog is drained."""
        job = self.definitions().resolve_job_def(f"stream_{self.source_name}")
        config = {"until_caught_up": True, **run_config}
        result = job.execute_in_process(
            run_config={"ops": {f"stream_{self.source_name}": {"config": config}}},
            instance=instance,
            raise_on_error=raise_on_error,
            tags=tags,
        )
        assert result.success or not raise_on_error
        return result

    def replay_dead_letters(self) -> dg.ExecuteInProcessResult:
        result = self.definitions().resolve_job_def("replay_dead_letters").execute_in_process()
        assert result.success
        return result


@dataclass
class PipelineHarness(PipelineRunner):
    source_name: ClassVar[str] = SOURCE
    mariadb: LocalMariaDb
    database: str  # the source database, also the ClickHouse database's stem
    pg_dsn: str
    chdb_dsn: str
    work_dir: Path
    extra_config: dict[str, Any]
    # True when subprocesses (the CLI, crash tests) write the chdb path: this process must not open it.
    clickhouse_in_subprocess: bool = False

    def use_private_clickhouse(self) -> None:
        """Give the pipeline a chdb path of its own, for tests that replicate in subprocesses."""
        self.chdb_dsn = f"chdb://{self.work_dir / 'chdb'}"
        self.clickhouse_in_subprocess = True

    # -- configuration ---------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "sources": {
                SOURCE: {
                    "host": "127.0.0.1",
                    "port": self.mariadb.port,
                    "user": "root",
                    "server_id": 1000 + os.getpid() % 1000,
                    "tables": {"include": [f"{self.database}.*"]},
                }
            },
            "sinks": {
                CH_SINK: {"kind": "clickhouse", "dsn": self.chdb_dsn, "database": f"{self.database}_ch"},
                PG_SINK: {"kind": "postgres", "dsn_env": "CDC_TEST_PG_DSN", "schema": "replica"},
            },
            "dlq": {"dsn_env": "CDC_TEST_PG_DSN", "schema": "dlq"},
            "batch": {"max_rows": 50_000, "poll_interval_seconds": 1},
        }
        for key, value in self.extra_config.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def configure_source(self, **fields: Any) -> None:
        """Change fields of the source's config (tables, key_columns, resume_by, ...)."""
        self.extra_config["sources"] = {SOURCE: {**self.config_dict()["sources"][SOURCE], **fields}}

    @property
    def pipeline(self) -> PipelineConfig:
        return parse_pipeline_config(yaml.safe_dump(self.config_dict()))

    def write_config_file(self) -> Path:
        path = self.work_dir / "pipeline.yaml"
        path.write_text(yaml.safe_dump(self.config_dict()))
        return path

    def resources(self) -> dict[str, Any]:
        pipeline = self.pipeline
        return {
            source_key(SOURCE): MySqlSourceResource(
                host="127.0.0.1", port=self.mariadb.port, user="root", server_id=pipeline.sources[SOURCE].server_id
            ),
            sink_key(CH_SINK): ClickHouseSinkResource(dsn=self.chdb_dsn, database=f"{self.database}_ch"),
            sink_key(PG_SINK): PostgresSinkResource(dsn=self.pg_dsn, schema_name="replica"),
            DEAD_LETTER_QUEUE: DeadLetterQueueResource(dsn=self.pg_dsn, schema_name="dlq"),
            MASKING: MaskingResource(hmac_key=MASKING_KEY),
        }

    # -- the three sides -------------------------------------------------------------------------

    def source_execute(self, *statements: str) -> None:
        with self.mariadb.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"USE `{self.database}`")
            for statement in statements:
                cursor.execute(statement)

    def source_column_types(self, table: str) -> dict[str, str]:
        with self.mariadb.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s"
                " ORDER BY ORDINAL_POSITION",
                (self.database, table),
            )
            types = {str(n): str(t).lower() for n, t in cursor.fetchall()}
            # MariaDB's JSON is LONGTEXT with CHECK (json_valid(`column`)).
            cursor.execute(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
                " WHERE CONSTRAINT_SCHEMA=%s AND TABLE_NAME=%s",
                (self.database, table),
            )
            for (clause,) in cursor.fetchall():
                for name in types:
                    if str(clause).replace(" ", "").lower() == f"json_valid(`{name.lower()}`)":
                        types[name] = "json"
            return types

    def source_rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        types = self.source_column_types(table)
        with self.mariadb.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM `{self.database}`.`{table}` ORDER BY `{key}`")
            names = [d[0] for d in cursor.description]
            return [{n: canonical(types[n], v) for n, v in zip(names, row, strict=False)} for row in cursor.fetchall()]

    def clickhouse_rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        types = self.source_column_types(table)
        arguments = (self.chdb_dsn, f"{self.database}_ch", f"{self.database}.{table}", types, key)
        return read_clickhouse_rows_from(self.clickhouse_in_subprocess, *arguments)

    def drop_clickhouse_database(self) -> None:
        sink = ClickHouseSinkResource(dsn=self.chdb_dsn, database=f"{self.database}_ch").sink(CH_SINK)
        sink.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(self.database + '_ch')}")

    def postgres_rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        types = self.source_column_types(table)
        view = sql.Identifier("replica", postgres_names.fit(f"{sink_table_name(f'{self.database}.{table}')}_current"))
        with psycopg2.connect(self.pg_dsn) as connection, connection.cursor() as cursor:
            # jsonb as its text: a JSON string value would otherwise come back as a bare Python str.
            psycopg2.extras.register_default_jsonb(cursor, loads=lambda text: text)
            cursor.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(view, sql.Identifier(key)))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        connection.close()
        return [{n: canonical(types[n], v) for n, v in zip(names, row, strict=False)} for row in rows]

    def dead_letters(self) -> list[tuple[str, str, str, str, Any]]:
        with closing(psycopg2.connect(self.pg_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('dlq.dead_letters')")
            if cursor.fetchone()[0] is None:
                return []
            cursor.execute("SELECT source_table, sink, stage, error, payload FROM dlq.dead_letters ORDER BY id")
            return cursor.fetchall()


def read_clickhouse_rows_from(
    in_subprocess: bool, chdb_dsn: str, database: str, source_table: str, types: dict[str, str], key: str
) -> list[dict[str, Any]]:
    """Read here, or, when the chdb path belongs to another process's runs, from a fresh process too."""
    arguments = (chdb_dsn, database, source_table, types, key)
    if not in_subprocess:
        return read_clickhouse_rows(*arguments)
    completed = subprocess.run(
        [sys.executable, "-m", "cdc_pipeline_tests.clickhouse_dump"],
        input=pickle.dumps(arguments),
        capture_output=True,
        check=True,
    )
    return pickle.loads(completed.stdout)


def run_summary(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The output metadata of a replication run's one op: totals, each sink's status, retention."""
    outputs = [event for event in result.all_events if event.event_type_value == "STEP_OUTPUT"]
    assert len(outputs) == 1, outputs
    return {key: value.value for key, value in outputs[0].step_output_data.metadata.items()}


def run_replication_cli(
    config_path: Path,
    dagster_home: Path,
    source: str,
    crash_at: str | None = None,
    streaming: bool = False,
    crash_on_hit: int = 1,
) -> subprocess.CompletedProcess[str]:
    """`dagster job execute` of the replication job (one batch), or of the streaming job until the
    backlog is drained, in a process of its own (which kill -9 may end at `crash_at`'s Nth hit)."""
    env = {**os.environ, "CDC_PIPELINE_CONFIG": str(config_path), "DAGSTER_HOME": str(dagster_home)}
    env.pop(CRASH_AT_ENV, None)
    env.pop(CRASH_ON_HIT_ENV, None)
    if crash_at is not None:
        env[CRASH_AT_ENV] = crash_at
        env[CRASH_ON_HIT_ENV] = str(crash_on_hit)
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "job", "execute", "-m", "cdc_pipeline.definitions"]
    if streaming:
        run_config = dagster_home / f"stream_{source}.yaml"
        run_config.write_text(yaml.safe_dump({"ops": {f"stream_{source}": {"config": {"until_caught_up": True}}}}))
        command += ["-j", f"stream_{source}", "-c", str(run_config)]
    else:
        command += ["-j", f"replicate_{source}"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def read_clickhouse_rows(
    chdb_dsn: str, database: str, source_table: str, types: dict[str, str], key: str
) -> list[dict[str, Any]]:
    sink = ClickHouseSinkResource(dsn=chdb_dsn, database=database).sink(CH_SINK)
    expressions = [
        f"hex({quote_identifier(n)})" if t in BINARY_TYPES else quote_identifier(n) for n, t in types.items()
    ]
    view = f"{quote_identifier(database)}.{quote_identifier(sink_table_name(source_table) + '_current')}"
    rows = sink.client.query(
        f"SELECT {', '.join(expressions)} FROM {view} ORDER BY {quote_identifier(key)}"
    ).result_rows
    return [
        {
            name: canonical(
                data_type, bytes.fromhex(value) if (data_type in BINARY_TYPES and value is not None) else value
            )
            for (name, data_type), value in zip(types.items(), row, strict=False)
        }
        for row in rows
    ]


def canonical(data_type: str, value: Any) -> Any:
    """One comparable form per source type for values read back from MariaDB, ClickHouse or PostgreSQL."""
    if value is None:
        return None
    if data_type == "bit":
        if isinstance(value, bytes):
            return int.from_bytes(value, "big")
        return int(value, 2) if isinstance(value, str) else int(value)
    if data_type in ("datetime", "timestamp") and isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
    if data_type == "time":
        if isinstance(value, dt.time):
            return dt.timedelta(
                hours=value.hour, minutes=value.minute, seconds=value.second, microseconds=value.microsecond
            )
        return value
    if data_type == "uuid":
        return str(value)
    if data_type == "json":
        return json.loads(value) if isinstance(value, str) else value
    if data_type in ("decimal", "numeric"):
        number = Decimal(value)
        return number if number.is_finite() else str(number)  # NaN never equals itself
    if data_type in BINARY_TYPES:
        return bytes(value)
    if data_type == "set" and not isinstance(value, str):
        return ",".join(sorted(value))
    if data_type in ("char", "varchar", "text", "tinytext", "mediumtext", "longtext", "enum", "set") and isinstance(
        value, bytes
    ):
        return value.decode()
    return value


def assert_same_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]], where: str) -> None:
    """Row-by-row equality, reporting the first differing cells rather than a truncated repr."""
    differences = []
    for index, (got, want) in enumerate(zip(actual, expected, strict=False)):
        for column in want:
            if got.get(column, "<missing>") != want[column]:
                found = got.get(column, "<missing>")
                differences.append(f"row {index} column {column}: {where} has {found!r}, source {want[column]!r}")
    assert len(actual) == len(expected), f"{where} has {len(actual)} rows, source {len(expected)}"
    assert not differences, "\n".join(differences[:20])
