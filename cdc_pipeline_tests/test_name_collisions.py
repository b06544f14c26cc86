"""Names that agree in a long prefix stay apart in the sinks, and names Dagster refuses get assets
(issue 12: colliding names lose data; odd names stop the code location)."""

from __future__ import annotations

from cdc_pipeline.defs.asset_keys import sink_table_asset_key, snapshot_asset_key
from cdc_pipeline.sinks.postgres_session import staging_table_name
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, SOURCE, PipelineHarness, assert_same_rows

_STEM = "customer_subscription_billing_events_arch_"


def test_tables_sharing_a_long_name_prefix_keep_their_own_staging_tables(harness: PipelineHarness) -> None:
    """Three tables whose names differ only past byte 50, written in one batch (one PostgreSQL
    transaction): each is staged apart, so the second keeps its four decimal places and its long
    note, and the third its extra column."""
    harness.source_execute(
        f"CREATE TABLE {_STEM}2023 (id INT PRIMARY KEY, amount DECIMAL(12,2), note VARCHAR(10))",
        f"CREATE TABLE {_STEM}2024 (id INT PRIMARY KEY, amount DECIMAL(12,4), note VARCHAR(100))",
        f"CREATE TABLE {_STEM}2025 (id INT PRIMARY KEY, amount DECIMAL(12,4), note VARCHAR(100), region VARCHAR(8))",
        "BEGIN",
        f"INSERT INTO {_STEM}2023 VALUES (1, 10.25, 'short')",
        f"INSERT INTO {_STEM}2024 VALUES (1, 10.2549, '{'forty characters, past the first table ':<40}')",
        f"INSERT INTO {_STEM}2025 VALUES (1, 3.1416, 'third', 'emea')",
        "COMMIT",
    )
    harness.replicate()
    assert harness.dead_letters() == []
    for year in (2023, 2024, 2025):
        table = f"{_STEM}{year}"
        source = harness.source_rows(table)
        assert_same_rows(harness.postgres_rows(table), source, f"PostgreSQL {table}")
        assert_same_rows(harness.clickhouse_rows(table), source, f"ClickHouse {table}")


def test_staging_names_fit_postgres_and_differ_for_every_sink_table() -> None:
    names = [f"shop__{_STEM}{year}" for year in range(2000, 2100)] + ["ü" * 40 + str(n) for n in range(10)]
    staged = [staging_table_name(name) for name in names]
    assert len(set(staged)) == len(names)
    assert all(len(name.encode()) <= 63 for name in staged)
    # Cut on a character boundary: every name is valid UTF-8 with a readable part of its table.
    assert staging_table_name("ü" * 40).endswith("ü")


def test_tables_whose_names_dagster_refuses_get_assets_of_their_own(harness: PipelineHarness) -> None:
    """`sp ace`, `naïve_表` and `semi;colon` are valid MariaDB names but not Dagster names: the code
    location still loads, each table has its own sink-table and snapshot assets, and they replicate."""
    tables = ["sp ace", "naïve_表", "semi;colon"]
    harness.source_execute(
        *[f"CREATE TABLE `{table}` (id INT PRIMARY KEY, v VARCHAR(10))" for table in tables],
        *[f"INSERT INTO `{table}` VALUES ({n}, 'row {n}')" for n, table in enumerate(tables)],
    )
    harness.configure_source(tables={"include": [f"{harness.database}.{table}" for table in tables]})
    definitions = harness.definitions()
    keys = definitions.resolve_asset_graph().get_all_asset_keys()
    for table in tables:
        qualified = f"{harness.database}.{table}"
        for key in (sink_table_asset_key(PG_SINK, qualified), snapshot_asset_key(SOURCE, qualified)):
            assert key in keys, key
    assert len({sink_table_asset_key(PG_SINK, f"{harness.database}.{t}") for t in tables}) == len(tables)

    result = harness.replicate()
    materialized = {m.asset_key for m in result.asset_materializations_for_node(f"replicate_{SOURCE}")}
    for table in tables:
        qualified = f"{harness.database}.{table}"
        assert sink_table_asset_key(CH_SINK, qualified) in materialized
        source = harness.source_rows(table)
        assert_same_rows(harness.postgres_rows(table), source, f"PostgreSQL {table}")
        assert_same_rows(harness.clickhouse_rows(table), source, f"ClickHouse {table}")
