"""Bringing a sink's tables to the shape of a batch's rows before the rows are written.

Each sink offers a `TableShaper` (how it reads a table's columns and applies a plan's steps); this
module decides per table what to do: plan against the table as it stands (plan.py), apply, and when
the sink cannot take the change without losing values, refuse the table: its rows of the batch go
to the DLQ (stage "schema", the reason in the error) and nothing of its sink table changes, while the other
tables are written as usual. The refusal repeats with every batch until an operator's fix (a type
override, or a re-sync) makes the plan safe; the DLQ replay then writes the held rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cdc_pipeline.core.changes import Rejection
from cdc_pipeline.core.schema_changes import (
    SCHEMA_STAGE,
    SchemaChange,
    SchemaChangeKind,
    ShapeSource,
    unrecognised_reason,
)
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.mapping.mapper import MappedBatch, MappedTable
from cdc_pipeline.mapping.sink_types import SinkTableLayout
from cdc_pipeline.sinks.schema_sync.plan import SchemaPlan, SinkTableState, WantedColumn, plan_table
from cdc_pipeline.sinks.schema_sync.type_changes import TypeChange


class SchemaChangeRefused(Exception):
    """The sink refused a planned step (e.g. a checked type change found a value that does not fit)."""


def name_conflict_reason(schema: str, table: str, view: str, kinds: dict[str, bool]) -> str | None:
    """Why `table` (with its view `view`) cannot be created beside the relations `kinds` names
    (name -> whether it is a view), or None. A table `x_current` and the view of a table `x` would
    be one relation: whichever comes second waits, naming the other."""
    if kinds.get(table) is True:
        return (
            f"its sink table name {schema}.{table} is already the view of another sink table;"
            " leave one of the two source tables out"
        )
    if kinds.get(view) is False:
        return (
            f"its view {schema}.{view} would take the name of another sink table;"
            " leave one of the two source tables out"
        )
    return None


# Which source table each sink table holds: `<database>__<table>` is not unique (`p`.`a__b` and
# `p__a`.`b`, or two sources with the same table), and two tables in one sink table overwrite
# each other's rows. The first to claim a name keeps it; the other waits, naming the first.
OWNERS_TABLE = "_cdc_table_owners"


def owner_conflict_reason(table_name: str, owner: tuple[str, str]) -> str:
    source, source_table = owner
    return (
        f"its sink table name {table_name} already holds table {source_table} of source '{source}';"
        " two source tables cannot share a sink table: leave one of them out of its source's tables"
    )


def table_name_conflict(shaper: TableShaper, table_name: str, source: str, source_table: str) -> str | None:
    """Why the source table cannot have its sink table name (its view's name is taken, or another
    source table holds it), else None: the name is then the table's."""
    conflict = shaper.name_conflict(table_name)
    if conflict is not None:
        return conflict
    owner = shaper.claim(table_name, source, source_table)
    return None if owner == (source, source_table) else owner_conflict_reason(table_name, owner)


class TableShaper(Protocol):
    """What a sink offers the schema sync for its row tables."""

    def claim(self, table_name: str, source: str, source_table: str) -> tuple[str, str]:
        """Claim the sink table name for (source, source_table) unless another claimed it first;
        returns the owner, (source, source_table) of the first claim."""
        ...

    def name_conflict(self, table_name: str) -> str | None:
        """Why the table's name, or its view's, belongs to another relation of the sink, else None."""
        ...

    def table_state(self, table_name: str) -> SinkTableState | None:
        """The table's data columns and key, or None when it does not exist yet."""
        ...

    def canonical_types(self, sink_types: list[str]) -> list[str]:
        """The layout's types as the sink spells them in its catalog (compared with table_state)."""
        ...

    def type_change(self, old: str, new: str) -> TypeChange: ...

    def apply(self, layout: SinkTableLayout, plan: SchemaPlan) -> None:
        """Apply the plan's steps; raise SchemaChangeRefused (having changed nothing) when a checked
        step finds values that do not fit."""
        ...

    def tombstone_older(self, table_name: str, version: int) -> int:
        """Mark deleted every live row older than `version` (TRUNCATE / DROP TABLE at the source)."""
        ...

    def rename_table(self, old_table_name: str, new_table_name: str) -> bool:
        """Rename a sink table when the old exists and the new does not; True when it did."""
        ...

    def holds(self, source: str) -> dict[str, str]:
        """Tables of `source` held by a DDL statement the pipeline could not read, and why."""
        ...

    def hold(self, source: str, change: SchemaChange, reason: str) -> None:
        """Hold a table from this change on (kept by the sink with its checkpoint; released by the replay)."""
        ...


@dataclass
class SchemaSyncResult:
    applied: dict[str, list[str]] = field(default_factory=dict)  # source table -> what was done
    refused: dict[str, str] = field(default_factory=dict)  # source table -> why
    # Sink tables whose shape changed (the sink drops what it cached about them) or that were
    # renamed away from (the old name may be created anew).
    reshaped: set[str] = field(default_factory=set)
    rejections: list[Rejection] = field(default_factory=list)  # the refused tables' rows


class SchemaSync:
    """Per sink: remembers the layouts already in force, so a batch without schema changes costs nothing."""

    def __init__(self, sink_name: str) -> None:
        self._sink_name = sink_name
        self._in_force: set[tuple[str, ...]] = set()

    def forget(self) -> None:
        """Drop what is known to be in force (a rolled-back transaction may have undone it)."""
        self._in_force.clear()

    def sync_batch(
        self,
        shaper: TableShaper,
        batch: MappedBatch,
        floor: int,
        ensure_table: Callable[[SinkTableLayout], None],
    ) -> SchemaSyncResult:
        """Apply the batch's schema changes (those at or above `floor`, the sink's checkpoint) and
        shape every row table of the batch. The batch is not changed (a retry syncs it again): the
        refused tables' rows are the result's rejections, and the caller leaves those tables out."""
        result = SchemaSyncResult()
        changes = [change for change in batch.schema_changes if change.version >= floor]
        for change in changes:
            if change.kind is SchemaChangeKind.UNRECOGNISED and change.table:
                shaper.hold(batch.source, change, unrecognised_reason(change))
        held = shaper.holds(batch.source)
        by_table: dict[str, list[SchemaChange]] = {}
        for change in changes:
            by_table.setdefault(change.table, []).append(change)
        for change in changes:
            if change.kind is SchemaChangeKind.RENAME_TABLE and change.old_name is not None:
                if shaper.rename_table(sink_table_name(change.old_name), sink_table_name(change.table)):
                    shaper.claim(sink_table_name(change.table), batch.source, change.table)
                    result.applied.setdefault(change.table, []).append(f"renamed from {change.old_name}")
                    result.reshaped.update({sink_table_name(change.old_name), sink_table_name(change.table)})
                    self.forget()
        for qualified, table_changes in by_table.items():
            if qualified in held:
                continue
            if qualified not in batch.tables and qualified not in batch.refused_tables:
                # No rows (and no shape) of the table in this batch: only what needs no columns.
                self._tombstones(shaper, sink_table_name(qualified), table_changes, qualified, result)
        for qualified in list(batch.tables):
            table = batch.tables[qualified]
            if table.layout.cell_schema is not None:
                continue  # Cassandra's cell tables follow their schema in their own writers
            refusal = held.get(qualified) or self._shape(
                shaper, batch.source, table, by_table.get(qualified, []), ensure_table, result
            )
            if refusal is None:
                continue
            result.refused[qualified] = refusal
            reason = f"{self._sink_name}: schema change not applied, table held: {refusal}"
            result.rejections.extend(
                Rejection.of_change(SCHEMA_STAGE, qualified, change, reason, self._sink_name)
                for change in table.changes
                if change.version >= floor  # rows under the checkpoint are in the sink already
            )
        return result

    def _shape(
        self,
        shaper: TableShaper,
        source: str,
        table: MappedTable,
        changes: list[SchemaChange],
        ensure_table: Callable[[SinkTableLayout], None],
        result: SchemaSyncResult,
    ) -> str | None:
        layout = table.layout
        qualified = layout.source_table
        in_force = (source, *layout.ddl_signature)
        if not changes and in_force in self._in_force:
            return None
        conflict = table_name_conflict(shaper, layout.table_name, source, qualified)
        if conflict is not None:
            return conflict  # this table waits (its rows in the DLQ); the others go on
        state = shaper.table_state(layout.table_name)
        if state is None:
            ensure_table(layout)
            self._tombstones(shaper, layout.table_name, changes, qualified, result)
            self._in_force.add(in_force)
            return None
        canonical = shaper.canonical_types([column.sink_type for column in layout.columns])
        wanted = [
            WantedColumn(column.name, column.sink_type, spelled, column.overridden)
            for column, spelled in zip(layout.columns, canonical, strict=True)
        ]
        plan = plan_table(state, wanted, layout.key_columns, changes, table.shape_source, shaper.type_change)
        if plan.refusal is not None:
            return plan.refusal
        if plan.steps:
            try:
                shaper.apply(layout, plan)
            except SchemaChangeRefused as error:
                return str(error)
            result.applied.setdefault(qualified, []).extend(plan.describe())
            result.reshaped.add(layout.table_name)  # the shaper made the `_current` view anew
        if table.shape_source in (ShapeSource.ROWS, ShapeSource.SNAPSHOT) or not plan.changes_columns:
            self._in_force.add(in_force)
        return None

    def _tombstones(
        self,
        shaper: TableShaper,
        table_name: str,
        changes: list[SchemaChange],
        qualified: str,
        result: SchemaSyncResult,
    ) -> None:
        for change in changes:
            if change.kind in (SchemaChangeKind.TRUNCATE, SchemaChangeKind.DROP_TABLE):
                result.reshaped.add(table_name)
                removed = shaper.tombstone_older(table_name, change.version)
                result.applied.setdefault(qualified, []).append(f"{change.kind.value}: {removed} row(s) deleted")
