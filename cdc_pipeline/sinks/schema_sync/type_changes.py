"""Which column type changes a sink can take without losing a value, per sink.

A change is SAFE when every value of the old type has an exact value in the new one (a wider
integer, more digits, a longer text); CHECKED when some values may not fit but the sink can tell
before anything is lost (PostgreSQL's cast raises on an out-of-range value inside the batch's
transaction; ClickHouse is asked first with accurateCastOrNull); LOSSY when the sink would round or
truncate without a word (fewer decimal places, a float into an integer, a shorter time precision).
A lossy change is never applied: the table's changes go to the DLQ until an operator decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Fit(StrEnum):
    SAFE = "safe"
    CHECKED = "checked"
    LOSSY = "lossy"


@dataclass(frozen=True)
class TypeChange:
    fit: Fit
    why: str = ""  # for LOSSY: what would be lost


_PARAMETERS = re.compile(r"^(?P<name>[^(]+)(?:\((?P<args>.*)\))?(?P<rest>[^()]*)$")


def _split(sink_type: str) -> tuple[str, list[str], str]:
    """'numeric(10,2)' -> ('numeric', ['10', '2'], ''); 'timestamp(6) with time zone' -> (..., ' with time zone')."""
    match = _PARAMETERS.match(sink_type.strip())
    if match is None:
        return sink_type.strip(), [], ""
    args = [a.strip() for a in match["args"].split(",")] if match["args"] else []
    return match["name"].strip(), args, match["rest"].strip()


def _lossy(old: str, new: str, what: str) -> TypeChange:
    return TypeChange(Fit.LOSSY, f"changing {old} to {new} would {what}")


def _decimal_change(old: str, new: str, old_args: list[str], new_args: list[str]) -> TypeChange:
    """numeric(p,s) -> numeric(p2,s2): fewer decimal places round; fewer integer digits may overflow."""
    if not new_args:
        return TypeChange(Fit.SAFE)  # unconstrained numeric holds any decimal
    if not old_args:
        return TypeChange(Fit.CHECKED)
    precision, scale = int(old_args[0]), int(old_args[1]) if len(old_args) > 1 else 0
    new_precision, new_scale = int(new_args[0]), int(new_args[1]) if len(new_args) > 1 else 0
    if new_scale < scale:
        return _lossy(old, new, f"round values to {new_scale} decimal places")
    return TypeChange(Fit.SAFE if new_precision - new_scale >= precision - scale else Fit.CHECKED)


# -- PostgreSQL (types as format_type() spells them) -----------------------------------------------

_PG_INTEGER_BYTES = {"smallint": 2, "integer": 4, "bigint": 8}
_PG_TEXTUAL = {"text", "character varying", "character"}
_PG_FROM_TEXT_CHECKED = {*_PG_INTEGER_BYTES, "numeric", "date", "boolean", "uuid", "jsonb", "json"}


def postgres_type_change(old: str, new: str) -> TypeChange:
    if old == new:
        return TypeChange(Fit.SAFE)
    old_name, old_args, old_rest = _split(old)
    new_name, new_args, new_rest = _split(new)
    if new_name == "text" and old_name != "bytea":
        return TypeChange(Fit.SAFE)  # every value has a text form
    if old_name in _PG_INTEGER_BYTES and new_name in _PG_INTEGER_BYTES:
        # A narrower integer raises "out of range" on a value that does not fit.
        return TypeChange(Fit.SAFE if _PG_INTEGER_BYTES[new_name] >= _PG_INTEGER_BYTES[old_name] else Fit.CHECKED)
    if old_name in _PG_INTEGER_BYTES and new_name == "numeric":
        return TypeChange(Fit.SAFE if not new_args else Fit.CHECKED)
    if old_name == "numeric" and new_name == "numeric":
        return _decimal_change(old, new, old_args, new_args)
    if old_name == "real" and new_name == "double precision":
        return TypeChange(Fit.SAFE)
    if old_name in _PG_TEXTUAL and new_name in _PG_TEXTUAL:
        if not new_args:
            return TypeChange(Fit.SAFE)
        # A shorter varchar raises "value too long" on assignment: checked, never truncated.
        longer = bool(old_args) and int(new_args[0]) >= int(old_args[0])
        return TypeChange(Fit.SAFE if longer else Fit.CHECKED)
    if old_name.startswith("timestamp") and new_name.startswith("timestamp") and old_rest == new_rest:
        old_precision = int(old_args[0]) if old_args else 6
        new_precision = int(new_args[0]) if new_args else 6
        if new_precision < old_precision:
            return _lossy(old, new, f"round times to {new_precision} fractional digits")
        return TypeChange(Fit.SAFE)
    if old_name in _PG_TEXTUAL and new_name in _PG_FROM_TEXT_CHECKED:
        return TypeChange(Fit.CHECKED)  # the cast raises on text that is not a value of the type
    return _lossy(old, new, "convert between types whose values do not map one to one")


# -- ClickHouse (types as system.columns spells them) --------------------------------------------

_CH_INTEGER = re.compile(r"^(U?)Int(8|16|32|64|128|256)$")


def _nullable_inner(sink_type: str) -> tuple[bool, str]:
    if sink_type.startswith("Nullable(") and sink_type.endswith(")"):
        return True, sink_type[len("Nullable(") : -1]
    return False, sink_type


def _enum_members(sink_type: str) -> set[str]:
    return set(re.findall(r"'((?:[^'\\]|\\.)*)'\s*=", sink_type))


def clickhouse_type_change(old: str, new: str) -> TypeChange:
    if old == new:
        return TypeChange(Fit.SAFE)
    old_nullable, old_inner = _nullable_inner(old)
    new_nullable, new_inner = _nullable_inner(new)
    inner = _clickhouse_inner_change(old_inner, new_inner, old, new)
    if inner.fit is Fit.LOSSY or not (old_nullable and not new_nullable):
        return inner
    return TypeChange(Fit.CHECKED)  # a NULL has no place in a non-Nullable column: asked first


def _clickhouse_inner_change(old: str, new: str, old_full: str, new_full: str) -> TypeChange:
    if old == new:
        return TypeChange(Fit.SAFE)
    if new == "String":
        return TypeChange(Fit.SAFE)
    old_int, new_int = _CH_INTEGER.match(old), _CH_INTEGER.match(new)
    if old_int and new_int:
        old_unsigned, old_bits = old_int[1] == "U", int(old_int[2])
        new_unsigned, new_bits = new_int[1] == "U", int(new_int[2])
        widening = (new_bits > old_bits and (old_unsigned or not new_unsigned)) or (
            new_bits == old_bits and old_unsigned == new_unsigned
        )
        return TypeChange(Fit.SAFE if widening else Fit.CHECKED)
    old_name, old_args, _ = _split(old)
    new_name, new_args, _ = _split(new)
    if old_int and new_name == "Decimal":
        return TypeChange(Fit.CHECKED)
    if old_name == "Decimal" and new_name == "Decimal":
        return _decimal_change(old_full, new_full, old_args, new_args)
    if old == "Float32" and new == "Float64":
        return TypeChange(Fit.SAFE)
    if old_name == "DateTime64" and new_name == "DateTime64" and old_args[1:] == new_args[1:]:
        if int(new_args[0]) < int(old_args[0]):
            return _lossy(old_full, new_full, f"round times to {new_args[0]} fractional digits")
        return TypeChange(Fit.SAFE)
    if old_name.startswith("Enum") and new_name.startswith("Enum"):
        # Enum values convert by name: a member that is gone has nowhere to go.
        return TypeChange(Fit.SAFE if _enum_members(old) <= _enum_members(new) else Fit.CHECKED)
    if old == "String" and (new_int or new_name in ("Decimal", "Date32", "DateTime64", "UUID", "Bool")):
        return TypeChange(Fit.CHECKED)
    return _lossy(old_full, new_full, "convert between types whose values do not map one to one")
