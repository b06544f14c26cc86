"""Which column type changes the PostgreSQL sink takes safely, checked or not at all (see
sinks/schema_sync/type_changes.py for the three fits); types as format_type() spells them."""

from __future__ import annotations

from cdc_pipeline.sinks.schema_sync.type_changes import Fit, TypeChange, decimal_change, lossy, split_type

_PG_INTEGER_BYTES = {"smallint": 2, "integer": 4, "bigint": 8}
_PG_TEXTUAL = {"text", "character varying", "character"}
_PG_FROM_TEXT_CHECKED = {*_PG_INTEGER_BYTES, "numeric", "date", "boolean", "uuid", "jsonb", "json"}


def postgres_type_change(old: str, new: str) -> TypeChange:
    if old == new:
        return TypeChange(Fit.SAFE)
    old_name, old_args, old_rest = split_type(old)
    new_name, new_args, new_rest = split_type(new)
    if new_name == "text" and old_name != "bytea":
        return TypeChange(Fit.SAFE)  # every value has a text form
    if old_name in _PG_INTEGER_BYTES and new_name in _PG_INTEGER_BYTES:
        # A narrower integer raises "out of range" on a value that does not fit.
        return TypeChange(Fit.SAFE if _PG_INTEGER_BYTES[new_name] >= _PG_INTEGER_BYTES[old_name] else Fit.CHECKED)
    if old_name in _PG_INTEGER_BYTES and new_name == "numeric":
        return TypeChange(Fit.SAFE if not new_args else Fit.CHECKED)
    if old_name == "numeric" and new_name == "numeric":
        return decimal_change(old, new, old_args, new_args)
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
            return lossy(old, new, f"round times to {new_precision} fractional digits")
        return TypeChange(Fit.SAFE)
    if old_name in _PG_TEXTUAL and new_name in _PG_FROM_TEXT_CHECKED:
        return TypeChange(Fit.CHECKED)  # the cast raises on text that is not a value of the type
    return lossy(old, new, "convert between types whose values do not map one to one")
