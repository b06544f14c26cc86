"""How to reach a MySQL/MariaDB server: one value object shared by the reader, catalog and checks."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pymysql
from pymysql.cursors import Cursor

_shared_tls_context: ssl.SSLContext | None = None
_shared_tls_lock = threading.Lock()


class Connection(pymysql.connections.Connection):
    """PyMySQL's connection with one TLS context per process for its default "preferred" TLS.

    Without TLS options PyMySQL tries TLS when the server offers it, and builds a new context for
    that on every connection: loading the system's CA store costs about 27 ms, six times per
    micro-batch (the binlog stream opens two connections) and more than half of a small batch's
    time. The context is the same each time, so it is built once; explicit TLS options still get
    their own.
    """

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        global _shared_tls_context
        if sslp:
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        with _shared_tls_lock:
            if _shared_tls_context is None:
                _shared_tls_context = super()._create_ssl_ctx(sslp)
            return _shared_tls_context


@dataclass(frozen=True)
class MySqlConnectionSettings:
    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)  # never printed

    def as_pymysql_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "charset": "utf8mb4",
        }

    def connect(self) -> pymysql.connections.Connection:
        return Connection(**self.as_pymysql_kwargs(), autocommit=True)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


# PyMySQL's codes for a connection that is gone: the server went away, the link dropped mid-query,
# or the client could not read the answer.
_CONNECTION_LOST = frozenset({2006, 2013, 2055})
T = TypeVar("T")


class ControlConnection:
    """One connection kept for the short reads a source makes on every idle poll and batch (the
    binlog's end, the server id), instead of a new connection (and TLS handshake) each time.

    The reads are idempotent, so a connection that died between two of them (a server restart, a
    failover behind the same address, the server's `wait_timeout`) is replaced and the read asked
    once more on the new one.
    """

    def __init__(self, settings: MySqlConnectionSettings) -> None:
        self.settings = settings
        self._connection: pymysql.connections.Connection | None = None

    def read(self, query: Callable[[Cursor], T]) -> T:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self.settings.connect()
            try:
                with self._connection.cursor() as cursor:
                    return query(cursor)
            except pymysql.err.OperationalError as error:
                self.close()
                if attempt == 2 or error.args[0] not in _CONNECTION_LOST:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # Closing a connection whose link already dropped only marks it closed.
            connection.close()
