"""How a column type change fits the values a sink already holds; each sink judges its own types
(`sinks/<kind>/type_changes.py`) with the helpers here.

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


def split_type(sink_type: str) -> tuple[str, list[str], str]:
    """'numeric(10,2)' -> ('numeric', ['10', '2'], ''); 'timestamp(6) with time zone' -> (..., ' with time zone')."""
    match = _PARAMETERS.match(sink_type.strip())
    if match is None:
        return sink_type.strip(), [], ""
    args = [a.strip() for a in match["args"].split(",")] if match["args"] else []
    return match["name"].strip(), args, match["rest"].strip()


def lossy(old: str, new: str, what: str) -> TypeChange:
    return TypeChange(Fit.LOSSY, f"changing {old} to {new} would {what}")


def decimal_change(old: str, new: str, old_args: list[str], new_args: list[str]) -> TypeChange:
    """numeric(p,s) -> numeric(p2,s2): fewer decimal places round; fewer integer digits may overflow."""
    if not new_args:
        return TypeChange(Fit.SAFE)  # unconstrained numeric holds any decimal
    if not old_args:
        return TypeChange(Fit.CHECKED)
    precision, scale = int(old_args[0]), int(old_args[1]) if len(old_args) > 1 else 0
    new_precision, new_scale = int(new_args[0]), int(new_args[1]) if len(new_args) > 1 else 0
    if new_scale < scale:
        return lossy(old, new, f"round values to {new_scale} decimal places")
    return TypeChange(Fit.SAFE if new_precision - new_scale >= precision - scale else Fit.CHECKED)
