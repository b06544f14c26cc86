"""Masking: classification by name, each action, and no raw PII anywhere after a run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from cdc_pipeline.config.models import MaskingConfig, MaskRule
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.masking.classification import classify_column
from cdc_pipeline.masking.masker import REDACTED, Masker, MaskingError
from cdc_pipeline_tests.harness import CH_SINK, PipelineHarness, run_summary


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("email", "email"),
        ("contact_email", "email"),
        ("emailAddress", "email"),
        ("email_address", "email"),
        ("phone_number", "phone"),
        ("mobile", "phone"),
        ("ssn", "ssn"),
        ("social_security_no", "ssn"),
        ("home_address", "address"),
        ("street", "address"),
        ("ip_address", "ip_address"),
        ("client_ip", "ip_address"),
        ("card_number", "card_number"),
        ("credit_card", "card_number"),
        ("birth_date", "birth_date"),
        ("dob", "birth_date"),
        ("mrn", "medical_record"),
        ("medical_record_number", "medical_record"),
        ("diagnosis", "diagnosis"),
        ("icd10", "diagnosis"),
        ("prescription", "prescription"),
        ("patient_id", "patient_id"),
        ("PatientId", "patient_id"),
        # Plurals, run-together names and abbreviations (issue 12, item 19).
        ("emails", "email"),
        ("customeremail", "email"),
        ("CustomerEmails", "email"),
        ("homephone", "phone"),
        ("phones", "phone"),
        ("billingaddress", "address"),
        ("shipping_addresses", "address"),
        ("birth_dt", "birth_date"),
        ("userbirthdate", "birth_date"),
        ("customerssn", "ssn"),
    ],
)
def test_pii_and_phi_columns_are_recognised_by_name(column: str, expected: str) -> None:
    found = classify_column(column)
    assert found is not None and found.name == expected


@pytest.mark.parametrize(
    "column",
    [
        "id",
        "zip_code",
        "shipped_at",
        "description",
        "tips",
        "recipe",
        "therapist",
        "mailbox_size",
        "company",
        "hotel_name",
        "created_dt",
        "chips",
        "topic",
        "classname",
        "discount",
    ],
)
def test_ordinary_columns_are_not_classified(column: str) -> None:
    assert classify_column(column) is None


def _schema(*columns: ColumnSchema) -> TableSchema:
    return TableSchema("db", "t", columns, ("id",))


def _column(name: str, data_type: str = "varchar") -> ColumnSchema:
    return ColumnSchema(name, data_type, data_type, nullable=name != "id")


def test_each_action_masks_as_configured() -> None:
    config = MaskingConfig(
        classify_by_name=False,
        rules=[
            MaskRule(column="h", action="hash"),
            MaskRule(column="k", action="token"),
            MaskRule(column="r", action="redact"),
            MaskRule(column="c", action="truncate", length=3),
            MaskRule(column="n", action="null"),
        ],
    )
    masker = Masker(config, "key")
    plan = masker.plan("db.t", ["id", "h", "k", "r", "c", "n"])
    assert {c: m.action for c, m in plan.items()} == {
        "h": "hash",
        "k": "token",
        "r": "redact",
        "c": "truncate",
        "n": "null",
    }
    schema = masker.masked_schema(
        _schema(_column("id", "int"), _column("h", "int"), _column("r"), _column("c"), _column("n", "date"))
    )
    assert schema.column("h").masked_as_text and schema.column("h").data_type == "varchar"
    assert schema.column("n").nullable and schema.column("n").data_type == "date"

    other_key = Masker(config, "another key")
    hashed = masker._mask_function(plan["h"])("alice@example.com")
    assert len(hashed) == 64 and hashed == masker._mask_function(plan["h"])("alice@example.com")
    assert hashed != other_key._mask_function(plan["h"])("alice@example.com")
    token = masker._mask_function(plan["k"])("alice@example.com")
    assert token.startswith("tok_") and token[4:] not in hashed
    assert masker._mask_function(plan["r"])("secret") == REDACTED
    assert masker._mask_function(plan["c"])("abcdef") == "abc"
    assert masker._mask_function(plan["n"])("x") is None


def test_rules_that_would_break_a_table_are_refused_with_the_column_named() -> None:
    masker = Masker(MaskingConfig(rules=[MaskRule(column="id", action="redact")]), "key")
    with pytest.raises(MaskingError, match=r"table db\.t, column id .*merge distinct rows"):
        masker.masked_schema(_schema(_column("id", "int")))
    masker = Masker(MaskingConfig(rules=[MaskRule(column="amount", action="truncate", length=2)]), "key")
    with pytest.raises(MaskingError, match="column amount .*'truncate' applies to text or binary columns, not decimal"):
        masker.masked_schema(_schema(_column("id", "int"), _column("amount", "decimal")))
    masker = Masker(MaskingConfig(), None)
    with pytest.raises(MaskingError, match=r"needs the HMAC key in \$CDC_MASKING_KEY"):
        masker.masked_schema(_schema(_column("id", "int"), _column("email")))


RAW_PII = {
    "email": "alice.secret@example.com",
    "phone": "+1-555-0100-7777",
    "ssn": "078-05-1120",
    "home_address": "742 Evergreen Terrace Springfield",
    "ip_address": "203.0.113.77",
    "card_number": "4111111111111111",
    "diagnosis": "Rare condition Zeta-Omega",
    "prescription": "Fictitiousol 500mg",
    "patient_id": "PAT-00042-XYZ",
    "notes": "VIP customer notes secret text",
}


def test_no_unmasked_value_reaches_sinks_dlq_or_dagster_storage(harness: PipelineHarness, tmp_path: Path) -> None:
    harness.extra_config["masking"] = {"rules": [{"table": "*.*", "column": "notes", "action": "hash"}]}
    columns = ", ".join(f"`{c}` VARCHAR(100)" for c in RAW_PII)
    values = ", ".join(f"'{v}'" for v in RAW_PII.values())
    harness.source_execute(
        f"CREATE TABLE customers (id INT PRIMARY KEY, birth_date DATE, {columns})",
        f"INSERT INTO customers VALUES (1, '1980-02-03', {values})",
        f"UPDATE customers SET ssn = '{RAW_PII['ssn']}', notes = CONCAT(notes, '!') WHERE id = 1",
        # Rows that fail go to the DLQ: their payloads must be masked too.
        f"CREATE TABLE customers_no_key (id INT, {columns})",
        f"INSERT INTO customers_no_key VALUES (1, {values})",
        f"CREATE TABLE customers_spatial (id INT PRIMARY KEY, home POINT, {columns})",
        f"INSERT INTO customers_spatial VALUES (1, ST_GeomFromText('POINT(1 1)'), {values})",
    )
    instance_dir = tmp_path / "dagster_home"
    instance_dir.mkdir()
    with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
        harness.replicate(instance=instance)
    assert len(harness.dead_letters()) == 3  # one parse failure, and one map failure per sink

    texts: list[str] = []
    sink_client = harness.resources()[f"sink_{CH_SINK}"].sink(CH_SINK).client
    for (name,) in sink_client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": f"{harness.database}_ch"}
    ).result_rows:
        texts.append(sink_client.raw_query(f"SELECT * FROM `{harness.database}_ch`.`{name}` FORMAT TSV").decode())
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('replica', 'dlq')"
        )
        for schema, table in cursor.fetchall():
            cursor.execute(f'SELECT t::text FROM "{schema}"."{table}" AS t')
            texts.extend(row[0] for row in cursor.fetchall())
    connection.close()
    stored_files = [p for p in instance_dir.rglob("*") if p.is_file()]
    assert stored_files, "the run left nothing in the instance directory to scan"
    texts.extend(p.read_bytes().decode("utf-8", "replace") for p in stored_files)
    everything = "\n".join(texts)
    assert "tok_" in everything  # the masked values did arrive
    leaked = [f"{column}={value!r}" for column, value in RAW_PII.items() if value in everything]
    assert leaked == []
    assert "1980-02-03" not in everything  # birth_date is nulled by default


def test_a_rule_naming_a_column_the_table_lacks_holds_the_table_naming_the_rule(harness: PipelineHarness) -> None:
    """A typo in a rule (`secret_cod`) must not leave the real column raw in the sinks: a rule that
    names its table and column literally and finds no such column holds that table, naming the
    rule; a glob rule that matched nothing is reported in the run's metadata."""
    harness.source_execute(
        "CREATE TABLE payments (id INT PRIMARY KEY, secret_code VARCHAR(20), note VARCHAR(20))",
        "CREATE TABLE neighbour (id INT PRIMARY KEY, secret_code VARCHAR(20))",
        "INSERT INTO payments VALUES (1, 'RAW-SECRET-1', 'n')",
        "INSERT INTO neighbour VALUES (1, 'x')",
    )
    harness.extra_config["masking"] = {
        "rules": [
            {"table": f"{harness.database}.payments", "column": "secret_cod", "action": "redact"},
            {"table": "*.*", "column": "*_cod", "action": "redact"},
        ]
    }
    summary = run_summary(harness.replicate())
    ((sink, stage, error),) = [
        (sink, stage, error) for table, sink, stage, error, _ in harness.dead_letters() if table.endswith(".payments")
    ]
    assert (sink, stage) == ("", "mask") and "masking.rules[0] names column 'secret_cod'" in error, error
    assert "RAW-SECRET-1" not in str(harness.dead_letters())
    assert [row["id"] for row in harness.postgres_rows("neighbour")] == [1]
    unmatched = f"masking.rules[0] ({harness.database}.payments.secret_cod), masking.rules[1] (*.*.*_cod)"
    assert summary["masking_rules_unmatched"] == unmatched, summary


def test_a_rule_finds_a_table_with_a_dot_in_its_name_as_table_selection_does() -> None:
    """Table selection matches `p.q.t` for the table `p.q`.t; the pipeline names it `` `p.q`.t ``.
    A rule written like the selection must still mask it, and one written with the quoted name too."""
    for pattern in ("p*.*", "p.q.*", "`p.q`.t"):
        masker = Masker(
            MaskingConfig(classify_by_name=False, rules=[MaskRule(table=pattern, column="v", action="redact")]),
            "key",
        )
        assert {c: m.action for c, m in masker.plan("`p.q`.t", ["id", "v"]).items()} == {"v": "redact"}, pattern
