"""An order-independent digest of a table's keys, comparable between a source and its sinks.

Each side streams its live keys; each key is reduced to one canonical text (the drivers return
Decimal('1.50') or Decimal('1.5'), naive or UTC-aware datetimes, bytes or memoryview) and hashed;
the digest is the sum of the hashes modulo 2**64, so row order does not matter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_MODULUS = 2**64


@dataclass(frozen=True)
class KeyDigest:
    count: int
    digest: int


def canonical_key_part(value: Any) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def key_digest(keys: Iterable[tuple[Any, ...]]) -> KeyDigest:
    count, total = 0, 0
    for key in keys:
        text = "\x1f".join(canonical_key_part(part) for part in key)
        total += int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        count += 1
    return KeyDigest(count, total % _MODULUS)
