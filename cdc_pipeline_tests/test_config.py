"""A bad pipeline config fails at load time, naming the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_pipeline.config.loading import PipelineConfigError, load_pipeline_config, parse_pipeline_config
from cdc_pipeline.shared.postgres_session import InvalidDsn, connect
from cdc_pipeline.sources.postgres.connection import PostgresSourceSettings

VALID = """
sources:
  shop: {host: 127.0.0.1, port: 3306, tables: {include: ["shop.*"], exclude: ["shop.audit_*"]}}
sinks:
  warehouse: {kind: clickhouse, dsn: "chdb:///tmp/cdc"}
  analytics: {kind: postgres, dsn_env: ANALYTICS_DSN}
dlq: {dsn_env: ANALYTICS_DSN}
"""


def test_a_valid_config_loads_with_defaults() -> None:
    config = parse_pipeline_config(VALID)
    assert config.batch.max_rows == 10_000
    assert config.masking.classify_by_name is True
    assert config.sources["shop"].tables.selects("shop", "orders")
    assert not config.sources["shop"].tables.selects("shop", "audit_log")
    assert not config.sources["shop"].tables.selects("other", "orders")


@pytest.mark.parametrize(
    ("change", "named_key", "expectation"),
    [
        (("port: 3306", "port: 99999"), "sources.shop.port", "less than or equal to 65535"),
        (("kind: clickhouse", "kind: bigquery"), "sinks.warehouse", "expected tags: 'clickhouse', 'postgres'"),
        (("host: 127.0.0.1", "hots: 127.0.0.1"), "sources.shop.hots", "Extra inputs are not permitted"),
        (('"shop.*"', '"shop"'), "sources.shop.tables.include", "must have the form 'database.table'"),
        (
            ("dsn_env: ANALYTICS_DSN}\ndlq", "dsn_env: 1-bad}\ndlq"),
            "sinks.analytics.dsn_env",
            "String should match pattern",
        ),
        (("dlq: {dsn_env: ANALYTICS_DSN}", ""), "dlq", "Field required"),
        # A PostgreSQL source: its own keys, and none of MySQL's.
        (("host: 127.0.0.1, port: 3306", "kind: postgres, port: 5432"), "sources.shop.dsn_env", "Field required"),
        (
            ("host: 127.0.0.1, port: 3306", "kind: postgres, dsn_env: SRC, port: 5432"),
            "sources.shop.port",
            "Extra inputs are not permitted",
        ),
        (
            ("host: 127.0.0.1, port: 3306", "kind: postgres, dsn_env: SRC, slot: cdc-slot"),
            "sources.shop.slot",
            "String should match pattern",
        ),
        (("host: 127.0.0.1", "kind: oracle"), "sources.shop", "expected tags: 'mysql', 'postgres', 'cassandra'"),
    ],
)
def test_errors_name_the_key_and_the_expectation(change: tuple[str, str], named_key: str, expectation: str) -> None:
    text = VALID.replace(*change)
    assert text != VALID
    with pytest.raises(PipelineConfigError) as error:
        parse_pipeline_config(text, source="pipeline.yaml")
    message = str(error.value)
    assert "pipeline.yaml" in message and named_key in message and expectation in message


def test_type_override_must_name_a_known_sink() -> None:
    text = VALID + "type_overrides: [{table: shop.orders, column: c, sink: nowhere, type: String}]\n"
    with pytest.raises(PipelineConfigError, match=r"type_overrides\[0\]\.sink: 'nowhere' is not one of the sinks"):
        parse_pipeline_config(text)


def test_type_override_cannot_smuggle_sql() -> None:
    text = VALID + "type_overrides: [{table: shop.orders, column: c, type: 'String); DROP TABLE x; --'}]\n"
    with pytest.raises(PipelineConfigError, match=r"type_overrides\.0\.type"):
        parse_pipeline_config(text)


@pytest.mark.parametrize(
    ("type_text", "reason"),
    [
        ("text, injected text DEFAULT 'x'", "a comma outside parentheses"),
        ("text DEFAULT 'x'", "DEFAULT is a column clause"),
        ("String NOT NULL", "NOT, NULL is a column clause"),
        ("Decimal(12, 4))", "a ')' closes nothing"),
        ("Nullable(String", "unbalanced quotes or parentheses"),
    ],
)
def test_type_override_is_one_type_and_nothing_more(type_text: str, reason: str) -> None:
    text = VALID + f'type_overrides: [{{table: shop.orders, column: c, type: "{type_text}"}}]\n'
    with pytest.raises(PipelineConfigError, match=r"type_overrides\.0\.type") as error:
        parse_pipeline_config(text)
    assert reason in str(error.value)


@pytest.mark.parametrize(
    "type_text", ["Decimal(12, 4)", "Map(String, UInt64)", "double precision", "text[]", "Tuple(a String, b UInt8)"]
)
def test_type_override_takes_types_with_commas_inside_parentheses(type_text: str) -> None:
    text = VALID + f'type_overrides: [{{table: shop.orders, column: c, type: "{type_text}"}}]\n'
    assert parse_pipeline_config(text).type_overrides[0].type == type_text


def test_a_key_given_twice_is_refused_naming_it_and_both_lines() -> None:
    text = VALID + "sinks:\n  other: {kind: postgres, dsn_env: OTHER_DSN}\n"
    with pytest.raises(PipelineConfigError, match=r"key 'sinks' appears twice \(lines 4 and 8\)"):
        parse_pipeline_config(text, source="pipeline.yaml")
    nested = VALID.replace(
        "  analytics: {kind: postgres, dsn_env: ANALYTICS_DSN}\n",
        "  analytics: {kind: postgres, dsn_env: ANALYTICS_DSN}\n  analytics: {kind: postgres, dsn_env: OTHER}\n",
    )
    assert nested != VALID
    with pytest.raises(PipelineConfigError, match=r"key 'analytics' appears twice \(lines 6 and 7\)"):
        parse_pipeline_config(nested, source="pipeline.yaml")


def test_missing_file_and_invalid_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PipelineConfigError, match="does not exist"):
        load_pipeline_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources: [unclosed")
    with pytest.raises(PipelineConfigError, match="is not valid YAML"):
        load_pipeline_config(broken)


def test_a_malformed_dsn_is_refused_without_repeating_it() -> None:
    # libpq quotes the token it cannot parse: here a password typed without its '='.
    dsn = "host=db.internal user=cdc passwordHunter2secret"
    with pytest.raises(InvalidDsn) as sink_error:
        connect(dsn)
    with pytest.raises(InvalidDsn) as source_error:
        PostgresSourceSettings(dsn, "store").connect()
    assert "source 'store'" in str(source_error.value)
    for error in (sink_error.value, source_error.value):
        assert "Hunter2" not in str(error) and error.__cause__ is None and error.__suppress_context__


@pytest.mark.parametrize(
    ("section", "named_key", "expectation"),
    [
        ("replication: {mode: forever}", "replication.mode", "'continuous' or 'per_run'"),
        ("replication: {idle_poll_seconds: 2}", "replication.idle_poll_seconds", "less than or equal to 0.5"),
        ("replication: {lifetime_minutes: 0}", "replication.lifetime_minutes", "greater than 0"),
        ("replication: {report_interval_seconds: 0.1}", "replication.report_interval_seconds", "greater than"),
        ("batch: {max_bytes: 1000}", "batch.max_bytes", "greater than or equal to 65536"),
        ("batch: {max_seconds: 0}", "batch.max_seconds", "greater than 0"),
    ],
)
def test_the_replication_mode_and_batch_limits_are_validated(section: str, named_key: str, expectation: str) -> None:
    with pytest.raises(PipelineConfigError) as error:
        parse_pipeline_config(VALID + section + "\n", source="pipeline.yaml")
    assert named_key in str(error.value) and expectation in str(error.value)


def test_two_sources_cannot_both_stream_into_one_embedded_clickhouse() -> None:
    two_sources = VALID.replace(
        "sources:\n", "sources:\n  store: {kind: postgres, dsn_env: STORE_DSN, tables: {include: ['public.*']}}\n"
    )
    with pytest.raises(PipelineConfigError, match=r"only one source can stream into it.*'per_run'"):
        parse_pipeline_config(two_sources)
    per_run = parse_pipeline_config(two_sources + "replication: {mode: per_run}\n")
    assert per_run.replication.mode == "per_run" and per_run.batch.max_bytes == 8 * 2**20


@pytest.mark.parametrize(
    ("sources", "first", "second"),
    [
        # `p`.`a__b` and `p__a`.`b` in one source.
        (
            'shop: {host: h, tables: {include: ["p.a__b", "p__a.b"]}}',
            "sources.shop.tables.include 'p.a__b'",
            "sources.shop.tables.include 'p__a.b'",
        ),
        # One table name in two sources (MySQL and PostgreSQL).
        (
            'shop: {host: h, tables: {include: ["sales.orders"]}}\n'
            '  crm: {kind: postgres, dsn_env: CRM_DSN, tables: {include: ["sales.orders"]}}',
            "sources.shop.tables.include 'sales.orders'",
            "sources.crm.tables.include 'sales.orders'",
        ),
    ],
)
def test_two_tables_named_for_one_sink_table_are_refused_naming_both(sources: str, first: str, second: str) -> None:
    text = VALID.replace(VALID.splitlines()[2], f"  {sources}").replace("replication:", "")
    with pytest.raises(PipelineConfigError) as error:
        parse_pipeline_config(text)
    assert f"{first} and {second} would both be the sink table" in str(error.value)
