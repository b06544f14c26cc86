"""The demo: `python -m cdc_pipeline.demo [--rounds 5]`.

Starts a throwaway MariaDB (binlog on) and an embedded PostgreSQL under ./.cdc_data, creates a
small shop (customers with PII, orders, payments), changes it in rounds, and after each round runs
the replication job into ClickHouse (embedded chdb) and PostgreSQL on the Dagster instance in
./.dagster_home (SQLite), where `dagster dev` shows the runs, assets and checks afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
from pathlib import Path

import dagster as dg
import psycopg2
import yaml

from cdc_pipeline.config.loading import CONFIG_PATH_ENV, load_pipeline_config
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.defs.resources import ClickHouseSinkResource
from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.mapping.mapper import sink_table_name

SHOP_SCHEMA = [
    "CREATE DATABASE shop CHARACTER SET utf8mb4",
    """CREATE TABLE shop.customers (
        id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, full_name VARCHAR(100) NOT NULL, email VARCHAR(200) NOT NULL,
        phone VARCHAR(40), birth_date DATE, home_address VARCHAR(255), created_at DATETIME(6) NOT NULL)""",
    """CREATE TABLE shop.orders (
        id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, customer_id INT UNSIGNED NOT NULL,
        status ENUM('new','paid','shipped','cancelled') NOT NULL, total DECIMAL(12,2) NOT NULL,
        placed_at DATETIME(6) NOT NULL, items JSON)""",
    """CREATE TABLE shop.payments (
        id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, order_id INT UNSIGNED NOT NULL, card_number VARCHAR(19),
        amount DECIMAL(12,2) NOT NULL, paid_at TIMESTAMP(3) NULL)""",
]
TABLES = ("customers", "orders", "payments")
# The runs' full logs are in the instance (and the UI); the terminal shows warnings and up.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _change_the_shop(mariadb: LocalMariaDb, rng: random.Random, round_number: int) -> None:
    with mariadb.settings.connect() as connection, connection.cursor() as cursor:
        for _ in range(20):
            n = rng.randrange(10**6)
            cursor.execute(
                "INSERT INTO shop.customers (full_name, email, phone, birth_date, home_address, created_at)"
                " VALUES (%s, %s, %s, %s, %s, NOW(6))",
                (
                    f"Customer {n}",
                    f"customer{n}@example.com",
                    f"+1-555-{n % 10000:04d}",
                    f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}",
                    f"{n} Main Street",
                ),
            )
            customer = cursor.lastrowid
            cursor.execute(
                "INSERT INTO shop.orders (customer_id, status, total, placed_at, items)"
                " VALUES (%s, 'new', %s, NOW(6), %s)",
                (
                    customer,
                    f"{rng.randrange(100, 99999) / 100:.2f}",
                    json.dumps({"sku": f"A-{n}", "qty": rng.randrange(1, 5)}),
                ),
            )
        cursor.execute("UPDATE shop.orders SET status = 'paid' WHERE status = 'new' AND id % 2 = 0")
        cursor.execute(
            "INSERT INTO shop.payments (order_id, card_number, amount, paid_at)"
            " SELECT id, '4111111111111111', total, NOW(3) FROM shop.orders WHERE status = 'paid'"
            " AND id NOT IN (SELECT order_id FROM shop.payments)"
        )
        cursor.execute("UPDATE shop.orders SET status = 'shipped' WHERE status = 'paid' AND id % 3 = 0")
        if round_number > 0:
            cursor.execute("DELETE FROM shop.orders WHERE status = 'new' AND id % 5 = 1")


def _write_config(data: Path, mariadb: LocalMariaDb) -> Path:
    config = {
        "sources": {
            "shop": {
                "host": "127.0.0.1",
                "port": mariadb.port,
                "user": "root",
                "tables": {"include": [f"shop.{t}" for t in TABLES]},
            }
        },
        "sinks": {
            "warehouse": {"kind": "clickhouse", "dsn": f"chdb://{data / 'chdb'}", "database": "shop_replica"},
            "analytics": {"kind": "postgres", "dsn_env": "CDC_DEMO_PG_DSN", "schema": "shop_replica"},
        },
        "dlq": {"dsn_env": "CDC_DEMO_PG_DSN", "schema": "cdc_dlq"},
        "masking": {"rules": [{"table": "shop.customers", "column": "full_name", "action": "truncate", "length": 9}]},
        "batch": {"max_rows": 10_000, "poll_interval_seconds": 5},
    }
    path = data / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _summary(mariadb: LocalMariaDb, pg_dsn: str, chdb_dsn: str) -> list[str]:
    lines = [f"{'table':<12}{'source':>8}{'clickhouse':>12}{'postgres':>10}"]
    clickhouse = ClickHouseSinkResource(dsn=chdb_dsn, database="shop_replica").sink("warehouse")
    with (
        mariadb.settings.connect() as my,
        my.cursor() as cursor,
        psycopg2.connect(pg_dsn) as pg,
        pg.cursor() as pg_cursor,
    ):
        for table in TABLES:
            cursor.execute(f"SELECT COUNT(*) FROM shop.`{table}`")
            name = sink_table_name(f"shop.{table}")
            pg_cursor.execute(f'SELECT count(*) FROM shop_replica."{name}_current"')
            ch_rows = clickhouse.client.query(f"SELECT count() FROM shop_replica.`{name}_current`").result_rows[0][0]
            lines.append(f"{table:<12}{cursor.fetchone()[0]:>8}{ch_rows:>12}{pg_cursor.fetchone()[0]:>10}")
    pg.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(".cdc_data"))
    args = parser.parse_args()

    data = args.data_dir.resolve()
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists() and Path("dagster.yaml").exists():
        shutil.copy("dagster.yaml", dagster_home / "dagster.yaml")

    mariadb = LocalMariaDb(data / "mariadb").start()
    postgres = LocalPostgres(data / "postgres" / "data").start()
    try:
        os.environ["CDC_DEMO_PG_DSN"] = postgres.create_database("shop_replica")
        os.environ.setdefault("CDC_MASKING_KEY", secrets.token_hex(32))
        with mariadb.settings.connect() as connection, connection.cursor() as cursor:
            for statement in SHOP_SCHEMA:
                cursor.execute(statement)
        os.environ[CONFIG_PATH_ENV] = str(_write_config(data, mariadb))
        definitions = build_definitions(load_pipeline_config())
        job = definitions.resolve_job_def("replicate_shop")
        rng = random.Random(7)
        with dg.DagsterInstance.get() as instance:
            for round_number in range(args.rounds):
                _change_the_shop(mariadb, rng, round_number)
                result = job.execute_in_process(instance=instance, run_config=_QUIET)
                outcome_text = "succeeded" if result.success else "FAILED"
                print(f"round {round_number + 1}/{args.rounds}: run {result.run_id} {outcome_text}")
            checks = definitions.resolve_implicit_global_asset_job_def().get_subset(
                asset_check_selection=set(definitions.resolve_asset_graph().asset_check_keys)
            )
            outcome = checks.execute_in_process(instance=instance, raise_on_error=False, run_config=_QUIET)
        print("\n".join(_summary(mariadb, os.environ["CDC_DEMO_PG_DSN"], f"chdb://{data / 'chdb'}")))
        for evaluation in outcome.get_asset_check_evaluations():
            verdict = "passed" if evaluation.passed else "FAILED"
            print(f"check {'/'.join(evaluation.asset_key.path)} {evaluation.check_name}: {verdict}")
        print(f"\nDagster instance: {dagster_home} (runs, materializations and checks are there for `dagster dev`)")
    finally:
        postgres.stop()
        mariadb.stop()


if __name__ == "__main__":
    main()
