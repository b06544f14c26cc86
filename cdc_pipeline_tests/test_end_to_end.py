"""Every supported MySQL type, with edge values, through the Dagster job into both sinks."""

from __future__ import annotations

import psycopg2

from cdc_pipeline_tests.harness import CH_SINK, PipelineHarness, assert_same_rows

ALL_TYPES_TABLE = """
CREATE TABLE all_types (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  d65 DECIMAL(65,30), d_money DECIMAL(10,2),
  i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED,
  i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
  f32 FLOAT, f64 DOUBLE,
  dt0 DATETIME, dt3 DATETIME(3), dt6 DATETIME(6), ts0 TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL,
  da DATE, tm0 TIME, tm6 TIME(6), yr YEAR,
  c CHAR(10), vc VARCHAR(100), tx TEXT, lt LONGTEXT,
  bn BINARY(4), vb VARBINARY(16), bl BLOB,
  bt1 BIT(1), bt64 BIT(64),
  en ENUM('small','it''s big'), st SET('red','green','blue'),
  js JSON
) CHARACTER SET utf8mb4
"""

ROWS = [
    # maxima
    """(18446744073709551615, 99999999999999999999999999999999999.999999999999999999999999999999, 99999999.99,
       127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
       3.5, 1.7976931348623157e308,
       '2299-12-31 23:59:59', '2299-12-31 23:59:59.999', '2299-12-31 23:59:59.999999', '2038-01-19 03:14:07', '2038-01-19 03:14:07.999999',
       '2299-12-31', '838:59:59', '838:59:59.000000', 2155,
       'abcdefghij', 'x', 'text 😀', REPEAT('long', 1000),
       x'FFFFFFFF', x'00FF00FF', x'DEADBEEF00',
       b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
       'it''s big', 'red,green,blue', '{"a": [1, 2.5, "😀"], "b": null, "c": {"d": true}}')""",
    # minima
    """(0, -99999999999999999999999999999999999.999999999999999999999999999999, -99999999.99,
       -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
       -3.5, -2.2250738585072014e-308,
       '1900-01-01 00:00:00', '1900-01-01 00:00:00.001', '1900-01-01 00:00:00.000001', '1970-01-01 00:00:01', '1970-01-01 00:00:01.000001',
       '1900-01-01', '-838:59:59', '-838:59:59.000000', 1901,
       '', '', '', '',
       x'00000000', x'', x'',
       b'0', b'0',
       'small', '', '[]')""",
    # NULLs everywhere they are allowed
    """(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
    # fractional and negative TIME, emoji, control characters, backslashes
    """(2, 0.000000000000000000000000000001, 0.01, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.25, 0.1,
       '2024-02-29 12:34:56', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.000001', '2024-02-29 12:34:56', '2024-02-29 12:34:56.5',
       '2024-02-29', '-00:00:01', '-00:00:00.500000', 2024,
       'tab\there', 'line\nbreak\\\\back', 'quote '' and "double"', '👩‍👩‍👧‍👦 family',
       x'0A0D0900', x'5C', x'00',
       b'0', b'1010101010',
       'small', 'blue', '"just a string"')""",
]


def test_every_type_and_change_kind_reaches_both_sinks(harness: PipelineHarness) -> None:
    harness.source_execute(ALL_TYPES_TABLE, "INSERT INTO all_types VALUES " + ", ".join(ROWS))
    harness.replicate()
    source = harness.source_rows("all_types")
    assert len(source) == 4
    assert_same_rows(harness.clickhouse_rows("all_types"), source, "ClickHouse")
    assert_same_rows(harness.postgres_rows("all_types"), source, "PostgreSQL")

    harness.source_execute(
        "UPDATE all_types SET vc = 'updated 🚀', d65 = d65 / 3, tm6 = '-12:34:56.789012' WHERE id = 2",
        "UPDATE all_types SET id = 3 WHERE id = 1",  # the primary key moves
        "DELETE FROM all_types WHERE id = 0",
        "INSERT INTO all_types (id, vc) VALUES (4, 'inserted late')",
    )
    harness.replicate()
    source = harness.source_rows("all_types")
    assert [row["id"] for row in source] == [2, 3, 4, 18446744073709551615]
    assert_same_rows(harness.clickhouse_rows("all_types"), source, "ClickHouse")
    assert_same_rows(harness.postgres_rows("all_types"), source, "PostgreSQL")
    assert harness.dead_letters() == []


def test_transactions_are_never_split_across_batches(harness: PipelineHarness) -> None:
    harness.source_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "BEGIN",
        *[f"INSERT INTO t VALUES ({i}, {i})" for i in range(5)],
        "COMMIT",
        "BEGIN",
        *[f"INSERT INTO t VALUES ({i}, {i})" for i in range(5, 10)],
        "COMMIT",
    )
    # A batch limit of 3 rows still takes the first transaction whole, and stops there.
    harness.replicate(max_rows=3, max_batches=1)
    assert [r["id"] for r in harness.postgres_rows("t")] == [0, 1, 2, 3, 4]
    assert [r["id"] for r in harness.clickhouse_rows("t")] == [0, 1, 2, 3, 4]
    harness.replicate(max_rows=3, max_batches=1)
    assert_same_rows(harness.postgres_rows("t"), harness.source_rows("t"), "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("t"), harness.source_rows("t"), "ClickHouse")


def test_negative_and_fractional_times_at_every_precision(harness: PipelineHarness) -> None:
    precisions = range(0, 7)
    columns = ", ".join(f"t{p} TIME({p})" for p in precisions)
    values = [
        "-838:59:59",
        "838:59:59",
        "-00:00:00.1",
        "-12:34:56.789012",
        "-00:00:59.999999",
        "-01:00:00.000001",
        "00:00:00",
        "-00:00:01",
        "23:59:59.5",
        "-100:00:00.05",
    ]
    harness.source_execute(
        f"CREATE TABLE times (id INT PRIMARY KEY, {columns})",
        *[f"INSERT INTO times VALUES ({i}, {', '.join(repr(v) for _ in precisions)})" for i, v in enumerate(values)],
    )
    harness.replicate()
    source = harness.source_rows("times")
    assert len(source) == len(values)
    assert_same_rows(harness.clickhouse_rows("times"), source, "ClickHouse")
    assert_same_rows(harness.postgres_rows("times"), source, "PostgreSQL")


def test_full_mysql_date_range_reaches_postgres_and_clickhouse_through_a_string_override(
    harness: PipelineHarness,
) -> None:
    table = f"{harness.database}.extremes"
    harness.extra_config["type_overrides"] = [
        {"table": table, "column": column, "sink": CH_SINK, "type": "Nullable(String)"} for column in ("dt", "da")
    ]
    harness.source_execute(
        "CREATE TABLE extremes (id INT PRIMARY KEY, dt DATETIME(6), da DATE, yr YEAR)",
        "INSERT INTO extremes VALUES (1, '1000-01-01 00:00:00', '1000-01-01', 0),"
        " (2, '9999-12-31 23:59:59.999999', '9999-12-31', 2155), (3, NULL, NULL, NULL)",
    )
    harness.replicate()
    source = harness.source_rows("extremes")
    assert_same_rows(harness.postgres_rows("extremes"), source, "PostgreSQL")
    in_clickhouse = harness.clickhouse_rows("extremes")
    assert [(r["dt"], r["da"], r["yr"]) for r in in_clickhouse] == [
        ("1000-01-01 00:00:00", "1000-01-01", 0),
        ("9999-12-31 23:59:59.999999", "9999-12-31", 2155),
        (None, None, None),
    ]
    assert harness.dead_letters() == []


def test_mariadb_json_columns_are_json_in_the_sinks(harness: PipelineHarness) -> None:
    """MariaDB stores JSON as LONGTEXT with CHECK (json_valid(...)); the sinks' type is JSON's: jsonb."""
    harness.source_execute(
        "CREATE TABLE docs (id INT PRIMARY KEY, doc JSON, note LONGTEXT)",
        """INSERT INTO docs VALUES (1, '{"a": [1, 2.5, null], "b": {"c": true}}', 'plain text'), (2, NULL, NULL)""",
    )
    harness.replicate()
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'replica'"
            " AND table_name = %s AND column_name IN ('doc', 'note') ORDER BY column_name",
            (f"{harness.database}__docs",),
        )
        assert cursor.fetchall() == [("doc", "jsonb"), ("note", "text")]
    source = harness.source_rows("docs")
    assert_same_rows(harness.postgres_rows("docs"), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("docs"), source, "ClickHouse")
