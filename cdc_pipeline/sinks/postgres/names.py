"""PostgreSQL names for sink relations, within the server's 63-byte identifier limit.

PostgreSQL cuts a longer identifier to 63 bytes with only a NOTICE, so a 60-character table and its
`_current` view (or two tables sharing their first 63 bytes) would become one name: the second
CREATE fails and the sink halts for every table. A name that does not fit keeps its first bytes
(cut on a character boundary) and ends with a digest of the whole name instead, so distinct names
stay distinct and a reader still recognises the table. Names that fit are left as they are.

Every PostgreSQL identifier a sink builds from a table name (the table, its view, its deletions
table, its indexes) goes through `fit`, always from the full logical name (`shop__orders_current`,
not the fitted table name plus a suffix), so every process and module arrives at the same name.
"""

from __future__ import annotations

import hashlib

from psycopg2 import sql

MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1 in a stock build
_DIGEST_CHARS = 10


def fit(name: str) -> str:
    """`name` itself when it fits in 63 bytes; else its start and a digest of all of it."""
    encoded = name.encode("utf-8")
    if len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.blake2b(encoded, digest_size=_DIGEST_CHARS // 2).hexdigest()
    room = MAX_IDENTIFIER_BYTES - len(digest) - 1
    start = encoded[:room].decode("utf-8", errors="ignore")  # drops a character cut in two
    return f"{start}_{digest}"


def staging_table_name(table_name: str) -> str:
    """The batch's temporary staging table for `table_name`, unique per sink table.

    A digest of the whole name leads it, so two sink tables whose names agree in their first 50
    bytes never share one staging table within a batch (the truncated prefix alone did: the second
    table's rows were copied into the first's columns). The readable rest is cut on a character
    boundary to fit PostgreSQL's 63 bytes."""
    digest = hashlib.blake2b(table_name.encode(), digest_size=6).hexdigest()
    prefix = f"_cdc_stg_{digest}_"
    room = MAX_IDENTIFIER_BYTES - len(prefix)
    readable = table_name.encode()[:room].decode(errors="ignore")
    return prefix + readable


def relation(schema: str, name: str) -> sql.Composed:
    """`schema`.`name`, the name fitted."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(fit(name)))
