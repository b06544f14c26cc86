"""Which column type changes the ClickHouse sink takes safely, checked or not at all (see
sinks/schema_sync/type_changes.py for the three fits); types as system.columns spells them."""

from __future__ import annotations

import re

from cdc_pipeline.sinks.schema_sync.type_changes import Fit, TypeChange, decimal_change, lossy, split_type

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
    old_name, old_args, _ = split_type(old)
    new_name, new_args, _ = split_type(new)
    if old_int and new_name == "Decimal":
        return TypeChange(Fit.CHECKED)
    if old_name == "Decimal" and new_name == "Decimal":
        return decimal_change(old_full, new_full, old_args, new_args)
    if old == "Float32" and new == "Float64":
        return TypeChange(Fit.SAFE)
    if old_name == "DateTime64" and new_name == "DateTime64" and old_args[1:] == new_args[1:]:
        if int(new_args[0]) < int(old_args[0]):
            return lossy(old_full, new_full, f"round times to {new_args[0]} fractional digits")
        return TypeChange(Fit.SAFE)
    if old_name.startswith("Enum") and new_name.startswith("Enum"):
        # Enum values convert by name: a member that is gone has nowhere to go.
        return TypeChange(Fit.SAFE if _enum_members(old) <= _enum_members(new) else Fit.CHECKED)
    if old == "String" and (new_int or new_name in ("Decimal", "Date32", "DateTime64", "UUID", "Bool")):
        return TypeChange(Fit.CHECKED)
    return lossy(old_full, new_full, "convert between types whose values do not map one to one")
