"""Driver sessions to a Cassandra source, one cluster object per process and node address."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy

# The driver's pure-Python handler; `ProtocolHandler` is the compiled one when the extension is built.
from cassandra.protocol import _ProtocolHandler as PurePythonProtocolHandler

# A Cluster owns threads and connections: the ops and the sensor open a source per call, so they
# share one per address instead of leaking one each time (the driver's sessions are thread-safe).
_SESSIONS: dict[tuple[tuple[str, ...], int, str], Session] = {}
_PURE_PYTHON_SESSIONS: dict[tuple[tuple[str, ...], int, str], Session] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class CassandraSourceSettings:
    """Where the node is. The password never goes into messages (repr=False keeps it out of reprs)."""

    source_name: str
    hosts: tuple[str, ...]
    port: int
    username: str = ""
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        return f"Cassandra source '{self.source_name}'"

    def session(self) -> Session:
        key = (self.hosts, self.port, self.username)
        with _LOCK:
            session = _SESSIONS.get(key)
            if session is not None and not session.is_shutdown:
                return session
            auth = PlainTextAuthProvider(self.username, self.password) if self.username else None
            cluster = Cluster(
                contact_points=list(self.hosts),
                port=self.port,
                auth_provider=auth,
                protocol_version=5,
                execution_profiles={
                    EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=30)
                },
                connect_timeout=10,
                # A node source talks to its own node only: once the node is back from a restart, the
                # session (kept for the process's life) reconnects within seconds, not after the driver's
                # default backoff of up to 10 minutes, in which every run of the source would fail.
                reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
            )
            try:
                session = cluster.connect()
            except NoHostAvailable as error:
                cluster.shutdown()
                # The driver's message names hosts and the failure per host, never the credentials.
                raise ConnectionError(
                    f"{self.describe()}: cannot connect to {self.hosts} port {self.port}: {error}"
                ) from None
            _SESSIONS[key] = session
            return session

    def pure_python_session(self) -> Session:
        """A second session on the same cluster that decodes results in pure Python.

        Cassandra 5 returns TTL() of a non-frozen collection as a list with a null for each element
        that does not expire; the driver's compiled decoder refuses null list elements ("Length must
        be positive") and drops the connection, its pure-Python one reads them as None. Slower, so
        only the initial load's reads use it.
        """
        shared = self.session()
        key = (self.hosts, self.port, self.username)
        with _LOCK:
            session = _PURE_PYTHON_SESSIONS.get(key)
            if session is not None and not session.is_shutdown and session.cluster is shared.cluster:
                return session
            session = shared.cluster.connect()
            session.client_protocol_handler = PurePythonProtocolHandler
            _PURE_PYTHON_SESSIONS[key] = session
            return session
