"""Schema changes on PostgreSQL / TimescaleDB sink tables, inside the batch's transaction.

The ALTERs commit with the batch's rows and its checkpoint, or not at all: a crash leaves the table
in the shape of the last checkpoint. A checked type change is simply tried (PostgreSQL's cast
raises on a value that does not fit) inside a savepoint; the error refuses the table and the
savepoint undoes it. The `_current` view depends on the columns, so it is dropped first and made
again after the steps.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql

from cdc_pipeline.core.schema_changes import SchemaChange
from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, VERSION_COLUMN, SinkTableLayout
from cdc_pipeline.sinks.postgres import names as postgres_names
from cdc_pipeline.sinks.postgres.type_changes import postgres_type_change
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
# Tables held by a DDL statement the pipeline could not read: kept with the checkpoint (same
# transaction), released by the DLQ replay once the operator marked the statement safe.
HOLDS_TABLE = "_cdc_schema_holds"


class PostgresShaper:
    def __init__(self, cursor: psycopg2.extensions.cursor, schema: str, view_suffix: str) -> None:
        self._cursor = cursor
        self._schema = schema
        self._view_suffix = view_suffix

    def _table(self, table_name: str) -> sql.Composed:
        return postgres_names.relation(self._schema, table_name)

    def claim(self, table_name: str, source: str, source_table: str) -> tuple[str, str]:
        # In the batch's transaction: a concurrent claim of the same name waits for it, then loses.
        self._cursor.execute(
            sql.SQL(
                "INSERT INTO {} (sink_table, source, source_table) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(self._table(OWNERS_TABLE)),
            (table_name, source, source_table),
        )
        self._cursor.execute(
            sql.SQL("SELECT source, source_table FROM {} WHERE sink_table = %s").format(self._table(OWNERS_TABLE)),
            (table_name,),
        )
        owner, owned = self._cursor.fetchone()
        return str(owner), str(owned)

    def name_conflict(self, table_name: str) -> str | None:
        table, view = postgres_names.fit(table_name), postgres_names.fit(table_name + self._view_suffix)
        self._cursor.execute(
            "SELECT c.relname, c.relkind = 'v' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname IN (%s, %s)",
            (self._schema, table, view),
        )
        kinds = {str(name): bool(is_view) for name, is_view in self._cursor.fetchall()}
        return name_conflict_reason(self._schema, table, view, kinds)

    def table_state(self, table_name: str) -> SinkTableState | None:
        cursor = self._cursor
        cursor.execute("SELECT to_regclass(%s)", (self._table(table_name).as_string(cursor),))
        relation = cursor.fetchone()[0]
        if relation is None:
            return None
        cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (relation,),
        )
        columns = tuple((str(n), str(t)) for n, t in cursor.fetchall() if n not in _BOOKKEEPING)
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (relation,),
        )
        return SinkTableState(columns, tuple(str(r[0]) for r in cursor.fetchall()))

    def canonical_types(self, sink_types: list[str]) -> list[str]:
        """format_type() spelling of each type: a throwaway temporary table declares them."""
        cursor = self._cursor
        cursor.execute("SAVEPOINT cdc_types")
        try:
            cursor.execute(
                sql.SQL("CREATE TEMP TABLE _cdc_type_spelling ({})").format(
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(f"c{i}"), sql.SQL(t)) for i, t in enumerate(sink_types)
                    )
                )
            )
            cursor.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = '_cdc_type_spelling'::regclass AND attnum > 0 ORDER BY attnum"
            )
            spelled = [str(row[0]) for row in cursor.fetchall()]
        finally:
            cursor.execute("ROLLBACK TO SAVEPOINT cdc_types")
        return spelled

    def type_change(self, old: str, new: str) -> TypeChange:
        return postgres_type_change(old, new)

    def apply(self, layout: SinkTableLayout, plan: SchemaPlan) -> None:
        cursor = self._cursor
        table = self._table(layout.table_name)
        view = self._table(layout.table_name + self._view_suffix)
        cursor.execute("SAVEPOINT cdc_schema")
        try:
            cursor.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
            for step in plan.steps:
                self._apply_step(table, layout, step)
            cursor.execute(
                sql.SQL("CREATE VIEW {} AS SELECT {} FROM {} WHERE NOT {}").format(
                    view,
                    sql.SQL(", ").join(map(sql.Identifier, layout.column_names)),
                    table,
                    sql.Identifier(DELETED_COLUMN),
                )
            )
        except (
            psycopg2.DataError,
            psycopg2.IntegrityError,
            psycopg2.ProgrammingError,
            psycopg2.NotSupportedError,
        ) as error:
            # A value that does not fit, or a change PostgreSQL cannot make (e.g. no cast between
            # the types): the savepoint undoes every step, the table is held with the reason.
            cursor.execute("ROLLBACK TO SAVEPOINT cdc_schema")
            raise SchemaChangeRefused(
                f"{str(error).strip().splitlines()[0]}; the table keeps its shape. Override the column's type"
                " (type_overrides) or re-sync the table"
            ) from None
        cursor.execute("RELEASE SAVEPOINT cdc_schema")

    def _apply_step(
        self,
        table: sql.Composed,
        layout: SinkTableLayout,
        step: RenameColumn | AddColumn | DropColumn | ChangeType | ChangeKey | TombstoneOlder,
    ) -> None:
        cursor = self._cursor
        if isinstance(step, RenameColumn):
            cursor.execute(
                sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                    table, sql.Identifier(step.old), sql.Identifier(step.new)
                )
            )
        elif isinstance(step, AddColumn):
            column = sql.Identifier(step.name)
            if step.has_default and step.default is not None:
                # The rows that existed take the source's default; later rows always carry a value.
                cursor.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {} DEFAULT {}").format(
                        table, column, sql.SQL(step.sink_type), sql.Literal(str(step.default))
                    )
                )
                cursor.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(table, column))
            else:
                cursor.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(table, column, sql.SQL(step.sink_type))
                )
        elif isinstance(step, DropColumn):
            cursor.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table, sql.Identifier(step.name)))
        elif isinstance(step, ChangeType):
            column = sql.Identifier(step.name)
            change = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(table, column, sql.SQL(step.new_type))
            if _is_textual(step.old_type) and not _is_textual(step.new_type):
                # Text has no assignment cast to other types; the explicit one raises on text that
                # is not a value of the type. Between text types the implicit (assignment) cast is
                # kept: it raises on a value too long, where an explicit cast would cut it short.
                change = sql.SQL("{} USING {}::{}").format(change, column, sql.SQL(step.new_type))
            cursor.execute(change)
        elif isinstance(step, ChangeKey):
            self._rekey(table, layout, step.key_columns)
        else:
            self.tombstone_older(layout.table_name, step.version)

    def _rekey(self, table: sql.Composed, layout: SinkTableLayout, key_columns: tuple[str, ...]) -> None:
        """Tombstones of the old key mean nothing under the new one (and may collide): they go."""
        cursor = self._cursor
        cursor.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, sql.Identifier(DELETED_COLUMN)))
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            (table.as_string(cursor),),
        )
        for (name,) in cursor.fetchall():
            cursor.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(name)))
        for column in key_columns:
            cursor.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(table, sql.Identifier(column)))
        cursor.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                table, sql.SQL(", ").join(map(sql.Identifier, key_columns))
            )
        )

    def tombstone_older(self, table_name: str, version: int) -> int:
        cursor = self._cursor
        table = self._table(table_name)
        cursor.execute("SELECT to_regclass(%s)", (table.as_string(cursor),))
        if cursor.fetchone()[0] is None:
            return 0
        cursor.execute(
            sql.SQL("UPDATE {} SET {} = true, {} = %s WHERE NOT {} AND {} < %s").format(
                table,
                sql.Identifier(DELETED_COLUMN),
                sql.Identifier(VERSION_COLUMN),
                sql.Identifier(DELETED_COLUMN),
                sql.Identifier(VERSION_COLUMN),
            ),
            (version, version),
        )
        return int(cursor.rowcount)

    def holds(self, source: str) -> dict[str, str]:
        self._cursor.execute(
            sql.SQL("SELECT source_table, reason FROM {} WHERE source = %s").format(self._table(HOLDS_TABLE)),
            (source,),
        )
        return {str(table): str(reason) for table, reason in self._cursor.fetchall()}

    def hold(self, source: str, change: SchemaChange, reason: str) -> None:
        self._cursor.execute(
            sql.SQL(
                "INSERT INTO {} (source, source_table, position, version, reason) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (source, source_table) DO NOTHING"
            ).format(self._table(HOLDS_TABLE)),
            (source, change.table, change.position, change.version, reason),
        )

    def rename_table(self, old_table_name: str, new_table_name: str) -> bool:
        cursor = self._cursor
        if self.table_state(old_table_name) is None or self.table_state(new_table_name) is not None:
            return False
        cursor.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(self._table(old_table_name + self._view_suffix)))
        cursor.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                self._table(old_table_name), sql.Identifier(postgres_names.fit(new_table_name))
            )
        )
        return True


def _is_textual(sink_type: str) -> bool:
    return sink_type == "text" or sink_type.startswith(("character", "varchar", "char"))
