"""Names that agree in a long prefix stay apart in the sinks, and names Dagster refuses get assets
(issue 12: colliding names lose data; odd names stop the code location)."""

from __future__ import annotations

from contextlib import closing

import psycopg2
import pytest
from psycopg2 import sql

from cdc_pipeline.core.schema import qualify, split_qualified
from cdc_pipeline.defs.asset_keys import sink_table_asset_key, snapshot_asset_key
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sinks.postgres.names import fit, staging_table_name
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


def test_postgres_names_past_63_bytes_keep_a_readable_start_and_stay_apart() -> None:
    long_table = "shop__" + "ledger_entries_of_the_northern_region_" * 2
    names = [
        long_table,
        long_table + "_current",
        long_table[:-1] + "X",
        "d" * 64 + "__t",
        "d" * 64 + "__t_current",
        "shop__" + "表" * 20,
        "shop__" + "表" * 20 + "_current",
    ]
    fitted = [fit(name) for name in names]
    assert len(set(fitted)) == len(names)
    for name, short in zip(names, fitted, strict=True):
        assert len(short.encode()) <= 63
        # A readable start of the table's own name, cut on a character boundary.
        assert name.startswith(short.rsplit("_", 1)[0][:20])
    assert fit("shop__orders") == "shop__orders"  # names that fit keep their name


_LONG_NAMES = ["entries_of_the_ledger_for_every_customer_of_the_north_region", "表" * 20]


def test_tables_whose_sink_names_pass_postgres_63_bytes_replicate_with_their_views(harness: PipelineHarness) -> None:
    """A 60-character table and a 20-character CJK one: each sink name and its `_current` view pass
    PostgreSQL's 63 bytes (PostgreSQL once cut both to one name and the sink halted for every table)."""
    assert all(len(f"{harness.database}__{name}_current".encode()) > 63 for name in _LONG_NAMES)
    harness.source_execute(
        *[f"CREATE TABLE `{name}` (id INT PRIMARY KEY, v VARCHAR(20))" for name in _LONG_NAMES],
        "CREATE TABLE plain (id INT PRIMARY KEY, v VARCHAR(20))",
        *[f"INSERT INTO `{name}` VALUES (1, 'one'), (2, 'two')" for name in _LONG_NAMES],
        "INSERT INTO plain VALUES (1, 'one')",
    )
    harness.replicate()
    harness.source_execute(*[f"UPDATE `{name}` SET v = 'changed' WHERE id = 2" for name in _LONG_NAMES])
    harness.replicate()
    assert harness.dead_letters() == []
    for table in [*_LONG_NAMES, "plain"]:
        source = harness.source_rows(table)
        assert_same_rows(harness.postgres_rows(table), source, f"PostgreSQL {table}")
        assert_same_rows(harness.clickhouse_rows(table), source, f"ClickHouse {table}")


def test_a_table_named_like_another_tables_view_waits_alone_naming_it(harness: PipelineHarness) -> None:
    """Tables `x` and `x_current`: the view of `x` is named `x_current` in both sinks. The first
    table takes the name; the other's rows wait in the DLQ with a reason that says so, and the
    neighbours replicate."""
    harness.source_execute(
        "CREATE TABLE x (id INT PRIMARY KEY, v VARCHAR(20))",
        "CREATE TABLE x_current (id INT PRIMARY KEY, v VARCHAR(20))",
        "CREATE TABLE plain (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO x VALUES (1, 'x one')",
        "INSERT INTO x_current VALUES (1, 'x_current one')",
        "INSERT INTO plain VALUES (1, 'plain one')",
    )
    harness.replicate()
    harness.source_execute("INSERT INTO x VALUES (2, 'x two')", "INSERT INTO x_current VALUES (2, 'x_current two')")
    harness.replicate()
    for table in ("x", "plain"):
        source = harness.source_rows(table)
        assert_same_rows(harness.postgres_rows(table), source, f"PostgreSQL {table}")
        assert_same_rows(harness.clickhouse_rows(table), source, f"ClickHouse {table}")
    letters = harness.dead_letters()
    assert {(table, sink) for table, sink, _, _, _ in letters} == {
        (f"{harness.database}.x_current", PG_SINK),
        (f"{harness.database}.x_current", CH_SINK),
    }
    assert len(letters) == 4  # two rows, each refused by both sinks
    assert all("already the view of another sink table" in error for _, _, _, error, _ in letters), letters


def test_two_source_tables_with_one_sink_name_the_second_waits_naming_the_first(harness: PipelineHarness) -> None:
    """`db`.`a__b` and `db__a`.`b` (matched by a glob) are both `db__a__b` in the sinks: once they
    overwrote each other's rows. The first table to reach a sink keeps the name; the other's rows wait in the DLQ
    of each sink, naming the table that holds it, batch after batch."""
    other_database = f"{harness.database}__a"
    harness.source_execute(
        f"CREATE DATABASE `{other_database}`",
        "CREATE TABLE a__b (id INT PRIMARY KEY, v VARCHAR(20))",
        f"CREATE TABLE `{other_database}`.b (id INT PRIMARY KEY, w INT)",
        "INSERT INTO a__b VALUES (1, 'first')",
        f"INSERT INTO `{other_database}`.b VALUES (1, 100)",
    )
    # A glob: the clash is only known when the changes arrive (literal names are refused at load).
    harness.configure_source(tables={"include": [f"{harness.database}.a__b", f"{other_database}.*"]})
    try:
        harness.replicate()
        harness.source_execute(
            "INSERT INTO a__b VALUES (2, 'second')", f"INSERT INTO `{other_database}`.b VALUES (2, 200)"
        )
        harness.replicate()
        source = harness.source_rows("a__b")
        assert_same_rows(harness.postgres_rows("a__b"), source, "PostgreSQL a__b")
        assert_same_rows(harness.clickhouse_rows("a__b"), source, "ClickHouse a__b")
        letters = harness.dead_letters()
        assert sorted((table, sink, payload["id"]) for table, sink, _, _, payload in letters) == sorted(
            (f"{other_database}.b", sink, key) for sink in (PG_SINK, CH_SINK) for key in (1, 2)
        )
        assert all(f"already holds table {harness.database}.a__b of source '{SOURCE}'" in e for *_, e, _ in letters)
    finally:
        harness.source_execute(f"DROP DATABASE `{other_database}`")


def test_a_dot_inside_a_name_keeps_two_tables_apart(harness: PipelineHarness) -> None:
    """`db.q`.t and db.`q.t` were both `db.q.t` inside the pipeline: their changes merged into one
    table before any sink. Each now has its name and its sink table (`db.q__t`, `db__q.t`)."""
    dotted_database = f"{harness.database}.q"
    harness.source_execute(
        f"CREATE DATABASE `{dotted_database}`",
        f"CREATE TABLE `{dotted_database}`.t (id INT PRIMARY KEY, v VARCHAR(30))",
        "CREATE TABLE `q.t` (id INT PRIMARY KEY, w INT)",
        f"INSERT INTO `{dotted_database}`.t VALUES (1, 'in the dotted database')",
        "INSERT INTO `q.t` VALUES (1, 100), (2, 200)",
    )
    harness.configure_source(tables={"include": [f"{harness.database}.q*"]})
    try:
        harness.replicate()
        harness.source_execute(
            f"UPDATE `{dotted_database}`.t SET v = 'changed' WHERE id = 1", "DELETE FROM `q.t` WHERE id = 2"
        )
        harness.replicate()
        assert harness.dead_letters() == []
        expected = {f"{harness.database}.q__t": [(1, "changed")], f"{harness.database}__q.t": [(1, 100)]}
        with closing(psycopg2.connect(harness.pg_dsn)) as connection, connection.cursor() as cursor:
            for table, rows in expected.items():
                cursor.execute(
                    sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier("replica", f"{table}_current"))
                )
                assert cursor.fetchall() == rows, table
        clickhouse = ClickHouseSinkResource(dsn=harness.chdb_dsn, database=f"{harness.database}_ch").sink(CH_SINK)
        for table, rows in expected.items():
            stored = clickhouse.client.query(f"SELECT * FROM {clickhouse.qualified(f'{table}_current')} ORDER BY 1")
            assert [tuple(row) for row in stored.result_rows] == rows, table
    finally:
        harness.source_execute(f"DROP DATABASE `{dotted_database}`")


@pytest.mark.parametrize(
    ("database", "table", "written"),
    [
        ("shop", "orders", "shop.orders"),  # plain names as they always were
        ("p.q", "t", "`p.q`.t"),
        ("p", "q.t", "p.`q.t`"),
        ("a`b", "c", "`a``b`.c"),
        ("`", ".", "````.`.`"),
    ],
)
def test_qualified_names_keep_dotted_parts_apart_and_read_back(database: str, table: str, written: str) -> None:
    assert qualify(database, table) == written
    assert split_qualified(written) == (database, table)
