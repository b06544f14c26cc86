"""The schema changes of one DDL statement, built from what sqlglot or the tokenizer read.

A Reader holds what every change of the statement shares (its position, the schema version, the
statement without literals) and which tables are replicated. It turns a parsed CREATE, DROP,
TRUNCATE or index statement into changes (ALTER TABLE: ddl_alter.py), works out the net effect of
a sequence of renames, and reads the statements sqlglot could not parse from their tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from cdc_pipeline.core.schema import qualify
from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind
from cdc_pipeline.sources.mysql.ddl_alter import read_alter
from cdc_pipeline.sources.mysql.ddl_targets import Object, object_of, read_name, skip_if_exists
from cdc_pipeline.sources.mysql.ddl_tokens import Token

Selects = Callable[[str, str], bool]


@dataclass(frozen=True)
class Reader:
    statement: str
    default_database: str
    position: str
    version: int
    selects: Selects

    def change(
        self,
        table: str,
        kind: SchemaChangeKind,
        column: str | None = None,
        old_name: str | None = None,
        default: str | None = None,
        has_default: bool = False,
        key_columns: tuple[str, ...] = (),
    ) -> SchemaChange:
        return SchemaChange(
            table,
            kind,
            self.position,
            self.version,
            self.statement,
            column,
            old_name,
            default,
            has_default,
            key_columns,
        )

    def name(self, table: exp.Table) -> tuple[str, str] | None:
        if not isinstance(table, exp.Table) or table.args.get("catalog") is not None or not table.name:
            return None
        return (table.db or self.default_database, table.name)

    def selected(self, name: tuple[str, str]) -> bool:
        return self.selects(*name)

    # Statements sqlglot read.

    def parsed(self, expression: exp.Expr | None) -> list[SchemaChange] | None:
        """The changes of a statement sqlglot read, or None to fall back to the tokenizer."""
        kind = str(expression.args.get("kind") or "").upper() if expression is not None else ""
        if isinstance(expression, exp.Alter) and kind == "TABLE":
            return read_alter(self, expression)
        if isinstance(expression, exp.Create) and kind == "TABLE":
            return self.create_table(expression)
        if isinstance(expression, exp.Create) and kind == "INDEX":
            index = expression.this
            return self.no_effect(index.args.get("table") if isinstance(index, exp.Index) else None)
        if isinstance(expression, exp.Drop) and kind == "TABLE":
            tables = expression.args.get("tables") or []
            return self.each_table(tables, SchemaChangeKind.DROP_TABLE, expression.args.get("temporary"))
        if isinstance(expression, exp.Drop) and kind == "INDEX":
            on = expression.args.get("cluster")
            table = on.this if isinstance(on, exp.OnProperty) else None
            dropped = [t.name.upper() for t in expression.args.get("tables") or [] if isinstance(t, exp.Table)]
            if dropped == ["PRIMARY"]:
                return self.primary_key_dropped(table)
            return self.no_effect(table)
        if isinstance(expression, exp.TruncateTable):
            return self.each_table(expression.expressions, SchemaChangeKind.TRUNCATE, False)
        return None

    def each_table(
        self, tables: list[exp.Expr], kind: SchemaChangeKind, temporary: object
    ) -> list[SchemaChange] | None:
        if temporary:
            return []  # a temporary table is the session's own: never replicated
        changes: list[SchemaChange] = []
        for table in tables:
            name = self.name(table) if isinstance(table, exp.Table) else None
            if name is None:
                return None
            if self.selected(name):
                changes.append(self.change(qualify(*name), kind))
        return changes

    def primary_key_dropped(self, table: object) -> list[SchemaChange] | None:
        """`DROP INDEX `PRIMARY` ON t`: the primary key's index is named PRIMARY; the key is gone."""
        name = self.name(table) if isinstance(table, exp.Table) else None
        if name is None:
            return None
        if not self.selected(name):
            return []
        return [self.change(qualify(*name), SchemaChangeKind.PRIMARY_KEY, key_columns=())]

    def no_effect(self, table: object) -> list[SchemaChange] | None:
        name = self.name(table) if isinstance(table, exp.Table) else None
        if name is None:
            return None
        return [self.change(qualify(*name), SchemaChangeKind.NO_EFFECT)] if self.selected(name) else []

    def create_table(self, create: exp.Create) -> list[SchemaChange] | None:
        target = create.this.this if isinstance(create.this, exp.Schema) else create.this
        name = self.name(target) if isinstance(target, exp.Table) else None
        if name is None:
            return None
        properties = create.args.get("properties")
        if properties is not None and any(isinstance(p, exp.TemporaryProperty) for p in properties.expressions):
            return []
        if not self.selected(name):
            return []
        table = qualify(*name)
        created = self.change(table, SchemaChangeKind.CREATE_TABLE)
        if create.args.get("replace"):
            # MariaDB's CREATE OR REPLACE drops the table it replaces: its rows go with it.
            return [self.change(table, SchemaChangeKind.DROP_TABLE), created]
        return [created]

    # RENAME TABLE, and ALTER TABLE ... RENAME.

    def rename_tables(self, pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> list[SchemaChange]:
        """The changes a sequence of renames makes to the sink's tables, on its net effect.

        The sink holds a table for each selected name. A rename between selected names renames the
        sink's table; from a selected name to an unselected one the table leaves the replicated set
        (DROP_TABLE, unless it comes back in the same statement); from an unselected name to a
        selected one a table the sink never saw arrives (CREATE_TABLE).

        Online schema change tools (gh-ost, pt-online-schema-change) build a copy `_t_gho`/`_t_new`
        in the new shape, keep it in step with `t`, and swap it in with
        `RENAME TABLE t TO _t_del, _t_gho TO t`. Read pair by pair that would drop the sink's table and
        create an empty one, losing every row. On the net effect the selected name `t` is taken
        from its table and given to a copy in the same statement: the sink keeps its table (NO_EFFECT).
        Its rows are still right, because the copy holds the same rows with the same keys: the tool
        copied them and kept the copy in step until the swap. The copy's shape arrives with its next
        rows, which change the sink table as rows in a new shape always do.
        """
        # Where each table named in the statement now is: its current name -> the sink table that
        # holds its rows (None: the sink holds none). A name not yet seen still holds its original.
        holder: dict[tuple[str, str], tuple[str, str] | None] = {}
        seen: set[tuple[str, str]] = set()
        changes: list[SchemaChange] = []
        conflict = False

        def sink_table_of(name: tuple[str, str]) -> tuple[str, str] | None:
            if name in holder:
                return holder.pop(name)
            return name if name not in seen and self.selected(name) else None

        for old, new in pairs:
            sink_table = sink_table_of(old)
            seen.update((old, new))
            if not self.selected(new):
                holder[new] = sink_table  # if it has a sink table, that table is parked under its old name
                continue
            # Which table, now at an unselected name, still has its rows in the sink table `new`.
            parked = next((name for name, held in holder.items() if held == new and name != new), None)
            if sink_table == new:
                changes.append(self.change(qualify(*new), SchemaChangeKind.NO_EFFECT))  # back where it was
            elif sink_table is None and parked is not None:
                holder[parked] = None  # the copy takes over the sink table (see the docstring)
                changes.append(self.change(qualify(*new), SchemaChangeKind.NO_EFFECT))
            elif sink_table is None:
                changes.append(self.change(qualify(*new), SchemaChangeKind.CREATE_TABLE))
            elif parked is not None:
                # Two replicated tables swapped through a spare name: no order of renames the sink can
                # apply one by one expresses it without the spare name. Left to the operator.
                conflict = True
            else:
                changes.append(self.change(qualify(*new), SchemaChangeKind.RENAME_TABLE, old_name=qualify(*sink_table)))
            holder[new] = new
        if conflict:
            named = dict.fromkeys(name for pair in pairs for name in pair if self.selected(name))
            return [self.change(qualify(*name), SchemaChangeKind.UNRECOGNISED) for name in named]
        for name, sink_table in holder.items():
            if sink_table is not None and not self.selected(name):
                changes.append(self.change(qualify(*sink_table), SchemaChangeKind.DROP_TABLE))
        return changes

    # Statements sqlglot could not read.

    def fallback(self, tokens: list[Token]) -> list[SchemaChange]:
        """UNRECOGNISED for each selected table a statement sqlglot could not read names.

        Two kinds of statement sqlglot 30 does not read are understood here: a CREATE/DROP INDEX
        (with FULLTEXT/SPATIAL or ALGORITHM/LOCK clauses) changes only an index; `ALTER TABLE t`
        alone or with ENABLE/DISABLE KEYS (mysqldump's wrapper around its INSERTs) changes nothing.
        """
        verb = tokens[0].upper
        if object_of(tokens) is Object.INDEX:
            on = next((i for i, t in enumerate(tokens) if t.upper == "ON"), None)
            read = read_name(tokens, on + 1, self.default_database) if on is not None else None
            if read is None:
                return [self.change("", SchemaChangeKind.UNRECOGNISED)]
            if not self.selected(read[0]):
                return []
            if verb == "DROP" and on is not None and [t.text.upper() for t in tokens[on - 1 : on]] == ["PRIMARY"]:
                # DROP INDEX `PRIMARY` ON t (with ALGORITHM/LOCK): the primary key is gone.
                return [self.change(qualify(*read[0]), SchemaChangeKind.PRIMARY_KEY, key_columns=())]
            return [self.change(qualify(*read[0]), SchemaChangeKind.NO_EFFECT)]
        names = self.fallback_names(tokens)
        if names is None:
            return [self.change("", SchemaChangeKind.UNRECOGNISED)]
        rest = names[1]
        if verb == "CREATE":
            # A table created anew (a column type or an option sqlglot does not know): its body never
            # matters to the sinks, the rows bring their shape. CREATE OR REPLACE drops the old rows.
            replaced = any(t.upper == "REPLACE" for t in tokens[1:3])
            kinds = [SchemaChangeKind.DROP_TABLE] if replaced else []
            return [
                self.change(qualify(*n), kind)
                for n in dict.fromkeys(names[0])
                if self.selected(n)
                for kind in [*kinds, SchemaChangeKind.CREATE_TABLE]
            ]
        kind = SchemaChangeKind.UNRECOGNISED
        if (
            verb == "ALTER"
            and len(names[0]) == 1
            and [t.upper for t in tokens[rest:]] in ([], ["ENABLE", "KEYS"], ["DISABLE", "KEYS"])
        ):
            kind = SchemaChangeKind.NO_EFFECT
        return [self.change(qualify(*n), kind) for n in dict.fromkeys(names[0]) if self.selected(n)]

    def fallback_names(self, tokens: list[Token]) -> tuple[list[tuple[str, str]], int] | None:
        """The tables after TABLE (or TRUNCATE), and the index after the last of them."""
        start = next((i + 1 for i, t in enumerate(tokens) if t.upper in ("TABLE", "TABLES")), None)
        if start is None and tokens[0].upper == "TRUNCATE":
            start = 1
        if start is None:
            return None
        i = skip_if_exists(tokens, start)
        names: list[tuple[str, str]] = []
        several = tokens[0].upper in ("DROP", "TRUNCATE", "RENAME")
        while True:
            read = read_name(tokens, i, self.default_database)
            if read is None:
                break
            names.append(read[0])
            i = read[1]
            if not several or i >= len(tokens):
                break
            if tokens[i].upper == "TO" or (tokens[i].text == "," and not tokens[i].string):
                i += 1
            elif tokens[i].upper in ("WAIT", "NOWAIT"):
                i += 2 if tokens[i].upper == "WAIT" else 1
                continue
            else:
                break
        return (names, i) if names else None
