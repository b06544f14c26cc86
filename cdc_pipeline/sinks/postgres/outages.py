"""The psycopg2 errors that mean the PostgreSQL sink is down or refusing writes (sinks/availability.py)."""

from __future__ import annotations

import psycopg2
import psycopg2.errors


def postgres_is_unavailable(error: BaseException) -> bool:
    """psycopg2 errors about the server, the connection or the role rather than the rows."""
    return isinstance(
        error,
        (
            # Connection refused or lost, server shut down, disk full (class 53), too many connections.
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
            # Permission revoked (42501): an operator's fix (GRANT) makes the same rows go in.
            psycopg2.errors.InsufficientPrivilege,
            # A standby, or default_transaction_read_only: the same rows go in once it is writable.
            psycopg2.errors.ReadOnlySqlTransaction,
        ),
    )
