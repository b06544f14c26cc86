"""MySQL DDL read from the binlog reaches both sinks in order with the rows around it."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg2
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError as ClickHouseDatabaseError

from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.sink_tables.schema_status import HELD, SCHEMA_STATUS
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline_tests import snapshot_steps
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, SOURCE, PipelineHarness, assert_same_rows, run_summary
from cdc_pipeline_tests.postgres_source import PostgresSourceHarness


def _replicate_until_level(harness: PipelineHarness | PostgresSourceHarness, tables: list[str]) -> None:
    """One run drains the log (a batch ends early at a DDL statement; the run goes on with the
    next): both sinks then hold what the source holds, and a second run finds nothing."""
    harness.replicate()
    for table in tables:
        source = harness.source_rows(table)
        assert_same_rows(harness.postgres_rows(table), source, f"PostgreSQL {table}")
        assert_same_rows(harness.clickhouse_rows(table), source, f"ClickHouse {table}")
    assert run_summary(harness.replicate())["rows"] == 0


# ClickHouse's answers while the sink table or a column is not there yet.
_NOT_THERE_YET = ("UNKNOWN_TABLE", "UNKNOWN_IDENTIFIER", "UNKNOWN_DATABASE")


def _level(harness: PipelineHarness | PostgresSourceHarness, table: str) -> bool:
    """Whether both sinks hold what the source holds (False while they are still on their way)."""
    source = harness.source_rows(table)
    try:
        return harness.postgres_rows(table) == source and harness.clickhouse_rows(table) == source
    except (psycopg2.Error, KeyError):  # the sink table or a column is not there yet
        return False
    except ClickHouseDatabaseError as error:
        if any(code in str(error) for code in _NOT_THERE_YET):
            return False
        raise


def _postgres_live_rows(harness: PipelineHarness, table: str) -> int | None:
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", (f'replica."{sink_table_name(f"{harness.database}.{table}")}"',))
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f'SELECT count(*) FROM replica."{sink_table_name(f"{harness.database}.{table}")}_current"')
        count = int(cursor.fetchone()[0])
    connection.close()
    return count


def _clickhouse_live_rows(harness: PipelineHarness, table: str) -> int | None:
    sink = ClickHouseSinkResource(dsn=harness.chdb_dsn, database=f"{harness.database}_ch").sink(CH_SINK)
    stats = sink.table_stats(f"{harness.database}.{table}")
    return stats.live_rows if stats else None


def test_ddl_of_every_kind_between_row_changes_ends_with_source_equal_to_sinks(harness: PipelineHarness) -> None:
    # Everything happens at the source before the first run: rows written before each ALTER must
    # decode with the columns they had (the catalog already shows the last shape).
    harness.source_execute(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), qty INT, note VARCHAR(50))",
        "INSERT INTO items VALUES (1, 'one', 1, 'n1'), (2, 'two', 2, 'n2'), (3, 'three', 3, NULL)",
        "ALTER TABLE items ADD COLUMN price DECIMAL(10,2) NOT NULL DEFAULT 9.50 AFTER name",
        "INSERT INTO items VALUES (4, 'four', 4.25, 4, 'n4')",
        "UPDATE items SET qty = qty + 10 WHERE id = 1",
        "ALTER TABLE items DROP COLUMN note",
        "INSERT INTO items VALUES (5, 'five', 5.00, 5)",
        "ALTER TABLE items MODIFY COLUMN qty BIGINT",
        "UPDATE items SET qty = 5000000000 WHERE id = 2",
        "ALTER TABLE items RENAME COLUMN name TO title",
        "UPDATE items SET title = 'THREE' WHERE id = 3",
        "ALTER TABLE items ADD COLUMN rank SMALLINT FIRST, ADD INDEX ix_qty (qty), ALGORITHM=INPLACE",
        "ALTER TABLE items COMMENT 'stock'",
        "CREATE INDEX ix_title ON items (title)",
        "DELETE FROM items WHERE id = 4",
        "INSERT INTO items (id, title, price, qty, rank) VALUES (6, 'six', 6.5, 6, 1)",
        "ALTER TABLE items CHANGE COLUMN qty quantity BIGINT UNSIGNED",
        "UPDATE items SET quantity = 7 WHERE id = 5",
    )
    harness.source_execute(
        "CREATE TABLE logs (id INT PRIMARY KEY, msg VARCHAR(20))",
        "INSERT INTO logs VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "TRUNCATE TABLE logs",
        "INSERT INTO logs VALUES (10, 'after truncate')",
        "RENAME TABLE logs TO journal",
        "INSERT INTO journal VALUES (11, 'renamed')",
        "ALTER TABLE journal DROP PRIMARY KEY, ADD PRIMARY KEY (id, msg)",
        "INSERT INTO journal VALUES (11, 'same id, new key')",
        "CREATE TABLE journal_copy LIKE journal",
        "INSERT INTO journal_copy SELECT * FROM journal",
        "CREATE TABLE gone (id INT PRIMARY KEY, v INT)",
        "INSERT INTO gone VALUES (1, 1), (2, 2)",
        "DROP TABLE gone",
    )
    _replicate_until_level(harness, ["items", "journal", "journal_copy"])
    assert harness.dead_letters() == []
    # Dropped at the source: the sink tables keep no live row; renamed away: nothing left under the old name.
    assert _postgres_live_rows(harness, "gone") == 0
    assert _clickhouse_live_rows(harness, "gone") == 0
    assert _postgres_live_rows(harness, "logs") in (None, 0)
    assert _clickhouse_live_rows(harness, "logs") in (None, 0)

    # The same statements once the sinks are live, a run after each group.
    harness.source_execute(
        "ALTER TABLE items ADD COLUMN colour ENUM('red','green') DEFAULT 'green' AFTER title",
        "UPDATE items SET colour = 'red' WHERE id = 1",
        # The existing rows take the statement's time, or the type's implicit default.
        "ALTER TABLE items ADD COLUMN seen TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " ADD COLUMN stamped DATETIME DEFAULT NOW(), ADD COLUMN flagged TINYINT NOT NULL",
        "INSERT INTO items (id, title, price, quantity, flagged) VALUES (7, 'seven', 7, 7, 1)",
        # A narrowing the stored values fit: the sinks check, then take it.
        "ALTER TABLE items MODIFY COLUMN title VARCHAR(10)",
        "UPDATE items SET title = 'SEVEN' WHERE id = 7",
    )
    _replicate_until_level(harness, ["items"])
    harness.source_execute("TRUNCATE TABLE journal_copy", "INSERT INTO journal_copy VALUES (99, 'fresh')")
    _replicate_until_level(harness, ["journal_copy"])
    assert harness.dead_letters() == []


def test_an_online_schema_change_tool_swap_keeps_the_table_replicating(harness: PipelineHarness) -> None:
    # gh-ost / pt-online-schema-change: a shadow copy is altered, filled, and renamed over the table.
    harness.configure_source(tables={"include": [f"{harness.database}.*"], "exclude": [f"{harness.database}._*"]})
    harness.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, label VARCHAR(50))",
        "INSERT INTO accounts VALUES (1, 'a@example.com'), (2, 'b@example.com')",
    )
    _replicate_until_level(harness, ["accounts"])
    harness.source_execute(
        "CREATE TABLE _accounts_gho LIKE accounts",
        "ALTER TABLE _accounts_gho ADD COLUMN plan VARCHAR(10) DEFAULT NULL",
        "INSERT INTO _accounts_gho (id, label) SELECT id, label FROM accounts",
        "RENAME TABLE accounts TO _accounts_del, _accounts_gho TO accounts",
        "DROP TABLE _accounts_del",
        "UPDATE accounts SET plan = 'pro' WHERE id = 2",
        "INSERT INTO accounts VALUES (3, 'c@example.com', 'free')",
    )
    _replicate_until_level(harness, ["accounts"])
    assert harness.dead_letters() == []


def _schema_statuses(result: Any, sink: str, table: str) -> list[str]:
    return [
        str(event.materialization.metadata[SCHEMA_STATUS].value)
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[-1] == sink_table_name(table)
        and event.asset_key.path[0] == sink
        and SCHEMA_STATUS in event.materialization.metadata
    ]


@pytest.mark.parametrize("fix", ["type_override", "resync"])
def test_a_change_a_sink_cannot_take_holds_the_table_while_its_neighbour_flows_until_the_fix(
    harness: PipelineHarness, fix: str
) -> None:
    # Named tables: they are declared assets, with checks.
    harness.configure_source(tables={"include": [f"{harness.database}.prices", f"{harness.database}.neighbour"]})
    harness.source_execute(
        "CREATE TABLE prices (id INT PRIMARY KEY, amount DECIMAL(12,4))",
        "CREATE TABLE neighbour (id INT PRIMARY KEY, v INT)",
        "INSERT INTO prices VALUES (1, 1.5), (2, 2.25)",
        "INSERT INTO neighbour VALUES (1, 1)",
    )
    _replicate_until_level(harness, ["prices", "neighbour"])
    # Fewer decimal places: both sinks would round stored values without a word, so neither applies it.
    harness.source_execute(
        "ALTER TABLE prices MODIFY COLUMN amount DECIMAL(12,2)",
        "INSERT INTO prices VALUES (3, 3.75)",
        "UPDATE prices SET amount = 7.5 WHERE id = 1",
        "INSERT INTO neighbour VALUES (2, 2)",
    )
    results = [harness.replicate() for _ in range(3)]
    assert _level(harness, "neighbour")
    held = [letter for letter in harness.dead_letters() if letter[0] == f"{harness.database}.prices"]
    assert {(letter[1], letter[2]) for letter in held} == {(CH_SINK, "schema"), (PG_SINK, "schema")}
    assert all("round values to 2 decimal places" in letter[3] for letter in held)
    assert sorted(letter[4]["id"] for letter in held) == [1, 1, 3, 3]
    # The sinks kept the table as it was, and flagged it.
    assert [row["id"] for row in harness.postgres_rows("prices")] == [1, 2]
    assert [row["id"] for row in harness.clickhouse_rows("prices")] == [1, 2]
    for sink in (CH_SINK, PG_SINK):
        statuses = [s for result in results for s in _schema_statuses(result, sink, f"{harness.database}.prices")]
        assert statuses and all(status.startswith(HELD) for status in statuses), statuses
    checks = _run_schema_checks(harness, "prices")
    assert checks == {CH_SINK: False, PG_SINK: False}

    prices = f"{harness.database}.prices"
    if fix == "type_override":
        # The sinks keep four decimal places (a wider type than the source's now).
        harness.extra_config["type_overrides"] = [
            {"table": prices, "column": "amount", "sink": CH_SINK, "type": "Nullable(Decimal(12, 4))"},
            {"table": prices, "column": "amount", "sink": PG_SINK, "type": "numeric(12,4)"},
        ]
    else:
        # A re-sync rewrites every row from the source: the sinks take the narrower type with it
        # (ClickHouse by its pull from MySQL, PostgreSQL through the Python path).
        with dg.instance_for_test() as instance:
            snapshot, chunks = snapshot_steps.plan(harness.definitions(), instance, SOURCE, prices, 1000)
            for chunk in chunks:
                snapshot_steps.load(snapshot, chunk, instance)
    harness.replay_dead_letters()
    harness.source_execute("INSERT INTO prices VALUES (4, 4.5)")
    _replicate_until_level(harness, ["prices", "neighbour"])
    assert harness.dead_letters() == []
    assert _run_schema_checks(harness, "prices") == {CH_SINK: True, PG_SINK: True}


def _run_schema_checks(harness: PipelineHarness, table: str) -> dict[str, bool]:
    """The schema_in_sync check of the table in each sink: passed or not."""
    keys = {
        dg.AssetCheckKey(sink_table_asset_key(sink, f"{harness.database}.{table}"), "schema_in_sync")
        for sink in (CH_SINK, PG_SINK)
    }
    job = harness.definitions().resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=keys)
    evaluations = job.execute_in_process(raise_on_error=False).get_asset_check_evaluations()
    return {evaluation.asset_key.path[0]: evaluation.passed for evaluation in evaluations}


def test_a_ddl_statement_the_pipeline_cannot_read_holds_its_table_until_marked_safe(harness: PipelineHarness) -> None:
    harness.configure_source(tables={"include": [f"{harness.database}.parts", f"{harness.database}.neighbour"]})
    harness.source_execute(
        "CREATE TABLE parts (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE neighbour (id INT PRIMARY KEY, v INT)",
        "INSERT INTO parts VALUES (1, 1), (2, 2)",
        "INSERT INTO neighbour VALUES (1, 1)",
    )
    _replicate_until_level(harness, ["parts", "neighbour"])
    # A unique key named by a word sqlglot takes for a keyword: the reader cannot read it.
    statement = "ALTER TABLE parts ADD UNIQUE KEY qualify (id)"
    harness.source_execute(
        statement,
        "INSERT INTO parts VALUES (3, 3)",
        "UPDATE parts SET v = 10 WHERE id = 1",
        "INSERT INTO neighbour VALUES (2, 2)",
    )
    for _ in range(3):
        harness.replicate()
    assert _level(harness, "neighbour")
    letters = [letter for letter in harness.dead_letters() if letter[0] == f"{harness.database}.parts"]
    held_statements = [letter for letter in letters if letter[2] == "ddl"]
    assert [(letter[1], letter[4]["statement"]) for letter in held_statements] == [("", statement)]
    assert "not understood" in held_statements[0][3]
    held_rows = [letter for letter in letters if letter[2] == "schema"]
    assert sorted((letter[1], letter[4]["id"]) for letter in held_rows) == sorted(
        [(CH_SINK, 1), (CH_SINK, 3), (PG_SINK, 1), (PG_SINK, 3)]
    )
    assert [row["v"] for row in harness.postgres_rows("parts")] == [1, 2]
    assert [row["v"] for row in harness.clickhouse_rows("parts")] == [1, 2]
    assert _run_schema_checks(harness, "parts") == {CH_SINK: False, PG_SINK: False}

    # A replay before the operator's word changes nothing: the statement still holds the table.
    harness.replay_dead_letters()
    assert len([letter for letter in harness.dead_letters() if letter[0] == f"{harness.database}.parts"]) == 5
    assert [row["v"] for row in harness.postgres_rows("parts")] == [1, 2]

    # A unique key changes nothing the sinks hold: the operator marks it safe and replays.
    harness.configure_source(safe_statements=[r"^ALTER TABLE \S+ ADD UNIQUE KEY "])
    harness.replay_dead_letters()
    assert harness.dead_letters() == []
    harness.source_execute("INSERT INTO parts VALUES (4, 4)")
    _replicate_until_level(harness, ["parts", "neighbour"])
    assert _run_schema_checks(harness, "parts") == {CH_SINK: True, PG_SINK: True}


def test_postgres_relation_changes_reach_both_sinks_in_order_with_the_rows(pg_source: PostgresSourceHarness) -> None:
    pg_source.source_execute("CREATE TABLE items (id int PRIMARY KEY, name varchar(20), qty int, note text)")
    pg_source.create_slot()
    # One transaction each, all before the first run: rows decode in the shape they were written in.
    for statement in (
        "INSERT INTO items VALUES (1, 'one', 1, 'n1'), (2, 'two', 2, 'n2'), (3, 'three', 3, NULL)",
        "ALTER TABLE items ADD COLUMN price numeric(10,2) NOT NULL DEFAULT 9.50",
        "INSERT INTO items VALUES (4, 'four', 4, 'n4', 4.25)",
        "UPDATE items SET qty = qty + 10 WHERE id = 1",
        "ALTER TABLE items DROP COLUMN note",
        "INSERT INTO items VALUES (5, 'five', 5, 5.00)",
        "ALTER TABLE items ALTER COLUMN qty TYPE bigint",
        "UPDATE items SET qty = 5000000000 WHERE id = 2",
        "ALTER TABLE items RENAME COLUMN name TO title",
        "UPDATE items SET title = 'THREE' WHERE id = 3",
        "DELETE FROM items WHERE id = 4",
    ):
        pg_source.source_execute(statement)
    _replicate_until_level(pg_source, ["items"])
    pg_source.source_execute("TRUNCATE items", "INSERT INTO items VALUES (10, 'after', 1, 1.00)")
    pg_source.source_execute("INSERT INTO items VALUES (11, 'later', 2, 2.00)")
    _replicate_until_level(pg_source, ["items"])
    assert pg_source.dead_letters() == []


@pytest.mark.parametrize(
    ("statement", "after"),
    [
        ("ALTER TABLE people RENAME COLUMN abc TO ABc", "INSERT INTO people (id, ABc, Name) VALUES (3, 30, 'c')"),
        (
            "ALTER TABLE people CHANGE name full_name VARCHAR(20)",
            "INSERT INTO people (id, Abc, full_name) VALUES (3, 30, 'c')",
        ),
        ("ALTER TABLE people MODIFY NAME VARCHAR(20)", "INSERT INTO people (id, Abc, NAME) VALUES (3, 30, 'c')"),
        ("ALTER TABLE people DROP COLUMN name", "INSERT INTO people (id, Abc) VALUES (3, 30)"),
    ],
)
def test_column_names_in_ddl_match_as_mysql_matches_them_ignoring_case(
    harness: PipelineHarness, statement: str, after: str
) -> None:
    """MySQL column names ignore case: a statement that spells `Abc` as `abc` (or `Name` as `name`,
    `NAME`) changes that column, and the sinks keep its values instead of dropping and re-adding it."""
    _replicate_around(
        harness,
        "people",
        [
            "CREATE TABLE people (id INT PRIMARY KEY, Abc INT, Name VARCHAR(10))",
            "INSERT INTO people VALUES (1, 10, 'a'), (2, 20, 'b')",
        ],
        [statement, after],
    )


def _replicate_around(harness: PipelineHarness, table: str, before: list[str], statements: list[str]) -> None:
    """Replicate the table as `before` leaves it, run `statements`, replicate again: both sinks then
    hold exactly what the source holds, and nothing went to the DLQ."""
    harness.source_execute(*before)
    harness.replicate()
    harness.source_execute(*statements)
    harness.replicate()
    source = harness.source_rows(table)
    assert_same_rows(harness.postgres_rows(table), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows(table), source, "ClickHouse")
    assert harness.dead_letters() == []


@pytest.mark.parametrize(
    ("statement", "after"),
    [
        # A swap: both renames happen at once.
        ("ALTER TABLE pairs CHANGE a b INT, CHANGE b a INT", "INSERT INTO pairs (id, a, b) VALUES (3, 30, 300)"),
        # The later clause wins: the existing rows take 2, not INT's implicit 0.
        (
            "ALTER TABLE pairs ADD c INT NOT NULL, ALTER c SET DEFAULT 2",
            "INSERT INTO pairs (id, a, b) VALUES (3, 30, 300)",
        ),
        # Its default dropped and the column redefined as nullable: the existing rows hold NULL.
        (
            "ALTER TABLE pairs ADD c INT NOT NULL DEFAULT 2, ALTER c DROP DEFAULT, MODIFY c BIGINT",
            "INSERT INTO pairs (id, a, b, c) VALUES (3, 30, 300, 3)",
        ),
    ],
)
def test_the_actions_of_one_alter_apply_at_once_later_clauses_winning(
    harness: PipelineHarness, statement: str, after: str
) -> None:
    _replicate_around(
        harness,
        "pairs",
        [
            "CREATE TABLE pairs (id INT PRIMARY KEY, a INT, b INT)",
            "INSERT INTO pairs VALUES (1, 10, 100), (2, 20, 200)",
        ],
        [statement, after],
    )


def test_a_timestamp_default_literal_is_read_in_the_statements_time_zone(harness: PipelineHarness) -> None:
    """`ADD ts TIMESTAMP DEFAULT '2020-01-02 00:00:00'` in a session at +05:00: the existing rows hold
    that instant (2020-01-01 19:00 UTC), and so must the sinks, which keep TIMESTAMPs in UTC."""
    harness.source_execute(
        "CREATE TABLE stamps (id INT PRIMARY KEY, v INT)",
        "INSERT INTO stamps VALUES (1, 1), (2, 2)",
    )
    harness.replicate()
    harness.source_execute(
        "SET SESSION time_zone = '+05:00'",
        "ALTER TABLE stamps ADD COLUMN ts TIMESTAMP NULL DEFAULT '2020-01-02 00:00:00'",
        "INSERT INTO stamps (id, v) VALUES (3, 3)",
    )
    harness.replicate()
    source = harness.source_rows("stamps")  # read in UTC, the test server's zone
    assert {str(row["ts"]) for row in source} == {"2020-01-01 19:00:00"}
    assert_same_rows(harness.postgres_rows("stamps"), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("stamps"), source, "ClickHouse")


def test_alter_spellings_of_the_peer_ddl_suites_replicate_without_holding_the_table(harness: PipelineHarness) -> None:
    """Statements of the kinds Debezium's and MariaDB's DDL suites hold, each run by MariaDB: the
    table keeps replicating (nothing held, nothing in the DLQ) and both sinks end equal to it."""
    _replicate_around(
        harness,
        "peers",
        [
            "CREATE TABLE peers (id INT PRIMARY KEY, a INT, b VARCHAR(20), KEY k (a)) ENGINE=InnoDB",
            "INSERT INTO peers VALUES (1, 10, 'one'), (2, 20, 'two')",
        ],
        [
            "ALTER TABLE peers ADD KEY IF NOT EXISTS k2 (b)",
            "ALTER TABLE peers DROP KEY IF EXISTS no_such_key",
            "ALTER TABLE peers MODIFY IF EXISTS a BIGINT",
            "ALTER TABLE peers CHANGE COLUMN IF EXISTS b title VARCHAR(40)",
            "ALTER TABLE peers ADD (c INT NOT NULL DEFAULT 5, d VARCHAR(10) DEFAULT 'x, y')",
            "ALTER TABLE peers CONVERT TO CHARACTER SET utf8mb4",
            "ALTER TABLE peers DISABLE KEYS, ADD COLUMN e INT DEFAULT 7",
            "ALTER TABLE peers MAX_ROWS 100 CHECKSUM 1",
            "ALTER TABLE peers ALTER INDEX k IGNORED",
            "ALTER TABLE peers WAIT 5 ADD COLUMN f INT DEFAULT 9",
            "ALTER TABLE peers NOWAIT DROP COLUMN f",
            "ALTER TABLE peers ADD CHECK (c > 0)",
            "INSERT INTO peers (id, a, title) VALUES (3, 30, 'three')",
        ],
    )
