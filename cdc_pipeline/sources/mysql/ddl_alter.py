"""A parsed ALTER TABLE read into schema changes, action by action.

MySQL applies a statement's actions at once, so the actions are read together: a later action on
a column the statement adds decides what the existing rows hold in it, the key change goes where
its columns exist, and an action that cannot be read makes the whole table's change UNRECOGNISED.
Split from ddl_reader.py, which hands ALTER TABLE statements here, because ALTER is by far the
largest of the statements it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp

from cdc_pipeline.core.schema import qualify
from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind
from cdc_pipeline.sources.mysql.ddl_columns import Unknowable, added_column, in_primary_key, modified_column, name_of

if TYPE_CHECKING:
    from cdc_pipeline.sources.mysql.ddl_reader import Reader


# Actions of an ALTER TABLE that change neither the columns, the key nor the rows the sinks hold.
_NO_EFFECT_ACTIONS = (exp.RenameIndex, exp.AlterIndex, exp.ForceProperty)
_NO_EFFECT_CONSTRAINTS = (
    exp.IndexColumnConstraint,
    exp.UniqueColumnConstraint,
    exp.ForeignKey,
    exp.CheckColumnConstraint,
)
_NO_EFFECT_DROPS = frozenset({"INDEX", "KEY", "FOREIGN KEY", "CHECK", "CONSTRAINT"})


@dataclass
class _AlterResult:
    changes: list[SchemaChange] = field(default_factory=list)
    unrecognised_column: str | None = None
    unrecognised: bool = False
    rename_to: tuple[str, str] | None = None


def read_alter(reader: Reader, alter: exp.Alter) -> list[SchemaChange] | None:
    name = reader.name(alter.this)
    if name is None:
        return None
    table = qualify(*name)
    result = _alter_actions(reader, table, alter.args.get("actions") or [])
    for option in alter.args.get("options") or []:
        # Table options (ENGINE, COMMENT, ROW_FORMAT, AUTO_INCREMENT, CHARSET, KEY_BLOCK_SIZE, ...),
        # ALGORITHM, LOCK and ORDER BY change nothing the sinks hold.
        if not isinstance(option, exp.Property | exp.Order):
            result.unrecognised = True
    selected = reader.selected(name)
    changes: list[SchemaChange] = []
    if result.unrecognised:
        if selected:
            changes.append(reader.change(table, SchemaChangeKind.UNRECOGNISED, column=result.unrecognised_column))
        if result.rename_to is not None and reader.selected(result.rename_to) and result.rename_to != name:
            changes.append(reader.change(qualify(*result.rename_to), SchemaChangeKind.UNRECOGNISED))
        return changes
    if selected:
        changes.extend(result.changes)
    if result.rename_to is not None and result.rename_to != name:
        changes.extend(reader.rename_tables([(name, result.rename_to)]))
    elif selected and not changes:
        changes.append(reader.change(table, SchemaChangeKind.NO_EFFECT))
    return changes


def _alter_actions(reader: Reader, table: str, actions: list[exp.Expr]) -> _AlterResult:
    result = _AlterResult()
    changes = result.changes
    new_key: tuple[str, ...] | None = None
    key_slot = 0  # the key change goes after the last key action, where its columns exist

    def set_key(columns: tuple[str, ...]) -> None:
        nonlocal new_key, key_slot
        new_key, key_slot = columns, len(changes)

    # Columns this statement adds (lower-case name -> index of their ADD change, definition so
    # far): MySQL applies a statement's clauses at once, so a later clause on an added column
    # (SET/DROP DEFAULT, MODIFY, CHANGE) decides what the existing rows hold in it.
    added: dict[str, tuple[int, exp.ColumnDef]] = {}

    def define_added(index: int | None, coldef: exp.ColumnDef) -> bool:
        """Record (or redo) an added column's ADD change from its definition; False: unknowable."""
        try:
            has_default, default, in_key = added_column(coldef)
        except Unknowable:
            result.unrecognised, result.unrecognised_column = True, coldef.name
            return False
        change = reader.change(
            table, SchemaChangeKind.ADD_COLUMN, column=coldef.name, default=default, has_default=has_default
        )
        if index is None:
            index = len(changes)
            changes.append(change)
        else:
            changes[index] = change
        added[coldef.name.lower()] = (index, coldef)
        if in_key:
            set_key((coldef.name,))
        return True

    for action in actions:
        if isinstance(action, exp.ColumnDef):
            if not define_added(None, action):
                return result
        elif isinstance(action, exp.ModifyColumn) and modified_column(action) in added:
            # MODIFY/CHANGE of a column this statement adds: its final definition is the added one.
            index, _ = added.pop(modified_column(action) or "")
            if not define_added(index, action.this):
                return result
        elif isinstance(action, exp.AlterColumn) and action.name.lower() in added and action.args.get("dtype") is None:
            index, coldef = added[action.name.lower()]
            kept = [
                c
                for c in coldef.args.get("constraints") or []
                if not isinstance(c.args.get("kind"), exp.DefaultColumnConstraint)
            ]
            if action.args.get("default") is not None:  # SET DEFAULT x; else DROP DEFAULT
                kept.append(exp.ColumnConstraint(kind=exp.DefaultColumnConstraint(this=action.args["default"])))
            redefined = coldef.copy()
            redefined.set("constraints", kept)
            if not define_added(index, redefined):
                return result
        elif isinstance(action, exp.ModifyColumn) and isinstance(action.this, exp.ColumnDef):
            column = action.this.name
            old = action.args.get("rename_from")
            if isinstance(old, exp.Identifier) and old.name != column:
                changes.append(reader.change(table, SchemaChangeKind.RENAME_COLUMN, column=column, old_name=old.name))
            changes.append(reader.change(table, SchemaChangeKind.MODIFY_COLUMN, column=column))
            if in_primary_key(action.this):
                set_key((column,))
        elif isinstance(action, exp.RenameColumn):
            old_name, new_name = name_of(action.this), name_of(action.args.get("to"))
            if old_name is None or new_name is None:
                result.unrecognised = True
                return result
            changes.append(reader.change(table, SchemaChangeKind.RENAME_COLUMN, column=new_name, old_name=old_name))
        elif isinstance(action, exp.Drop):
            kind = str(action.args.get("kind") or "").upper()
            dropped = [t.name for t in action.args.get("tables") or []]
            if kind == "COLUMN":
                changes.extend(reader.change(table, SchemaChangeKind.DROP_COLUMN, column=c) for c in dropped)
            elif kind in ("INDEX", "KEY", "CONSTRAINT") and [d.upper() for d in dropped] == ["PRIMARY"]:
                set_key(new_key or ())  # the primary key's index is named PRIMARY
            elif kind not in _NO_EFFECT_DROPS:
                result.unrecognised = True
                return result
        elif isinstance(action, exp.DropPrimaryKey):
            set_key(new_key or ())
        elif isinstance(action, exp.AddConstraint):
            for constraint in action.expressions:
                inner = constraint.expressions if isinstance(constraint, exp.Constraint) else [constraint]
                for part in inner:
                    if isinstance(part, exp.PrimaryKey):
                        columns = [name_of(c) for c in part.expressions]
                        if None in columns or not columns:
                            result.unrecognised = True
                            return result
                        set_key(tuple(c for c in columns if c is not None))
                    elif not isinstance(part, _NO_EFFECT_CONSTRAINTS):
                        result.unrecognised = True
                        return result
        elif isinstance(action, exp.AlterColumn):
            if action.args.get("dtype") is not None:
                changes.append(reader.change(table, SchemaChangeKind.MODIFY_COLUMN, column=action.name))
            # SET/DROP DEFAULT, SET VISIBLE/INVISIBLE: the existing rows keep their values.
        elif isinstance(action, exp.AlterRename):
            target = reader.name(action.this)
            if target is None:
                result.unrecognised = True
                return result
            result.rename_to = target
        elif not isinstance(action, _NO_EFFECT_ACTIONS):
            result.unrecognised = True
            return result
    if new_key is not None:
        changes.insert(key_slot, reader.change(table, SchemaChangeKind.PRIMARY_KEY, key_columns=new_key))
    return result
