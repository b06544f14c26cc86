"""Row tables in ClickHouse: a ReplacingMergeTree keyed by the source key, versioned by `_version`
with `_is_deleted` marking tombstones; `FINAL` (and the `_current` view) shows each key's newest
live row. (Cassandra's cell tables are in cell_tables.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, VERSION_COLUMN, SinkTableLayout
from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier


def row_table_ddl(qualified: Callable[[str], str], layout: SinkTableLayout, view_suffix: str) -> list[str]:
    """The table and its `_current` view, both made if missing."""
    columns = [f"{quote_identifier(c.name)} {c.sink_type}" for c in layout.columns]
    columns.append(f"{quote_identifier(VERSION_COLUMN)} UInt64")
    columns.append(f"{quote_identifier(DELETED_COLUMN)} UInt8")
    order_by = ", ".join(quote_identifier(k) for k in layout.key_columns)
    create_table = (
        f"CREATE TABLE IF NOT EXISTS {qualified(layout.table_name)} ({', '.join(columns)})"
        f" ENGINE = ReplacingMergeTree({quote_identifier(VERSION_COLUMN)}, {quote_identifier(DELETED_COLUMN)})"
        f" ORDER BY ({order_by})"
    )
    # FINAL collapses versions and drops rows whose newest version is a delete.
    create_view = (
        f"CREATE VIEW IF NOT EXISTS {qualified(layout.table_name + view_suffix)} AS"
        f" SELECT {', '.join(quote_identifier(c) for c in layout.column_names)}"
        f" FROM {qualified(layout.table_name)} FINAL WHERE {quote_identifier(DELETED_COLUMN)} = 0"
    )
    return [create_table, create_view]


def tombstone_defaults(client: Client, layout: SinkTableLayout) -> list[tuple[int, Any]]:
    """(column index, the type's default value) of the table's non-Nullable columns."""
    wanted = [
        (index, column.sink_type)
        for index, column in enumerate(layout.columns)
        if not column.sink_type.startswith("Nullable(")
    ]
    if not wanted:
        return []
    defaults = client.query(
        "SELECT " + ", ".join(f"defaultValueOfTypeName({{t{i}:String}})" for i in range(len(wanted))),
        parameters={f"t{i}": sink_type for i, (_, sink_type) in enumerate(wanted)},
    ).result_rows[0]
    return [(index, default) for (index, _), default in zip(wanted, defaults, strict=True)]


def fill_tombstones(layout: SinkTableLayout, rows: list[list[Any]], defaults: list[tuple[int, Any]]) -> None:
    """Give delete rows a value in every non-Nullable column.

    Some sources only know a deleted row's key (PostgreSQL without REPLICA IDENTITY FULL); a
    tombstone's other columns are never read (the `_current` view and FINAL hide it), but a
    non-Nullable column refuses NULL, so it gets the type's default value.
    """
    deleted_at = len(layout.columns) + 1
    for row in rows:
        if row[deleted_at]:
            for index, default in defaults:
                if row[index] is None:
                    row[index] = default
