"""Column definitions in parsed DDL: what the rows that already existed hold in an added column.

The rows that follow an ALTER carry the new column, but not the value the existing rows took: that
comes from the definition (its DEFAULT, or the type's implicit default under NOT NULL), read here
from sqlglot's ColumnDef. When the statement does not hold it (AUTO_INCREMENT, a computed column,
an expression default) these raise Unknowable, and the table's change becomes UNRECOGNISED.
"""

from __future__ import annotations

from sqlglot import exp

# The default an added column takes when it is the time of the ALTER: the existing rows hold the
# moment the statement ran, which only the sink's writer can turn into a value (the event's time).
CURRENT_TIMESTAMP = "CURRENT_TIMESTAMP"


def name_of(node: exp.Expr | None) -> str | None:
    """A column name in a column list: an identifier, a column, or either ordered."""
    if isinstance(node, exp.Ordered):
        node = node.this
    if isinstance(node, exp.Identifier | exp.Column):
        return node.name
    return None


_TIMESTAMP_FUNCTIONS = frozenset({"NOW", "CURRENT_TIMESTAMP", "LOCALTIME", "LOCALTIMESTAMP"})


class Unknowable(Exception):
    """The value the existing rows took is not in the statement."""


def _default_of(value: exp.Expr) -> tuple[bool, str | None]:
    """(has_default, default) of an added column's DEFAULT, as text; raises Unknowable."""
    while isinstance(value, exp.Paren):  # MySQL 8 expression defaults: (5) is 5
        value = value.this
    if isinstance(value, exp.Introducer):  # _utf8mb4'x': the charset does not change the value
        value = value.expression
    if isinstance(value, exp.Null):
        return False, None
    if isinstance(value, exp.Literal):
        return True, str(value.this)  # a number keeps its text: '1.50' stays '1.50'
    if isinstance(value, exp.Neg) and isinstance(value.this, exp.Literal) and not value.this.is_string:
        return True, f"-{value.this.this}"
    if isinstance(value, exp.Boolean):
        return True, "1" if value.this else "0"  # MySQL's TRUE and FALSE are the numbers 1 and 0
    if isinstance(value, exp.CurrentTimestamp | exp.Localtimestamp | exp.Localtime):
        return True, CURRENT_TIMESTAMP
    if isinstance(value, exp.Anonymous) and str(value.this).upper() in _TIMESTAMP_FUNCTIONS:
        return True, CURRENT_TIMESTAMP
    # Any other expression (UUID(), b'1', 0x1F, a computation): its value in the existing rows is
    # only in the source's table, which the sink cannot ask for the rows it already holds.
    raise Unknowable


def modified_column(action: exp.ModifyColumn) -> str | None:
    """The lower-case name of the column a MODIFY or CHANGE acts on (CHANGE: its old name)."""
    if not isinstance(action.this, exp.ColumnDef):
        return None
    name = name_of(action.args.get("rename_from") or action.this.this)
    return name.lower() if name is not None else None


def added_column(coldef: exp.ColumnDef) -> tuple[bool, str | None, bool]:
    """(has_default, default, in_primary_key) of an added column; raises Unknowable."""
    has_default: bool = False
    default: str | None = None
    in_key = False
    not_null = False
    kind_of_column = coldef.args.get("kind")
    if isinstance(kind_of_column, exp.DataType) and kind_of_column.this in _NUMBERED_TYPES:
        raise Unknowable  # SERIAL: BIGINT AUTO_INCREMENT, the existing rows got numbers
    for constraint in coldef.args.get("constraints") or []:
        kind = constraint.args.get("kind")
        if isinstance(kind, exp.DefaultColumnConstraint):
            has_default, default = _default_of(kind.this)
            if not has_default:
                return False, None, in_key or in_primary_key(coldef)  # DEFAULT NULL
        elif isinstance(
            kind,
            exp.AutoIncrementColumnConstraint | exp.ComputedColumnConstraint | exp.GeneratedAsIdentityColumnConstraint,
        ):
            # The existing rows got numbers or computed values the statement does not hold.
            raise Unknowable
        elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
            in_key = True
        elif isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null"):
            not_null = True
    if not has_default and not_null:
        # NOT NULL without a DEFAULT: MySQL gives the existing rows the type's implicit default.
        has_default, default = True, _implicit_default(coldef.args.get("kind"))
    return has_default, default, in_key


_NUMBERED_TYPES = frozenset({exp.DataType.Type.SERIAL, exp.DataType.Type.SMALLSERIAL, exp.DataType.Type.BIGSERIAL})

# The implicit default of NOT NULL columns added without one, by type family (MySQL's manual,
# "Data Type Default Values"): zero for numbers, the empty string, an enum's first member.
_NUMERIC = {
    exp.DataType.Type.TINYINT, exp.DataType.Type.UTINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.USMALLINT,
    exp.DataType.Type.MEDIUMINT, exp.DataType.Type.UMEDIUMINT, exp.DataType.Type.INT, exp.DataType.Type.UINT,
    exp.DataType.Type.BIGINT, exp.DataType.Type.UBIGINT, exp.DataType.Type.DECIMAL, exp.DataType.Type.UDECIMAL,
    exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE, exp.DataType.Type.BIT, exp.DataType.Type.YEAR,
    exp.DataType.Type.BOOLEAN,
}  # fmt: skip
_TEXTUAL = {
    exp.DataType.Type.CHAR, exp.DataType.Type.VARCHAR, exp.DataType.Type.NCHAR, exp.DataType.Type.NVARCHAR,
    exp.DataType.Type.TEXT, exp.DataType.Type.TINYTEXT, exp.DataType.Type.MEDIUMTEXT, exp.DataType.Type.LONGTEXT,
    exp.DataType.Type.BINARY, exp.DataType.Type.VARBINARY, exp.DataType.Type.BLOB, exp.DataType.Type.TINYBLOB,
    exp.DataType.Type.MEDIUMBLOB, exp.DataType.Type.LONGBLOB, exp.DataType.Type.SET,
}  # fmt: skip


def _implicit_default(kind: exp.Expr | None) -> str:
    if not isinstance(kind, exp.DataType):
        raise Unknowable
    if kind.this in _NUMERIC:
        return "0"
    if kind.this in _TEXTUAL:
        return ""
    if kind.this is exp.DataType.Type.ENUM and kind.expressions:
        first = kind.expressions[0]
        if isinstance(first, exp.Literal):
            return str(first.this)
    if kind.this is exp.DataType.Type.TIME:
        return "00:00:00"
    # Zero dates ('0000-00-00') have no sink form; JSON and spatial types: not worth guessing.
    raise Unknowable


def in_primary_key(coldef: exp.ColumnDef) -> bool:
    return any(
        isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint) for c in coldef.args.get("constraints") or []
    )
