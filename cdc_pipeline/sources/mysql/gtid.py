"""MariaDB GTIDs (`domain-server-sequence`) and the `_version` numbers derived from them.

With `resume_by: gtid`, versions come from the GTID sequence number, which keeps increasing
across a failover (the promoted server continues the domain's sequence), while binlog file names
and offsets start over on the new server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
# _version = sequence number in the high bits, the row's index within its transaction in the low.
_ROW_INDEX_BITS = 24
_MAX_SEQUENCE = 2 ** (63 - _ROW_INDEX_BITS) - 1


class GtidError(ValueError):
    """A GTID that cannot be parsed or used; the message names it."""


@dataclass(frozen=True)
class Gtid:
    domain: int
    server_id: int
    sequence: int

    @classmethod
    def parse(cls, text: str) -> Gtid:
        match = _GTID.match(text.strip())
        if match is None:
            raise GtidError(f"{text!r} is not a MariaDB GTID (domain-server-sequence)")
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.sequence}"

    @property
    def version_floor(self) -> int:
        """The smallest `_version` a transaction after this one can carry."""
        return gtid_row_version(self.sequence + 1, 0)


def gtid_row_version(sequence: int, row_index: int) -> int:
    if row_index >= 2**_ROW_INDEX_BITS:
        raise GtidError(
            f"transaction with GTID sequence {sequence} changes more than {2**_ROW_INDEX_BITS - 1} rows,"
            " which GTID-based versions cannot number; use resume_by: position for this source"
        )
    if sequence > _MAX_SEQUENCE:
        raise GtidError(f"GTID sequence {sequence} exceeds {_MAX_SEQUENCE}")
    return (sequence << _ROW_INDEX_BITS) | row_index
