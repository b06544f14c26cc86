"""TimescaleDB: a PostgreSQL sink table becomes a hypertable on its configured time column, when the
sink database has the `timescaledb` extension.

Without the extension the table stays a plain PostgreSQL table and says so (asset metadata, a
warning in the run log); once the extension is installed, the next run converts it
(`create_hypertable(..., migrate_data => true)` moves the rows already there into chunks).
"""

from __future__ import annotations

import logging

import psycopg2.extensions
from psycopg2 import sql

from cdc_pipeline.mapping.sink_types import SinkTableLayout

_log = logging.getLogger(__name__)
# The column types TimescaleDB can partition a hypertable by.
_TIME_TYPES = ("timestamp", "timestamptz", "date", "smallint", "integer", "bigint")


class HypertableError(ValueError):
    """A hypertable setting that cannot work for its table; the message names the config key."""


def check_time_column(setting: str, layout: SinkTableLayout, time_column: str) -> None:
    """Refuse, naming `setting`, a time column TimescaleDB could not partition this table by."""
    column = next((c for c in layout.columns if c.name == time_column), None)
    if column is None:
        raise HypertableError(f"{setting}: table {layout.source_table} has no column {time_column!r}")
    if time_column not in layout.key_columns:
        # TimescaleDB requires the partitioning column in every unique index, the primary key included.
        raise HypertableError(
            f"{setting}: column {time_column!r} is not part of {layout.source_table}'s key"
            f" {list(layout.key_columns)}; TimescaleDB partitions by a column of every unique index"
        )
    if not column.sink_type.lower().startswith(_TIME_TYPES):
        raise HypertableError(
            f"{setting}: column {time_column!r} is {column.sink_type}; a hypertable's time column must be one of"
            f" {', '.join(_TIME_TYPES)}"
        )


def make_hypertable(
    cursor: psycopg2.extensions.cursor, setting: str, table: sql.Composed, layout: SinkTableLayout, time_column: str
) -> str:
    """Turn `table` into a hypertable if TimescaleDB is there; returns what became of it, for the asset
    metadata."""
    check_time_column(setting, layout, time_column)
    cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cursor.fetchone()
    if row is None:
        note = (
            "plain table: the timescaledb extension is not installed in the sink database; after"
            " CREATE EXTENSION timescaledb the next run converts it"
        )
        _log.warning("%s: %s is a %s", setting, layout.table_name, note)
        return note
    # The 2.x signature that every 2.x release accepts (by_range() needs 2.13+).
    cursor.execute(
        "SELECT create_hypertable(%s::regclass, %s, if_not_exists => TRUE, migrate_data => TRUE)",
        (table.as_string(cursor), time_column),
    )
    return f"hypertable on {time_column} (timescaledb {row[0]})"
