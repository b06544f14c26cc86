"""Schema changes on ClickHouse sink tables (ReplacingMergeTree ordered by the source key).

ClickHouse has no transactions: each step is one ALTER that is safe to run again (IF EXISTS / IF
NOT EXISTS, or decided against the table as it stands), so a crash between steps re-plans only
what is missing. A checked type change asks the table first (accurateCastOrNull) and refuses when
a stored value would not survive. The sorting key cannot be altered in place: a key change copies
the live rows into a table with the new key and swaps it in.
"""

from __future__ import annotations

from collections.abc import Callable

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from cdc_pipeline.core.schema_changes import SchemaChange
from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, VERSION_COLUMN, SinkTableLayout
from cdc_pipeline.sinks.clickhouse.sorting_key import parse_sorting_key
from cdc_pipeline.sinks.clickhouse.type_changes import clickhouse_type_change
from cdc_pipeline.sinks.schema_sync.plan import (
    AddColumn,
    ChangeKey,
    ChangeType,
    DropColumn,
    RenameColumn,
    SchemaPlan,
    SinkTableState,
    TombstoneOlder,
)
from cdc_pipeline.sinks.schema_sync.sync import OWNERS_TABLE, SchemaChangeRefused, name_conflict_reason
from cdc_pipeline.sinks.schema_sync.type_changes import TypeChange

_BOOKKEEPING = (VERSION_COLUMN, DELETED_COLUMN)
# Tables held by a DDL statement the pipeline could not read; the newest row per table says whether
# it is held (written before the checkpoint, like the data; released by the DLQ replay).
HOLDS_TABLE = "_cdc_schema_holds"
# Type changes rewrite parts as a mutation: wait for it, so the next insert sees the new type.
_MUTATION_SETTINGS = {"mutations_sync": 2}


class ClickHouseShaper:
    def __init__(
        self,
        client: Callable[[], Client],
        is_unavailable: Callable[[BaseException], bool],
        database: str,
        qualified: Callable[[str], str],
        quote: Callable[[str], str],
        view_suffix: str,
    ) -> None:
        self._client = client
        self._is_unavailable = is_unavailable
        self._database = database
        self._qualified = qualified
        self._quote = quote
        self._view_suffix = view_suffix
        self._spelling: dict[str, str] = {}
        self._bookkeeping_ready: set[str] = set()  # bookkeeping tables made by this process

    def claim(self, table_name: str, source: str, source_table: str) -> tuple[str, str]:
        owner = self._owner(table_name)
        if owner is None:
            self._client().insert(
                self._owners_table(), [[table_name, source, source_table]], ["sink_table", "source", "source_table"]
            )
            owner = self._owner(table_name)
        assert owner is not None
        return owner

    def _owner(self, table_name: str) -> tuple[str, str] | None:
        """The first claim of the name: two processes that claim it at once both read the same one."""
        rows = (
            self._client()
            .query(
                f"SELECT source, source_table FROM {self._owners_table()} WHERE sink_table = {{t:String}}"
                " ORDER BY claimed_at, source, source_table LIMIT 1",
                parameters={"t": table_name},
            )
            .result_rows
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def _owners_table(self) -> str:
        return self._bookkeeping_table(
            OWNERS_TABLE,
            "(sink_table String, source String, source_table String, claimed_at DateTime64(6, 'UTC') DEFAULT"
            " now64(6)) ENGINE = MergeTree ORDER BY sink_table",
        )

    def _bookkeeping_table(self, name: str, definition: str) -> str:
        """The qualified name of a bookkeeping table, created on its first use in this process."""
        table = self._qualified(name)
        if name not in self._bookkeeping_ready:
            self._client().command(f"CREATE TABLE IF NOT EXISTS {table} {definition}")
            self._bookkeeping_ready.add(name)
        return table

    def name_conflict(self, table_name: str) -> str | None:
        view = table_name + self._view_suffix
        rows = (
            self._client()
            .query(
                "SELECT name, engine = 'View' FROM system.tables WHERE database = {db:String}"
                " AND name IN ({t:String}, {v:String})",
                parameters={"db": self._database, "t": table_name, "v": view},
            )
            .result_rows
        )
        return name_conflict_reason(self._database, table_name, view, {str(n): bool(v) for n, v in rows})

    def table_state(self, table_name: str) -> SinkTableState | None:
        rows = (
            self._client()
            .query(
                "SELECT name, type, is_in_sorting_key FROM system.columns WHERE database = {db:String}"
                " AND table = {t:String} ORDER BY position",
                parameters={"db": self._database, "t": table_name},
            )
            .result_rows
        )
        if not rows:
            return None
        columns = tuple((str(name), str(type_)) for name, type_, _ in rows if name not in _BOOKKEEPING)
        sorting_key = (
            self._client()
            .query(
                "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                parameters={"db": self._database, "t": table_name},
            )
            .result_rows[0][0]
        )
        # sorting_key lists the key columns in order, as ClickHouse formats ORDER BY (see parse_sorting_key);
        # a part that is not one of the table's columns (an expression) is not a key column.
        names = {name for name, _ in columns}
        key = tuple(part for part in parse_sorting_key(str(sorting_key)) if part in names)
        return SinkTableState(columns, key)

    def canonical_types(self, sink_types: list[str]) -> list[str]:
        unknown = sorted({t for t in sink_types if t not in self._spelling})
        if unknown:
            spellings = (f"toTypeName(defaultValueOfTypeName({{t{i}:String}}))" for i in range(len(unknown)))
            spelled = (
                self._client()
                .query(
                    "SELECT " + ", ".join(spellings),
                    parameters={f"t{i}": sink_type for i, sink_type in enumerate(unknown)},
                )
                .result_rows[0]
            )
            self._spelling.update(zip(unknown, (str(s) for s in spelled), strict=True))
        return [self._spelling[t] for t in sink_types]

    def type_change(self, old: str, new: str) -> TypeChange:
        return clickhouse_type_change(old, new)

    def apply(self, layout: SinkTableLayout, plan: SchemaPlan) -> None:
        table = self._qualified(layout.table_name)
        # Checked type changes are asked first, before any step runs: a refusal changes nothing.
        # The table still has the names the plan's renames replace.
        stored_name: dict[str, str] = {}
        for step in plan.steps:
            if isinstance(step, RenameColumn):
                stored_name[step.new] = stored_name.get(step.old, step.old)
            elif isinstance(step, ChangeType) and step.checked:
                self._check_values_fit(table, stored_name.get(step.name, step.name), step)
        rekeying = any(isinstance(step, ChangeKey) for step in plan.steps)
        try:
            self._apply_steps(layout, plan, rekeying)
        except DatabaseError as error:
            if self._is_unavailable(error):
                raise
            # ClickHouse refused a statement (e.g. a type change it cannot do in place): the table
            # is held with the reason; the steps before it were safe on their own and stay.
            raise SchemaChangeRefused(f"ClickHouse refused the change: {str(error).splitlines()[0]}") from None
        self._replace_view(layout)

    def _apply_steps(self, layout: SinkTableLayout, plan: SchemaPlan, rekeying: bool) -> None:
        table = self._qualified(layout.table_name)
        q = self._quote
        for step in plan.steps:
            if isinstance(step, ChangeType) and rekeying:
                continue  # the copy into the re-keyed table converts every column to the layout's type
            if isinstance(step, RenameColumn):
                self._command(f"ALTER TABLE {table} RENAME COLUMN IF EXISTS {q(step.old)} TO {q(step.new)}")
            elif isinstance(step, AddColumn):
                default = ""
                if step.has_default and step.default is not None:
                    default = f" DEFAULT CAST({_string_literal(str(step.default))}, {_string_literal(step.sink_type)})"
                self._command(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {q(step.name)} {step.sink_type}{default}"
                    f"{self._placement(layout, step.name)}"
                )
            elif isinstance(step, DropColumn):
                self._command(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {q(step.name)}")
            elif isinstance(step, ChangeType):
                self._command(f"ALTER TABLE {table} MODIFY COLUMN {q(step.name)} {step.new_type}")
            elif isinstance(step, ChangeKey):
                self._rekey(layout)
            elif isinstance(step, TombstoneOlder):
                self.tombstone_older(layout.table_name, step.version)

    def _command(self, statement: str) -> None:
        self._client().command(statement, settings=_MUTATION_SETTINGS)

    def _placement(self, layout: SinkTableLayout, column: str) -> str:
        """Keep the source's column order (the view and a re-planned rename rely on it)."""
        names = layout.column_names
        index = names.index(column)
        return " FIRST" if index == 0 else f" AFTER {self._quote(names[index - 1])}"

    def _check_values_fit(self, table: str, stored_name: str, step: ChangeType) -> None:
        q = self._quote
        target = step.new_type
        nullable_target = target.startswith("Nullable(")
        column = q(stored_name)
        condition = f"{column} IS NOT NULL AND accurateCastOrNull({column}, {_string_literal(_inner(target))}) IS NULL"
        if not nullable_target:
            condition = f"({condition}) OR {column} IS NULL"
        rows = (
            self._client()
            .query(
                f"SELECT count(), any(toString({column})) FROM {table} WHERE {q(DELETED_COLUMN)} = 0 AND ({condition})"
            )
            .result_rows
        )
        misfits, example = rows[0]
        if misfits:
            raise SchemaChangeRefused(
                f"column {step.name}: {misfits} stored value(s) do not fit {step.new_type} (e.g. {example!r});"
                f" the column stays {step.old_type}. Override the column's type (type_overrides) or re-sync the table"
            )

    def _rekey(self, layout: SinkTableLayout) -> None:
        """Copy the live rows into a table ordered by the new key and swap it in (tombstones of the
        old key mean nothing under the new one)."""
        table = self._qualified(layout.table_name)
        rekeyed = self._qualified(layout.table_name + "_cdc_rekey")
        q = self._quote
        columns = ", ".join(q(c) for c in [*layout.column_names, *_BOOKKEEPING])
        definitions = ", ".join(
            [f"{q(c.name)} {c.sink_type}" for c in layout.columns]
            + [f"{q(VERSION_COLUMN)} UInt64", f"{q(DELETED_COLUMN)} UInt8"]
        )
        order_by = ", ".join(q(k) for k in layout.key_columns)
        self._command(f"DROP TABLE IF EXISTS {rekeyed}")
        self._command(
            f"CREATE TABLE {rekeyed} ({definitions})"
            f" ENGINE = ReplacingMergeTree({q(VERSION_COLUMN)}, {q(DELETED_COLUMN)}) ORDER BY ({order_by})"
        )
        self._command(
            f"INSERT INTO {rekeyed} ({columns}) SELECT {columns} FROM {table} FINAL WHERE {q(DELETED_COLUMN)} = 0"
        )
        self._command(f"EXCHANGE TABLES {table} AND {rekeyed}")
        self._command(f"DROP TABLE IF EXISTS {rekeyed}")

    def _replace_view(self, layout: SinkTableLayout) -> None:
        q = self._quote
        self._command(
            f"CREATE OR REPLACE VIEW {self._qualified(layout.table_name + self._view_suffix)} AS"
            f" SELECT {', '.join(q(c) for c in layout.column_names)}"
            f" FROM {self._qualified(layout.table_name)} FINAL WHERE {q(DELETED_COLUMN)} = 0"
        )

    def tombstone_older(self, table_name: str, version: int) -> int:
        state = self.table_state(table_name)
        if state is None:
            return 0
        table = self._qualified(table_name)
        q = self._quote
        data = [q(name) for name, _ in state.columns]
        live = f"{q(DELETED_COLUMN)} = 0 AND {q(VERSION_COLUMN)} < {int(version)}"
        count = int(self._client().query(f"SELECT count() FROM {table} FINAL WHERE {live}").result_rows[0][0])
        if count:
            # A newer version marked deleted: FINAL and the `_current` view then hide the rows.
            self._command(
                f"INSERT INTO {table} ({', '.join([*data, q(VERSION_COLUMN), q(DELETED_COLUMN)])})"
                f" SELECT {', '.join(data)}, toUInt64({int(version)}), toUInt8(1) FROM {table} FINAL WHERE {live}"
            )
        return count

    def _holds_table(self) -> str:
        return self._bookkeeping_table(
            HOLDS_TABLE,
            "(source String, source_table String, held UInt8, reason String, changed_at DateTime64(6, 'UTC')"
            " DEFAULT now64(6)) ENGINE = ReplacingMergeTree(changed_at) ORDER BY (source, source_table)",
        )

    def holds(self, source: str) -> dict[str, str]:
        held = f"SELECT source_table, reason FROM {self._holds_table()} FINAL WHERE source = {{s:String}} AND held = 1"
        rows = self._client().query(held, parameters={"s": source}).result_rows
        return {str(table): str(reason) for table, reason in rows}

    def hold(self, source: str, change: SchemaChange, reason: str) -> None:
        if change.table in self.holds(source):
            return  # the first statement's reason stays
        self._client().insert(
            self._holds_table(),
            [[source, change.table, 1, reason]],
            column_names=["source", "source_table", "held", "reason"],
        )

    def release(self, source: str, source_table: str) -> bool:
        if source_table not in self.holds(source):
            return False
        self._client().insert(
            self._holds_table(),
            [[source, source_table, 0, ""]],
            column_names=["source", "source_table", "held", "reason"],
        )
        return True

    def rename_table(self, old_table_name: str, new_table_name: str) -> bool:
        if self.table_state(old_table_name) is None or self.table_state(new_table_name) is not None:
            return False
        self._command(f"RENAME TABLE {self._qualified(old_table_name)} TO {self._qualified(new_table_name)}")
        self._command(f"DROP VIEW IF EXISTS {self._qualified(old_table_name + self._view_suffix)}")
        return True


def _inner(sink_type: str) -> str:
    return sink_type[len("Nullable(") : -1] if sink_type.startswith("Nullable(") else sink_type


def _string_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
