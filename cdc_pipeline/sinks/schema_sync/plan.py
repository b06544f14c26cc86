"""What a sink must do to one of its tables so that a batch's rows fit it: a pure plan.

The sink table is the record of the shape it last took; the batch brings the shape its rows were
written in (`TableChanges.schema`, mapped to the sink's types) and the source's schema changes
before them. The plan applies the changes in log order (a rename keeps the column's values, an
added column gets the value the source's existing rows took), then, when the batch's shape is the
rows' own (ShapeSource.ROWS) or a re-sync's (SNAPSHOT), makes the table match it: columns added,
dropped, retyped, the key changed. Each step is decided against the table as it stands, so planning the same batch again
after a crash plans only what is still missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind, ShapeSource
from cdc_pipeline.sinks.schema_sync.type_changes import Fit, TypeChange


@dataclass(frozen=True)
class SinkTableState:
    """A sink table's data columns as the sink spells their types, in table order, and its key."""

    columns: tuple[tuple[str, str], ...]
    key_columns: tuple[str, ...]

    def type_of(self, column: str) -> str | None:
        return dict(self.columns).get(column)


@dataclass(frozen=True)
class WantedColumn:
    name: str
    sink_type: str  # as the layout declares it (used in DDL)
    canonical_type: str  # as the sink spells it (compared with SinkTableState)
    overridden: bool = False  # from a type override: retyped whatever the batch's shape


@dataclass(frozen=True)
class RenameColumn:
    old: str
    new: str


@dataclass(frozen=True)
class AddColumn:
    name: str
    sink_type: str
    default: Any  # the source's value for the rows that existed (masked); None with has_default: NULL
    has_default: bool


@dataclass(frozen=True)
class DropColumn:
    name: str


@dataclass(frozen=True)
class ChangeType:
    name: str
    old_type: str
    new_type: str  # as the layout declares it
    checked: bool  # the sink must make sure every stored value fits before (or while) changing


@dataclass(frozen=True)
class ChangeKey:
    key_columns: tuple[str, ...]


@dataclass(frozen=True)
class TombstoneOlder:
    """TRUNCATE / DROP TABLE at the source: every row older than `version` is deleted."""

    version: int


Step = RenameColumn | AddColumn | DropColumn | ChangeType | ChangeKey | TombstoneOlder


@dataclass
class SchemaPlan:
    steps: list[Step] = field(default_factory=list)
    # Why the sink cannot take the batch's shape of the table without losing values (None: it can).
    refusal: str | None = None

    @property
    def changes_columns(self) -> bool:
        return any(not isinstance(step, TombstoneOlder) for step in self.steps)

    def describe(self) -> list[str]:
        return [_describe(step) for step in self.steps]


def _describe(step: Step) -> str:
    if isinstance(step, RenameColumn):
        return f"renamed column {step.old} to {step.new}"
    if isinstance(step, AddColumn):
        return f"added column {step.name} {step.sink_type}" + (" with the source's default" if step.has_default else "")
    if isinstance(step, DropColumn):
        return f"dropped column {step.name}"
    if isinstance(step, ChangeType):
        return f"changed column {step.name} from {step.old_type} to {step.new_type}"
    if isinstance(step, ChangeKey):
        return f"key is now ({', '.join(step.key_columns)})"
    return f"deleted the rows older than version {step.version} (truncated or dropped at the source)"


def plan_table(
    state: SinkTableState,
    wanted: list[WantedColumn],
    wanted_key: tuple[str, ...],
    changes: list[SchemaChange],
    shape: ShapeSource,
    type_change: Callable[[str, str], TypeChange],
) -> SchemaPlan:
    """The steps that take the sink table from `state` to `wanted` (the batch's shape of it)."""
    plan = SchemaPlan()
    columns: dict[str, str] = dict(state.columns)  # the table as the steps so far leave it
    wanted_by_name = {column.name: column for column in wanted}
    # The columns the changes speak of: with a catalog shape, the only ones the plan may touch.
    named: set[str] = set()
    full_diff = shape in (ShapeSource.ROWS, ShapeSource.SNAPSHOT)

    def retype(name: str, column: WantedColumn) -> None:
        current = columns[name]
        if current == column.canonical_type:
            return
        change = type_change(current, column.canonical_type)
        if change.fit is Fit.LOSSY and shape is not ShapeSource.SNAPSHOT:
            plan.refusal = plan.refusal or f"column {name}: {change.why}"
            return
        plan.steps.append(ChangeType(name, current, column.sink_type, change.fit is Fit.CHECKED))
        columns[name] = column.canonical_type

    def add(column: WantedColumn, default: Any = None, has_default: bool = False) -> None:
        plan.steps.append(AddColumn(column.name, column.sink_type, default, has_default))
        columns[column.name] = column.canonical_type

    def rename(old: str, new: str) -> None:
        nonlocal columns
        plan.steps.append(RenameColumn(old, new))
        columns = {new if name == old else name: t for name, t in columns.items()}
        named.add(new)

    def rename_together(pairs: list[tuple[str, str]]) -> None:
        leaving = {old for old, _ in pairs}
        # A new name still held by a column that is renamed away in the same statement: go through
        # temporary names, as one statement's renames do not see each other.
        through_temporary = any(new in leaving or _existing(new, columns) in leaving for _, new in pairs)
        if through_temporary:
            pairs = [(old, f"_cdc_renaming_{i}") for i, (old, _) in enumerate(pairs)] + [
                (f"_cdc_renaming_{i}", new) for i, (_, new) in enumerate(pairs)
            ]
        for old, new in pairs:
            taken = _existing(new, columns)
            if taken is None or taken == old:
                rename(old, new)

    renamed_at: set[str] = set()  # statements whose renames were applied together
    for change in changes:
        kind = change.kind
        if kind in (SchemaChangeKind.TRUNCATE, SchemaChangeKind.DROP_TABLE):
            plan.steps.append(TombstoneOlder(change.version))
        elif kind is SchemaChangeKind.CREATE_TABLE:
            full_diff = True  # a table created anew: whatever the sink kept of an older one goes
        elif change.column is None:
            continue
        elif kind is SchemaChangeKind.RENAME_COLUMN:
            if change.position in renamed_at:
                continue
            renamed_at.add(change.position)
            # One statement's renames happen at once (`CHANGE a b INT, CHANGE b a INT` swaps them).
            together = [c for c in changes if c.kind is kind and c.position == change.position]
            pairs = [(_existing(c.old_name, columns), c.column) for c in together]
            rename_together([(old, new) for old, new in pairs if old is not None and new is not None and old != new])
        elif kind is SchemaChangeKind.DROP_COLUMN:
            existing = _existing(change.column, columns)
            if existing is not None and existing not in wanted_key:
                plan.steps.append(DropColumn(existing))
                del columns[existing]
        elif kind is SchemaChangeKind.ADD_COLUMN:
            if _existing(change.column, columns) is None and change.column in wanted_by_name:
                add(wanted_by_name[change.column], change.default, change.has_default)
                named.add(change.column)
        elif kind is SchemaChangeKind.MODIFY_COLUMN:
            existing = _existing(change.column, columns)
            if existing is not None and existing != change.column:
                # MariaDB's MODIFY spells the column as the statement does (`MODIFY NAME ...` on `Name`).
                rename(existing, change.column)
            named.add(change.column)

    for name in sorted(named & columns.keys() & wanted_by_name.keys()):
        retype(name, wanted_by_name[name])
    # A type override is the operator's fix: it takes effect in every shape (a DLQ replay too), so
    # the values it lets through meet a column of its type.
    for column in wanted:
        if column.overridden and column.name in columns:
            retype(column.name, column)
    if shape is ShapeSource.REPLAY:
        for column in wanted:
            if column.name not in columns:
                add(column)
        return _refused_or(plan)
    if not full_diff:
        return _refused_or(plan)

    missing = [column for column in wanted if column.name not in columns]
    extra = [name for name in columns if name not in wanted_by_name]
    if not changes and len(missing) == 1 and len(extra) == 1:
        # Nothing in the log said what happened (PostgreSQL does not log renames): one column gone
        # and one come, in the same place with the same type, is the same column renamed.
        came, went = missing[0], extra[0]
        same_place = [c.name for c in wanted].index(came.name) == list(columns).index(went)
        if same_place and columns[went] == came.canonical_type:
            plan.steps.append(RenameColumn(went, came.name))
            columns = {came.name if name == went else name: t for name, t in columns.items()}
            missing, extra = [], []
    for name in extra:
        plan.steps.append(DropColumn(name))
        del columns[name]
    for column in missing:
        add(column)
    for column in wanted:
        retype(column.name, column)
    if tuple(state.key_columns) != tuple(wanted_key):
        plan.steps.append(ChangeKey(tuple(wanted_key)))
    return _refused_or(plan)


def _existing(name: str | None, columns: dict[str, str]) -> str | None:
    """The sink column a statement's `name` refers to: the same name, else the one column that
    differs only in case. MySQL column names ignore case (`DROP COLUMN name` drops `Name`), and only
    MySQL's DDL statements name columns here (the other sources' changes carry the catalog's names)."""
    if name is None or name in columns:
        return name
    matches = [column for column in columns if column.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _refused_or(plan: SchemaPlan) -> SchemaPlan:
    """A table the sink cannot take changes nothing: its rows wait in the DLQ for the operator's fix."""
    if plan.refusal is not None:
        plan.steps = []
    return plan
