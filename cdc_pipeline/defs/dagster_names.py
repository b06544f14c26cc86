"""Source table names as Dagster names: asset keys, partition sets and checks take [A-Za-z0-9_] only.

A table may be called anything its database allows (`sp ace`, `naïve_表`, `semi;colon`). A name that
is already valid is kept as it is (existing assets keep their keys); any other is made valid and
given a digest of the original, so two tables never share an asset.
"""

from __future__ import annotations

import hashlib
import re

_VALID = re.compile(r"^[A-Za-z0-9_]+$")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_]+")


def dagster_name(name: str) -> str:
    """`name` if Dagster takes it, else its valid characters joined by `_`, then `_x` and a digest."""
    if _VALID.match(name):
        return name
    readable = _INVALID_RUN.sub("_", name).strip("_")
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{readable}_x{digest}" if readable else f"x{digest}"
