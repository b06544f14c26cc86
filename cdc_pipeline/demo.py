"""The demo: `python -m cdc_pipeline.demo [--rounds 5]`, the embedded default end to end.

Starts the embedded servers under ./.cdc_data (a PostgreSQL source read by logical decoding, a
PostgreSQL sink, ClickHouse on chdb), creates a shop with some history, loads that history with the
initial-load backfill, then changes the shop in rounds and replicates after each round, on the
Dagster instance in ./.dagster_home (SQLite). Last, the asset checks compare source and sinks.
`dagster dev -m cdc_pipeline.embedded.definitions` then shows all of it, and keeps it running.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
from contextlib import closing
from pathlib import Path

import dagster as dg
import psycopg2
from psycopg2 import sql

from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.defs.snapshots.assets import snapshot_partitions_name
from cdc_pipeline.defs.snapshots.jobs import plan_snapshot_job_name
from cdc_pipeline.embedded.environment import (
    CLICKHOUSE_SINK,
    REPLICA_SCHEMA,
    SOURCE_NAME,
    EmbeddedEnvironment,
)
from cdc_pipeline.embedded.shop import SCHEMA, TABLES, change_the_shop
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource

# The runs' full logs are in the instance (and the UI); the terminal shows warnings and up.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _initial_load(definitions: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Plan each table's load, then materialize every chunk: what a backfill in the UI does."""
    plan = definitions.resolve_job_def(plan_snapshot_job_name(SOURCE_NAME))
    for table in TABLES:
        qualified = f"{SCHEMA}.{table}"
        plan.execute_in_process(
            instance=instance,
            run_config={**_QUIET, "ops": {f"{plan.name}_op": {"config": {"table": qualified, "chunk_rows": 100}}}},
        )
        snapshot = definitions.resolve_assets_def(snapshot_asset_key(SOURCE_NAME, qualified))
        chunks = instance.get_dynamic_partitions(snapshot_partitions_name(SOURCE_NAME, qualified))
        for chunk in chunks:
            dg.materialize([snapshot], partition_key=chunk, instance=instance, run_config=_QUIET)
        print(f"initial load of {qualified}: {len(chunks)} chunks")


def _summary(environment: EmbeddedEnvironment) -> list[str]:
    lines = [f"{'table':<12}{'source':>8}{'clickhouse':>12}{'postgres':>10}"]
    clickhouse = ClickHouseSinkResource(dsn=environment.chdb_dsn, database=REPLICA_SCHEMA).sink(CLICKHOUSE_SINK)
    with (
        closing(psycopg2.connect(environment.source_dsn)) as source,
        closing(psycopg2.connect(environment.sink_dsn)) as sink,
        source.cursor() as source_cursor,
        sink.cursor() as sink_cursor,
    ):
        for table in TABLES:
            source_cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, table)))
            view = f"{sink_table_name(f'{SCHEMA}.{table}')}_current"
            sink_cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(REPLICA_SCHEMA, view)))
            in_clickhouse = clickhouse.client.query(f"SELECT count() FROM {REPLICA_SCHEMA}.`{view}`").result_rows[0][0]
            lines.append(
                f"{table:<12}{source_cursor.fetchone()[0]:>8}{in_clickhouse:>12}{sink_cursor.fetchone()[0]:>10}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(".cdc_data"))
    args = parser.parse_args()

    data = args.data_dir.resolve()
    shutil.rmtree(data, ignore_errors=True)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists() and Path("dagster.yaml").exists():
        shutil.copy("dagster.yaml", dagster_home / "dagster.yaml")

    environment = EmbeddedEnvironment.open(data)
    try:
        environment.ensure_shop()
        definitions = build_definitions(environment.pipeline())
        replicate = definitions.resolve_job_def(f"replicate_{SOURCE_NAME}")
        rng = random.Random(11)
        with dg.DagsterInstance.get() as instance:
            _initial_load(definitions, instance)
            for round_number in range(args.rounds):
                change_the_shop(environment.source_dsn, rng)
                result = replicate.execute_in_process(instance=instance, run_config=_QUIET)
                outcome_text = "succeeded" if result.success else "FAILED"
                print(f"round {round_number + 1}/{args.rounds}: run {result.run_id} {outcome_text}")
            checks = definitions.resolve_implicit_global_asset_job_def().get_subset(
                asset_check_selection=set(definitions.resolve_asset_graph().asset_check_keys)
            )
            outcome = checks.execute_in_process(instance=instance, raise_on_error=False, run_config=_QUIET)
        print("\n".join(_summary(environment)))
        for evaluation in outcome.get_asset_check_evaluations():
            verdict = "passed" if evaluation.passed else "FAILED"
            print(f"check {'/'.join(evaluation.asset_key.path)} {evaluation.check_name}: {verdict}")
        print(
            f"\nDagster instance: {dagster_home}. To watch the pipeline keep running (sensors on, the shop changing):\n"
            f"  DAGSTER_HOME={dagster_home} .venv/bin/dagster dev -m cdc_pipeline.embedded.definitions"
        )
    finally:
        environment.stop()


if __name__ == "__main__":
    main()
