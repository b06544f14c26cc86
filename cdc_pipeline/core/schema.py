"""Source table schemas, as read from the source's catalog."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


def qualify(database: str, table: str) -> str:
    """A table's name across the pipeline: `database.table`, where a part that holds a dot or a
    backtick is written in backticks (doubled inside), so `p.q`.t and p.`q.t` stay two tables."""
    return f"{_quoted_part(database)}.{_quoted_part(table)}"


def split_qualified(qualified: str) -> tuple[str, str]:
    """(database, table) of a name `qualify` wrote."""
    if not qualified.startswith("`"):
        database, _, table = qualified.partition(".")
        return database, _unquoted_part(table)
    end = 1
    while True:
        end = qualified.index("`", end)
        if qualified.startswith("``", end):
            end += 2
            continue
        return _unquoted_part(qualified[: end + 1]), _unquoted_part(qualified[end + 2 :])


def _quoted_part(part: str) -> str:
    return f"`{part.replace('`', '``')}`" if "." in part or "`" in part else part


def _unquoted_part(part: str) -> str:
    return part[1:-1].replace("``", "`") if part.startswith("`") and part.endswith("`") and len(part) > 1 else part


@dataclass(frozen=True)
class ColumnSchema:
    """One column with the facts type mapping needs.

    `data_type` is the pipeline's vocabulary: MySQL's lower-case DATA_TYPE names, plus `boolean` and
    `uuid`; other sources describe their columns in it (sources/postgres/column_types.py).
    `precision` None on a decimal means unconstrained (PostgreSQL `numeric`).
    """

    name: str
    data_type: str
    column_type: str
    nullable: bool
    unsigned: bool = False
    precision: int | None = None
    scale: int | None = None
    datetime_precision: int | None = None
    char_length: int | None = None
    enum_values: tuple[str, ...] = ()
    # Set by masking: the values are now masked text, whatever the source type was.
    masked_as_text: bool = False
    # Cassandra: a non-frozen collection or UDT ("list", "set", "map", "udt"), whose changes are
    # element writes (core/cells.py); data_type is then "json".
    collection: str | None = None
    # Cassandra clustering columns: stored in descending order (CLUSTERING ORDER BY ... DESC).
    descending: bool = False
    # Set by masking action "null" on a cell table: the sinks keep the cells' write times (a row
    # written only through this column is still live) but always show NULL.
    masked_as_null: bool = False

    def as_masked_text(self) -> ColumnSchema:
        return replace(self, data_type="varchar", column_type="varchar", masked_as_text=True, char_length=None)


@dataclass(frozen=True)
class TableSchema:
    database: str
    name: str
    columns: tuple[ColumnSchema, ...]
    key_columns: tuple[str, ...]
    # Cassandra: changes carry cells (RowChange.cells) and the first `partition_key_length` key
    # columns are the partition key, the others the clustering columns. None for row-image sources.
    partition_key_length: int | None = None
    # Cassandra: (column, drop time in microseconds) of the columns dropped from the table. Cells of
    # such a column written up to its drop never show again, even after a column of that name is added.
    dropped_columns: tuple[tuple[str, int], ...] = ()
    _by_name: dict[str, ColumnSchema] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({column.name: column for column in self.columns})

    @property
    def qualified_name(self) -> str:
        return qualify(self.database, self.name)

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def column(self, name: str) -> ColumnSchema:
        return self._by_name[name]

    @property
    def merges_cells(self) -> bool:
        return self.partition_key_length is not None

    @property
    def partition_key(self) -> tuple[str, ...]:
        return self.key_columns[: self.partition_key_length or 0]

    @property
    def clustering_columns(self) -> tuple[str, ...]:
        return self.key_columns[self.partition_key_length or 0 :] if self.merges_cells else ()

    def with_columns(self, columns: tuple[ColumnSchema, ...]) -> TableSchema:
        return TableSchema(
            self.database, self.name, columns, self.key_columns, self.partition_key_length, self.dropped_columns
        )
