"""A sink that cannot take writes right now, told apart from bad rows and from bugs.

Each sink family tells the errors that mean "the sink is not there, or will not take writes"
(server stopped, connection refused, disk full, permission revoked, read-only) from the rest in its
`outages.py`; `unavailable_as` turns them into one exception, `SinkUnavailable`. The replication
job retries it, then lets the sink lag from its own checkpoint while the other sinks go on. Data
errors stay with `bisect_failures` (rows to the DLQ); anything else still fails the run, so a bug
never passes for an outage.

Messages name the sink and the reason, never the DSN: the reason is the driver's first line with
any password in the DSN blanked out (libpq and ClickHouse name the host, and a DSN may hold a
password, which must not reach the run's logs, metadata or the asset's status).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

import psycopg2

_T = TypeVar("_T")
_Method = TypeVar("_Method", bound=Callable[..., Any])
_REDACTED = "***"


class SinkUnavailable(RuntimeError):
    """The sink cannot take writes now; nothing about the rows. Retried, then the sink lags and catches up."""

    def __init__(self, sink: str, reason: str) -> None:
        super().__init__(f"sink '{sink}' is unavailable: {reason}")
        self.sink = sink
        self.reason = reason


def dsn_secrets(dsn: str) -> list[str]:
    """The password a DSN holds (libpq key=value or URL form), to blank out of error messages."""
    secrets: list[str] = []
    try:
        password = psycopg2.extensions.parse_dsn(dsn).get("password")
    except psycopg2.ProgrammingError:
        password = None
    if password:
        secrets.append(password)
    if "://" in dsn:
        url_password = urlsplit(dsn).password
        if url_password:
            secrets.extend({url_password, unquote(url_password)})
    return secrets


def redacted_reason(error: BaseException, secrets: list[str]) -> str:
    """`Type: first line of the message`, with every secret blanked out."""
    lines = str(error).strip().splitlines()
    message = lines[0].strip() if lines else ""
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, _REDACTED)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class _RaisedOutsideTheSink(Exception):  # noqa: N818 - a carrier, never seen outside this module
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def outside_the_sink(callback: Callable[[_T], None]) -> Callable[[_T], None]:
    """`callback` runs inside a sink's write but talks to something else (the DLQ's PostgreSQL):
    its errors must not be taken for the sink's own, so `unavailable_as` lets them through as they are."""

    def call(argument: _T) -> None:
        try:
            callback(argument)
        except Exception as error:
            raise _RaisedOutsideTheSink(error) from error

    return call


@contextmanager
def unavailable_as(sink: str, dsn: str, is_unavailable: Callable[[BaseException], bool]) -> Iterator[None]:
    """Raise `SinkUnavailable` (named after the sink, DSN-free) for the errors `is_unavailable` accepts."""
    try:
        yield
    except _RaisedOutsideTheSink as outside:
        raise outside.error from None
    except SinkUnavailable:
        raise
    except Exception as error:
        if not is_unavailable(error):
            raise
        # `from None`: the driver's exception text (and its chained causes) is replaced by the redacted reason.
        raise SinkUnavailable(sink, redacted_reason(error, dsn_secrets(dsn))) from None


class TranslatesOutages(Protocol):
    def unavailable_as_sink_error(self) -> AbstractContextManager[None]:
        """`unavailable_as` with this sink's name, DSN and outage errors."""
        ...


def translates_outages(method: _Method) -> _Method:
    """A sink method whose "sink is down" errors become `SinkUnavailable` (named, DSN-free): every
    method of the `Sink` protocol wears it, so no caller ever sees a driver's error text for an outage.
    A generator method is translated while it is iterated."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: TranslatesOutages, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with self.unavailable_as_sink_error():
                yield from method(self, *args, **kwargs)

        return cast(_Method, generator)

    @functools.wraps(method)
    def call(self: TranslatesOutages, *args: Any, **kwargs: Any) -> Any:
        with self.unavailable_as_sink_error():
            return method(self, *args, **kwargs)

    return cast(_Method, call)
