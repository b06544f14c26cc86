"""Bad input goes to the DLQ with a reason while the rest arrives; a replay after the fix delivers it."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from cdc_pipeline.core.value_codec import decode_row
from cdc_pipeline.defs.dead_letters.assets import dead_letter_queue
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, PipelineHarness, assert_same_rows


def _letters_by(harness: PipelineHarness, table: str) -> list[tuple[str, str, str]]:
    return [
        (sink, stage, error)
        for t, sink, stage, error, _ in harness.dead_letters()
        if t == f"{harness.database}.{table}"
    ]


def test_table_without_primary_key_is_dead_lettered_then_replayed_after_key_columns_are_set(
    harness: PipelineHarness,
) -> None:
    harness.source_execute(
        "CREATE TABLE events (event_id INT NOT NULL, kind VARCHAR(16))",
        "CREATE TABLE neighbour (id INT PRIMARY KEY, v VARCHAR(16))",
        "INSERT INTO events VALUES (1, 'open'), (2, 'close')",
        "INSERT INTO neighbour VALUES (1, 'still arrives')",
    )
    harness.replicate()
    letters = _letters_by(harness, "events")
    assert len(letters) == 2
    assert all(
        sink == "" and stage == "parse" and "has no primary key" in error and "key_columns" in error
        for sink, stage, error in letters
    )
    assert_same_rows(harness.postgres_rows("neighbour"), harness.source_rows("neighbour"), "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("neighbour"), harness.source_rows("neighbour"), "ClickHouse")

    # The operator names the key columns, then re-drives the DLQ.
    harness.configure_source(key_columns={f"{harness.database}.events": ["event_id"]})
    harness.replay_dead_letters()
    assert _letters_by(harness, "events") == []
    assert_same_rows(
        harness.postgres_rows("events", "event_id"), harness.source_rows("events", "event_id"), "PostgreSQL"
    )
    assert_same_rows(
        harness.clickhouse_rows("events", "event_id"), harness.source_rows("events", "event_id"), "ClickHouse"
    )


def test_unsupported_type_is_dead_lettered_per_sink_then_replayed_after_a_type_override(
    harness: PipelineHarness,
) -> None:
    harness.source_execute(
        "CREATE TABLE places (id INT PRIMARY KEY, label VARCHAR(20), location POINT)",
        "CREATE TABLE neighbour (id INT PRIMARY KEY, v VARCHAR(16))",
        "INSERT INTO places VALUES (1, 'here', ST_GeomFromText('POINT(1 2)'))",
        "INSERT INTO neighbour VALUES (7, 'arrives')",
    )
    harness.replicate()
    letters = sorted(_letters_by(harness, "places"))
    assert [(sink, stage) for sink, stage, _ in letters] == [(PG_SINK, "map"), (CH_SINK, "map")]
    assert all("column location" in error and "spatial type point" in error for _, _, error in letters)
    assert_same_rows(harness.postgres_rows("neighbour"), harness.source_rows("neighbour"), "PostgreSQL")

    # The DLQ asset's metadata counts them by table.
    result = dg.materialize([dead_letter_queue], resources=harness.resources())
    metadata = result.asset_materializations_for_node("dead_letter_queue")[0].metadata
    assert metadata["dead_letters"].value == 2
    assert metadata["by_table"].value == {f"{harness.database}.places": 2}
    # A type override fixes them: replayable, and the asset says so.
    assert metadata["not_replayable"].value == 0 and "| yes, once fixed |" in metadata["by_reason"].value

    table = f"{harness.database}.places"
    harness.extra_config["type_overrides"] = [
        {"table": table, "column": "location", "sink": CH_SINK, "type": "Nullable(String)"},
        {"table": table, "column": "location", "sink": PG_SINK, "type": "bytea"},
    ]
    harness.replay_dead_letters()
    assert _letters_by(harness, "places") == []
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT location FROM `{harness.database}`.places")
        internal_wkb = cursor.fetchone()[0]
    assert harness.postgres_rows("places")[0]["location"].tobytes() == internal_wkb
    assert harness.clickhouse_rows("places")[0]["label"] == "here"


def test_values_a_sink_cannot_hold_go_to_that_sinks_dlq_only(harness: PipelineHarness) -> None:
    harness.source_execute(
        "CREATE TABLE history (id INT PRIMARY KEY, valid_from DATE, counter INT)",
        # 1000-01-01 is a valid MySQL DATE, but outside ClickHouse Date32 (1900..2299).
        "INSERT INTO history VALUES (1, '1000-01-01', 1), (2, '2020-05-05', 2), (3, '2021-01-01', 100000)",
    )
    # PostgreSQL's column is narrowed by an override: 100000 overflows smallint at COPY time,
    # which isolates the bad row by bisection and keeps the others.
    harness.extra_config["type_overrides"] = [
        {"table": f"{harness.database}.history", "column": "counter", "sink": PG_SINK, "type": "smallint"}
    ]
    harness.replicate()
    letters = sorted(_letters_by(harness, "history"))
    assert len(letters) == 2
    (pg_sink, pg_stage, pg_error), (ch_sink, ch_stage, ch_error) = letters
    assert (pg_sink, pg_stage) == (PG_SINK, "write") and "out of range for type smallint" in pg_error
    assert (ch_sink, ch_stage) == (CH_SINK, "map") and "column valid_from" in ch_error and "1000-01-01" in ch_error
    assert [r["id"] for r in harness.postgres_rows("history")] == [1, 2]
    assert [r["id"] for r in harness.clickhouse_rows("history")] == [2, 3]


def test_the_run_reports_dead_letters_on_the_sink_table_and_the_dlq_asset(harness: PipelineHarness) -> None:
    harness.source_execute(
        "CREATE TABLE places (id INT PRIMARY KEY, location POINT)",
        "INSERT INTO places VALUES (1, ST_GeomFromText('POINT(1 2)')), (2, NULL)",
    )
    result = harness.replicate()
    for sink in (CH_SINK, PG_SINK):
        (materialization,) = [
            m
            for m in result.asset_materializations_for_node("replicate_shop")
            if m.asset_key.path == [sink, f"{harness.database}__places"]
        ]
        assert materialization.metadata["dlq_count"].value == 2
        assert materialization.metadata["rows_inserted"].value == 0
    dlq_reports = [
        m for m in result.asset_materializations_for_node("replicate_shop") if m.asset_key.path == ["dead_letter_queue"]
    ]
    # The queue is reported once the batch's letters are in, from both sinks: two rows each.
    assert [m.metadata["dead_letters"].value for m in dlq_reports] == [4]


def test_a_rule_that_cannot_mask_sends_rows_to_the_dlq_without_their_values(harness: PipelineHarness) -> None:
    rule = {"table": "*.*", "column": "amount", "action": "truncate", "length": 2}
    harness.extra_config["masking"] = {"rules": [rule]}
    harness.source_execute(
        "CREATE TABLE payments (id INT PRIMARY KEY, amount DECIMAL(10,2), card_number VARCHAR(19))",
        "INSERT INTO payments VALUES (1, 12345.67, '4111111111111111')",
        "CREATE TABLE neighbour (id INT PRIMARY KEY)",
        "INSERT INTO neighbour VALUES (1)",
    )
    harness.replicate()
    ((table, sink, stage, error, payload),) = [row for row in harness.dead_letters() if row[0].endswith(".payments")]
    assert (sink, stage) == ("", "mask")
    assert "column amount (masking.rules[0]): 'truncate' applies to text or binary columns, not decimal" in error
    assert payload["amount"] == "[REDACTED: masking failed]" and payload["card_number"] == "[REDACTED: masking failed]"
    assert len(harness.postgres_rows("neighbour")) == 1
    # The DLQ asset says so before any replay is tried.
    result = dg.materialize([dead_letter_queue], resources=harness.resources())
    metadata = result.asset_materializations_for_node("dead_letter_queue")[0].metadata
    assert metadata["not_replayable"].value == 1
    assert "| no: masking failed before the value was masked" in metadata["by_reason"].value

    # Masking failed before anything could be masked: replay keeps the letter, says why, once.
    harness.replay_dead_letters()
    harness.replay_dead_letters()
    ((_, _, _, error, _),) = [row for row in harness.dead_letters() if row[0].endswith(".payments")]
    assert error.count("[not replayed: masking failed before the value was masked") == 1


def test_text_holding_nul_is_kept_whole_in_the_dlq_and_halts_nothing(harness: PipelineHarness) -> None:
    """PostgreSQL cannot store U+0000 in text or jsonb; MySQL text can. The PostgreSQL sink refuses
    such a value (to its DLQ), and the DLQ itself keeps it, also in a row that fails at parse."""
    harness.source_execute(
        "SET SESSION sql_mode = ''",
        "CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(20), due DATE)",
        "INSERT INTO notes VALUES (1, CONCAT('a', CHAR(0), 'b'), '2024-01-01'), (3, 'plain', '2024-01-03')",
        # A zero date fails at parse, for every sink: its letter holds the NUL too.
        "INSERT INTO notes VALUES (2, CONCAT('c', CHAR(0), 'd'), '0000-00-00')",
    )
    harness.replicate()
    letters = {(row[1], row[2]): decode_row(row[4]) for row in harness.dead_letters() if row[0].endswith(".notes")}
    assert set(letters) == {(PG_SINK, "map"), ("", "parse")}, letters
    assert letters[(PG_SINK, "map")]["body"] == "a\x00b"
    assert letters[("", "parse")]["body"] == "c\x00d"
    assert [r["id"] for r in harness.postgres_rows("notes")] == [3]
    clickhouse = harness.clickhouse_rows("notes")
    assert [(r["id"], r["body"]) for r in clickhouse] == [(1, "a\x00b"), (3, "plain")]


def test_a_column_named_like_the_sinks_bookkeeping_holds_its_table_alone(harness: PipelineHarness) -> None:
    """`_version` and `_is_deleted` are the columns the sinks add: a source table with one of them
    cannot be created in either sink. Its rows go to the DLQ naming table and column; the rest of the
    source replicates."""
    harness.source_execute(
        "CREATE TABLE versioned (id INT PRIMARY KEY, _version INT, label VARCHAR(10))",
        "CREATE TABLE neighbour (id INT PRIMARY KEY)",
        "INSERT INTO versioned VALUES (1, 7, 'seven')",
        "INSERT INTO neighbour VALUES (1), (2)",
    )
    harness.replicate()
    letters = _letters_by(harness, "versioned")
    assert sorted((sink, stage) for sink, stage, _ in letters) == sorted([(CH_SINK, "map"), (PG_SINK, "map")])
    for _, _, error in letters:
        assert f"table {harness.database}.versioned: column(s) _version bear the name" in error
    assert_same_rows(harness.postgres_rows("neighbour"), harness.source_rows("neighbour"), "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("neighbour"), harness.source_rows("neighbour"), "ClickHouse")


def test_a_value_no_sink_can_hold_stays_a_letter_until_an_override_says_what_to_store(
    harness: PipelineHarness,
) -> None:
    """Zero and invalid dates (sql_mode='') fail at parse. The letter keeps the source's text, so a
    replay without a fix leaves it a letter (never NULL in the sinks); with both sinks' column
    overridden to text, the replay stores that text."""
    harness.source_execute(
        "SET SESSION sql_mode = ''",
        "CREATE TABLE events (id INT PRIMARY KEY, day DATE, at DATETIME)",
        "INSERT INTO events VALUES (1, '2024-05-06', '2024-05-06 10:00:00')",
        "INSERT INTO events VALUES (2, '0000-00-00', '2024-05-06 10:00:00'), (3, '2024-00-15', '0000-00-00 00:00:00')",
    )
    harness.replicate()
    letters = [row for row in harness.dead_letters() if row[0].endswith(".events")]
    assert {(row[1], row[2]) for row in letters} == {("", "parse")}
    payloads = sorted(
        (decode_row(row[4])["id"], decode_row(row[4])["day"], decode_row(row[4])["at"]) for row in letters
    )
    # The representable values keep their types, the others the source's text.
    assert payloads == [(2, "0000-00-00", dt.datetime(2024, 5, 6, 10)), (3, "2024-00-15", "0000-00-00 00:00:00")]
    # The reason names the column, never the value (it would reach logs and Dagster's storage unmasked).
    assert all("2024-00-15" not in row[3] and "day" in row[3] for row in letters), letters

    harness.replay_dead_letters()  # no fix: nothing can be stored, nothing is; each sink keeps its letters
    kept = {(row[1], decode_row(row[4])["id"]) for row in harness.dead_letters() if row[0].endswith(".events")}
    assert kept == {(sink, key) for sink in (PG_SINK, CH_SINK) for key in (2, 3)}, kept
    assert [r["id"] for r in harness.postgres_rows("events")] == [1]
    assert [r["id"] for r in harness.clickhouse_rows("events")] == [1]

    # The ClickHouse columns overridden to text (README footnote 1), nothing else done: the replay
    # retypes the sink's columns itself and stores the text; the PostgreSQL sink, not overridden,
    # keeps its letters.
    table = f"{harness.database}.events"
    harness.extra_config["type_overrides"] = [
        {"table": table, "column": column, "sink": CH_SINK, "type": "Nullable(String)"} for column in ("day", "at")
    ]
    harness.replay_dead_letters()
    remaining = [(row[1], decode_row(row[4])["id"]) for row in harness.dead_letters() if row[0].endswith(".events")]
    assert sorted(remaining) == [(PG_SINK, 2), (PG_SINK, 3)]
    clickhouse = ClickHouseSinkResource(dsn=harness.chdb_dsn, database=f"{harness.database}_ch").sink(CH_SINK)
    view = f"`{harness.database}_ch`.`{harness.database}__events_current`"
    # Through the `_current` view, which the replay made anew with the new types.
    stored = {
        row[0]: (row[1], row[2])
        for row in clickhouse.client.query(f"SELECT id, day, at FROM {view} ORDER BY id").result_rows
    }
    assert stored[2] == ("0000-00-00", "2024-05-06 10:00:00") and stored[3] == ("2024-00-15", "0000-00-00 00:00:00")
    assert [r["id"] for r in harness.postgres_rows("events")] == [1]
