"""What a sink does to its table for a batch's shape (sinks/schema_sync/): pure unit tests, no database."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind, ShapeSource
from cdc_pipeline.sinks.clickhouse.type_changes import clickhouse_type_change
from cdc_pipeline.sinks.postgres.type_changes import postgres_type_change
from cdc_pipeline.sinks.schema_sync.plan import (
    AddColumn,
    ChangeKey,
    ChangeType,
    DropColumn,
    RenameColumn,
    SinkTableState,
    Step,
    TombstoneOlder,
    WantedColumn,
    plan_table,
)
from cdc_pipeline.sinks.schema_sync.type_changes import Fit

K = SchemaChangeKind


@pytest.mark.parametrize(
    ("old", "new", "fit"),
    [
        ("integer", "bigint", Fit.SAFE),
        ("bigint", "integer", Fit.CHECKED),
        ("integer", "numeric(20,0)", Fit.CHECKED),
        ("numeric(12,4)", "numeric(14,4)", Fit.SAFE),
        ("numeric(12,4)", "numeric(12,2)", Fit.LOSSY),
        ("character varying(10)", "character varying(20)", Fit.SAFE),
        ("character varying(20)", "character varying(10)", Fit.CHECKED),
        ("timestamp(6) without time zone", "timestamp(3) without time zone", Fit.LOSSY),
        ("text", "integer", Fit.CHECKED),
        ("integer", "text", Fit.SAFE),
        ("integer", "boolean", Fit.LOSSY),
    ],
)
def test_postgres_type_changes(old: str, new: str, fit: Fit) -> None:
    assert postgres_type_change(old, new).fit is fit


@pytest.mark.parametrize(
    ("old", "new", "fit"),
    [
        ("Nullable(Int32)", "Nullable(Int64)", Fit.SAFE),
        ("UInt32", "Int64", Fit.SAFE),
        ("UInt32", "Int32", Fit.CHECKED),
        ("Int32", "UInt64", Fit.CHECKED),
        ("Nullable(Int32)", "Int32", Fit.CHECKED),
        ("Int32", "Nullable(Int32)", Fit.SAFE),
        ("Decimal(12, 4)", "Decimal(12, 2)", Fit.LOSSY),
        ("Decimal(12, 2)", "Decimal(14, 2)", Fit.SAFE),
        ("Enum8('a' = 1)", "Enum8('a' = 1, 'b' = 2)", Fit.SAFE),
        ("Enum8('a' = 1, 'b' = 2)", "Enum8('a' = 1)", Fit.CHECKED),
        ("DateTime64(6, 'UTC')", "DateTime64(3, 'UTC')", Fit.LOSSY),
        ("Float64", "Int64", Fit.LOSSY),
        ("Int16", "String", Fit.SAFE),
    ],
)
def test_clickhouse_type_changes(old: str, new: str, fit: Fit) -> None:
    assert clickhouse_type_change(old, new).fit is fit


def _change(kind: SchemaChangeKind, column: str | None = None, **fields: object) -> SchemaChange:
    return SchemaChange("shop.t", kind, "binlog.000001:4", 100, "DDL", column=column, **fields)  # type: ignore[arg-type]


def _wanted(*columns: tuple[str, str]) -> list[WantedColumn]:
    return [WantedColumn(name, spelled, spelled) for name, spelled in columns]


def _apply(state: SinkTableState, steps: list[Step], wanted_key: tuple[str, ...]) -> SinkTableState:
    """What a sink's table looks like after the steps (the model the sinks implement)."""
    columns = dict(state.columns)
    key = state.key_columns
    for step in steps:
        if isinstance(step, RenameColumn):
            columns = {step.new if name == step.old else name: t for name, t in columns.items()}
        elif isinstance(step, AddColumn):
            columns[step.name] = step.sink_type
        elif isinstance(step, DropColumn):
            del columns[step.name]
        elif isinstance(step, ChangeType):
            columns[step.name] = step.new_type
        elif isinstance(step, ChangeKey):
            key = step.key_columns
    return SinkTableState(tuple(columns.items()), key)


STATE = SinkTableState((("id", "integer"), ("name", "text"), ("qty", "integer")), ("id",))


def test_a_rename_keeps_the_column_and_an_added_column_brings_the_existing_rows_default() -> None:
    wanted = _wanted(("id", "integer"), ("title", "text"), ("qty", "integer"), ("price", "numeric(10,2)"))
    changes = [
        _change(K.RENAME_COLUMN, "title", old_name="name"),
        _change(K.ADD_COLUMN, "price", default="9.50", has_default=True),
    ]
    plan = plan_table(STATE, wanted, ("id",), changes, ShapeSource.ROWS, postgres_type_change)
    assert plan.refusal is None
    assert plan.steps == [RenameColumn("name", "title"), AddColumn("price", "numeric(10,2)", "9.50", True)]
    # Planned again on the table as the steps left it (a replay after a crash): nothing more to do.
    after = _apply(STATE, plan.steps, ("id",))
    assert plan_table(after, wanted, ("id",), changes, ShapeSource.ROWS, postgres_type_change).steps == []


def test_the_rows_shape_makes_the_table_match_it_dropping_retyping_and_rekeying() -> None:
    wanted = _wanted(("id", "integer"), ("qty", "bigint"), ("region", "text"))
    plan = plan_table(STATE, wanted, ("id", "region"), [], ShapeSource.ROWS, postgres_type_change)
    assert plan.refusal is None
    assert plan.steps == [
        DropColumn("name"),
        AddColumn("region", "text", None, False),
        ChangeType("qty", "integer", "bigint", checked=False),
        ChangeKey(("id", "region")),
    ]


def test_a_column_gone_and_one_come_in_its_place_with_its_type_is_a_rename_when_the_log_says_nothing() -> None:
    # PostgreSQL's relation messages carry no renames.
    wanted = _wanted(("id", "integer"), ("label", "text"), ("qty", "integer"))
    plan = plan_table(STATE, wanted, ("id",), [], ShapeSource.ROWS, postgres_type_change)
    assert plan.steps == [RenameColumn("name", "label")]


def test_a_lossy_type_change_refuses_the_table_and_changes_nothing() -> None:
    state = SinkTableState((("id", "integer"), ("amount", "numeric(12,4)")), ("id",))
    wanted = _wanted(("id", "integer"), ("amount", "numeric(12,2)"), ("extra", "text"))
    plan = plan_table(
        state, wanted, ("id",), [_change(K.MODIFY_COLUMN, "amount")], ShapeSource.ROWS, postgres_type_change
    )
    assert plan.steps == []
    assert plan.refusal is not None and "amount" in plan.refusal and "2 decimal places" in plan.refusal


def test_a_resync_takes_the_lossy_change_because_it_rewrites_every_row() -> None:
    state = SinkTableState((("id", "integer"), ("amount", "numeric(12,4)")), ("id",))
    wanted = _wanted(("id", "integer"), ("amount", "numeric(12,2)"))
    plan = plan_table(state, wanted, ("id",), [], ShapeSource.SNAPSHOT, postgres_type_change)
    assert plan.refusal is None
    assert plan.steps == [ChangeType("amount", "numeric(12,4)", "numeric(12,2)", checked=False)]


def test_a_catalog_shape_only_touches_the_columns_the_changes_name() -> None:
    # The catalog may be ahead of the batch: a column it has that no change named is left for its rows.
    wanted = _wanted(("id", "integer"), ("name", "text"), ("qty", "bigint"), ("later", "text"), ("added", "text"))
    changes = [_change(K.ADD_COLUMN, "added"), _change(K.MODIFY_COLUMN, "qty")]
    plan = plan_table(STATE, wanted, ("id",), changes, ShapeSource.CATALOG, postgres_type_change)
    assert plan.steps == [
        AddColumn("added", "text", None, False),
        ChangeType("qty", "integer", "bigint", checked=False),
    ]


def test_a_replay_only_adds_what_the_sink_lacks() -> None:
    wanted = _wanted(("id", "integer"), ("qty", "bigint"), ("added", "text"))
    plan = plan_table(STATE, wanted, ("id",), [], ShapeSource.REPLAY, postgres_type_change)
    assert plan.steps == [AddColumn("added", "text", None, False)]


@pytest.mark.parametrize("shape", [ShapeSource.REPLAY, ShapeSource.CATALOG])
def test_a_type_override_retypes_its_column_in_every_shape(shape: ShapeSource) -> None:
    """The operator's fix (README footnote 1): a replay or a catalog-shaped batch applies it too,
    where it would otherwise leave the column as it is."""
    wanted = [WantedColumn("id", "integer", "integer"), WantedColumn("name", "text", "text")]
    wanted.append(WantedColumn("qty", "text", "text", overridden=True))
    plan = plan_table(STATE, wanted, ("id",), [], shape, postgres_type_change)
    assert plan.steps == [ChangeType("qty", "integer", "text", checked=False)]
    assert plan.refusal is None


def test_truncate_and_drop_table_delete_the_older_rows() -> None:
    wanted = _wanted(*STATE.columns)
    changes = [_change(K.TRUNCATE), _change(K.DROP_TABLE)]
    plan = plan_table(STATE, wanted, ("id",), changes, ShapeSource.ROWS, postgres_type_change)
    assert plan.steps == [TombstoneOlder(100), TombstoneOlder(100)]
    assert not plan.changes_columns
