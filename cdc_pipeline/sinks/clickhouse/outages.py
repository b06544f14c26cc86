"""The errors that mean the ClickHouse sink is down or refusing writes (sinks/availability.py)."""

from __future__ import annotations

import re

from clickhouse_connect.driver.exceptions import DatabaseError as ClickHouseDatabaseError

_CODE_IN_MESSAGE = re.compile(r"\bCode:\s*(\d+)")

# ClickHouse server error codes that are about the server or the account, not the rows: writing the
# same rows later, once an operator fixed the server, succeeds.
CLICKHOUSE_UNAVAILABLE_CODES = {
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    192: "UNKNOWN_USER",
    193: "WRONG_PASSWORD",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    425: "SYSTEM_ERROR",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
}


def clickhouse_error_code(error: BaseException) -> int | None:
    code = getattr(error, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE_IN_MESSAGE.search(str(error))
    return int(match.group(1)) if match else None


def clickhouse_server_refuses(error: BaseException) -> bool:
    """A ClickHouse server error whose code is about the server or the account (see the codes above)."""
    return isinstance(error, ClickHouseDatabaseError) and clickhouse_error_code(error) in CLICKHOUSE_UNAVAILABLE_CODES
