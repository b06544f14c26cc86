"""What a mapped column looks like, whatever the sink: its type and how to convert a value into it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cdc_pipeline.core.schema import ColumnSchema, TableSchema

# Converts a masked source value into what the sink's client expects; raises ValueNotMappable.
Converter = Callable[[Any], Any]

VERSION_COLUMN = "_version"
DELETED_COLUMN = "_is_deleted"
# The bookkeeping columns of a cell table (Cassandra), stamped cells (sinks/cell_merge/stamped_rows.py).
KEY_COLUMN = "_key"  # the key as canonical text: rows are looked up with plain string parameters
PARTITION_COLUMN = "_partition"  # the partition key as canonical text
DELETED_AT_COLUMN = "_deleted_at"  # the newest row, partition or covering range deletion
LIVENESS_COLUMN = "_liveness"  # ClickHouse: the primary-key liveness stamp
STAMPS_COLUMN = "_stamps"  # PostgreSQL: every scalar cell's stamp, and the liveness's
LIVE_UNTIL_COLUMN = "_live_until"  # (the views) when TTLs end the row's life (seconds since the epoch); NULL: never
# The earlier form's (a JSON state per row), read when its tables are converted.
CELLS_COLUMN = "_cells"
EXPIRY_COLUMN = "_expiry"
CELL_BOOKKEEPING = (
    KEY_COLUMN,
    PARTITION_COLUMN,
    DELETED_AT_COLUMN,
    LIVENESS_COLUMN,
    STAMPS_COLUMN,
    LIVE_UNTIL_COLUMN,
    CELLS_COLUMN,
    EXPIRY_COLUMN,
)


def bookkeeping_columns(merges_cells: bool) -> tuple[str, ...]:
    """The columns the sinks add to a table of this kind: a source column may not bear their names."""
    return (VERSION_COLUMN, DELETED_COLUMN, *(CELL_BOOKKEEPING if merges_cells else ()))


class ValueNotMappable(ValueError):
    """A value that does not fit its sink column type; the message says which limit it breaks."""


class TypeNotMappable(ValueError):
    """A source type with no mapping for a sink; the message names the type and how to override it."""


@dataclass(frozen=True)
class SinkColumn:
    name: str
    sink_type: str  # the DDL type, e.g. "Nullable(Decimal(65, 30))" or "numeric(65,30)"
    convert: Converter | None  # None: the value passes unchanged
    # The type comes from a `type_overrides` entry: the operator's fix, applied to the sink table
    # even where the batch's shape alone would not retype it (a DLQ replay).
    overridden: bool = False

    def converted(self, value: Any) -> Any:
        """`value` in the sink's form; ValueNotMappable naming this column when it does not fit."""
        return convert_for_column(self.name, self.convert, value)


# One sink kind's column mapping: (source column, is it a key column, the type override if any) ->
# the sink column; raises TypeNotMappable. Each sink's `column_types.py` provides one.
ColumnMapper = Callable[[ColumnSchema, bool, str | None], SinkColumn]


def convert_for_column(name: str, convert: Converter | None, value: Any) -> Any:
    """Convert one value of column `name`; any refusal becomes a ValueNotMappable that names the column."""
    if value is None or convert is None:
        return value
    try:
        return convert(value)
    except ValueNotMappable as error:
        raise ValueNotMappable(f"column {name}: {error}") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueNotMappable(f"column {name}: cannot convert {type(value).__name__}: {error}") from None


@dataclass(frozen=True)
class SinkTableLayout:
    """A sink table derived from a source table: the columns in source order, then the bookkeeping."""

    source_table: str
    table_name: str
    columns: tuple[SinkColumn, ...]
    key_columns: tuple[str, ...]
    # Cell tables (Cassandra): the masked source schema. The sink merges the changes into stored
    # per-row states (sinks/cell_merge/) and converts the merged values itself.
    cell_schema: TableSchema | None = None

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def ddl_signature(self) -> tuple[str, ...]:
        """What the sink table's DDL depends on: when it changes (a column added or dropped at the
        source, a type override), the sinks run the table's DDL again."""
        drops = self.cell_schema.dropped_columns if self.cell_schema is not None else ()
        return (
            self.table_name,
            f"from {self.source_table}",  # two source tables named alike must not share a cached check
            *(f"{column.name} {column.sink_type}" for column in self.columns),
            *(f"dropped {column} at {at}" for column, at in drops),
        )
