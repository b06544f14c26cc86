"""A throwaway Cassandra 5 cluster of several nodes on this machine, CDC on every node (tests).

Each node is a `LocalCassandra` (its own JVM, data, commit log and cdc_raw under `base_dir/node<i>`)
listening on its own loopback address: on Linux the whole of 127.0.0.0/8 reaches the loopback
interface, so 127.0.1.1, 127.0.1.2, ... can be bound without any setup. All nodes share one storage
port and one native port (Cassandra and the driver expect that), a cluster name, and node 0 as seed.
Each node owns one token, evenly spaced over Murmur3's range: the ring is the same on every run.

Readiness is each node's own view of the others, read over CQL: `system.peers_v2` (membership and
tokens, what the driver discovers hosts from) and `system_views.gossip_info` (the generation each peer
started with and its status), polled with a deadline.

The nodes keep LocalCassandra's settings, hinted handoff off included: a node that was down gets the
writes it missed only when a read at ALL repairs them (or a repair runs), at a moment the test chooses,
instead of from hints replayed on a 10 s dispatch schedule into its cdc_raw, which would make what each
node's cdc_raw holds depend on timing. Also kept: shutdown_announce_in_ms=0: the shutdown announcement is
still sent before the node's messaging quiesces, and the peers marked it down within milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import ConstantReconnectionPolicy, WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement

from cdc_pipeline.local_servers.cassandra import ClusterMembership, LocalCassandra

# Murmur3Partitioner's tokens are the signed 64-bit integers.
MURMUR3_MIN_TOKEN = -(2**63)
MURMUR3_TOKEN_COUNT = 2**64


def evenly_spaced_tokens(nodes: int) -> list[int]:
    """One token per node splitting Murmur3's ring into equal ranges (what Cassandra's token generator gives)."""
    return [MURMUR3_MIN_TOKEN + index * (MURMUR3_TOKEN_COUNT // nodes) for index in range(nodes)]


def worker_subnet() -> str:
    """The first three octets of this test process's node addresses: one /24 per pytest-xdist worker
    (gw0 -> 127.0.1, gw1 -> 127.0.2, ...; no xdist -> 127.0.254), so two workers' clusters never share an
    address. 127.0.0.x is left to the single-node servers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit() and int(worker[2:]) < 253:
        return f"127.0.{int(worker[2:]) + 1}"
    return "127.0.254"


def _can_bind(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
        return True


def free_port_on_all(addresses: Sequence[str], exclude: frozenset[int] = frozenset(), attempts: int = 50) -> int:
    """A port no process listens on at any of the addresses (the kernel picks one free on the first)."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        if port not in exclude and all(_can_bind(address, port) for address in addresses[1:]):
            return port
    raise RuntimeError(f"no port is free on all of {list(addresses)} after {attempts} attempts")


def check_addresses_bindable(addresses: Sequence[str]) -> None:
    """Fail early, naming the address, where the loopback interface is only 127.0.0.1 (macOS, some sandboxes)."""
    for address in addresses:
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError as error:
                raise RuntimeError(
                    f"cannot bind {address} ({error}): a local Cassandra cluster needs one loopback address per"
                    " node; on Linux all of 127.0.0.0/8 is loopback, elsewhere add aliases to the loopback interface"
                ) from error


@dataclass(frozen=True)
class GossipEntry:
    """One node's gossip state as another node holds it."""

    generation: int  # the start time (seconds) of the node's current run: it changes on every restart
    status: str  # e.g. "NORMAL,<token>", "shutdown,true"

    @property
    def is_normal(self) -> bool:
        return self.status.startswith("NORMAL")


class LocalCassandraCluster:
    """`nodes` Cassandra 5 nodes on this machine; node 0 is the seed. start() returns once every node sees
    every other node in its ring and gossip, stop() stops them all."""

    def __init__(
        self, base_dir: Path, nodes: int = 3, heap_mb: int = 512, node_class: type[LocalCassandra] = LocalCassandra
    ) -> None:
        """`node_class`: a LocalCassandra with other settings (its cassandra_yaml()), for every node."""
        if nodes < 2:
            raise ValueError("a cluster has at least 2 nodes; LocalCassandra is the single-node server")
        self.base_dir = base_dir
        subnet = worker_subnet()
        self.addresses = tuple(f"{subnet}.{index + 1}" for index in range(nodes))
        check_addresses_bindable(self.addresses)
        self.storage_port = free_port_on_all(self.addresses)
        self.native_port = free_port_on_all(self.addresses, exclude=frozenset({self.storage_port}))
        # The port in the name: two test sessions that end up on the same addresses still never join each other.
        self.cluster_name = f"cdc_test_cluster_{self.storage_port}"
        self.tokens = evenly_spaced_tokens(nodes)
        self.nodes = [
            node_class(
                base_dir / f"node{index}",
                heap_mb=heap_mb,
                host=address,
                membership=ClusterMembership(
                    cluster_name=self.cluster_name,
                    storage_port=self.storage_port,
                    native_port=self.native_port,
                    seeds=(self.addresses[0],),
                    initial_token=self.tokens[index],
                ),
            )
            for index, address in enumerate(self.addresses)
        ]
        self.start_seconds: float | None = None
        self._running: set[int] = set()
        self._cluster: Cluster | None = None
        self._session: Session | None = None

    @property
    def running(self) -> tuple[int, ...]:
        """The indexes of the nodes started and not stopped since."""
        return tuple(sorted(self._running))

    # -- starting and stopping --------------------------------------------------------------------

    def start(self, timeout_seconds: float = 240.0) -> LocalCassandraCluster:
        """The seed first (the others' gossip starts from it), then the others one by one, then wait until all
        see all. One by one because a starting node is CPU-bound (about 5 s of CPU): on 2 cores, launching the
        non-seeds together took 24.1 s against 22.7 s one after the other."""
        started = time.monotonic()
        deadline = started + timeout_seconds
        try:
            for index, node in enumerate(self.nodes):
                node.start(timeout_seconds=max(deadline - time.monotonic(), 1.0))
                self._running.add(index)
            self.wait_until_all_see_all(deadline)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop_node(self, index: int, timeout_seconds: float = 60.0) -> None:
        """SIGTERM: the node drains (flushes, closes its commit log) and announces its shutdown; returns once
        every other running node's gossip says so, so that start_node()'s wait for it is a real one."""
        self.nodes[index].stop()
        self._running.discard(index)
        deadline = time.monotonic() + timeout_seconds
        stopped = self.addresses[index]
        while True:
            still_normal = [
                f"node{observer}"
                for observer in sorted(self._running)
                if self._gossip_view(observer)[stopped].is_normal
            ]
            if not still_normal:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(still_normal)} still see node{index} ({stopped}) as NORMAL")
            time.sleep(0.2)

    def start_node(self, index: int, timeout_seconds: float = 120.0) -> None:
        """The stopped node again, on its own data; returns once it and the others see each other again."""
        deadline = time.monotonic() + timeout_seconds
        self.nodes[index].start(timeout_seconds=timeout_seconds)
        self._running.add(index)
        self.wait_until_all_see_all(deadline)

    def stop(self) -> None:
        """Every node (SIGTERM, drained); the data stays under base_dir. All are told first, then waited for:
        a node's drain waits a few seconds for its messaging to quiesce, and those waits overlap."""
        self._close_driver()
        for index in self._running:
            os.kill(self.nodes[index].pid, signal.SIGTERM)
        for index in reversed(range(len(self.nodes))):
            self.nodes[index].stop()
            self._running.discard(index)

    # -- readiness ----------------------------------------------------------------------------------

    def _gossip_view(self, observer: int) -> dict[str, GossipEntry]:
        rows = (
            self.nodes[observer]
            .session()
            .execute("SELECT address, generation, status_with_port FROM system_views.gossip_info")
        )
        return {
            str(row.address): GossipEntry(int(row.generation or 0), str(row.status_with_port or "")) for row in rows
        }

    def _peers(self, observer: int) -> set[str]:
        rows = self.nodes[observer].session().execute("SELECT peer, native_address, tokens FROM system.peers_v2")
        return {str(row.peer) for row in rows if row.native_address is not None and row.tokens}

    def _what_is_not_seen(self) -> list[str]:
        """Each running node's complaints about the others: empty once all see all."""
        views = {observer: self._gossip_view(observer) for observer in self._running}
        own_generation = {index: views[index][self.addresses[index]].generation for index in self._running}
        missing: list[str] = []
        for observer in sorted(self._running):
            # Down nodes too: the ring (and so peers_v2) keeps a node that is only stopped.
            absent = set(self.addresses) - {self.addresses[observer]} - self._peers(observer)
            missing += [f"node{observer} has no {address} in system.peers_v2" for address in sorted(absent)]
            for subject in sorted(self._running - {observer}):
                entry = views[observer].get(self.addresses[subject])
                # The generation tells a restarted node from its previous run's gossip state.
                if entry is None or not entry.is_normal or entry.generation != own_generation[subject]:
                    missing.append(
                        f"node{observer} sees node{subject} as {entry} (its generation: {own_generation[subject]})"
                    )
        if self._cluster is not None:
            missing += [
                f"the driver sees {host.address} down"
                for host in self._cluster.metadata.all_hosts()
                if host.address in {self.addresses[index] for index in self._running} and not host.is_up
            ]
        return missing

    def wait_until_all_see_all(self, deadline: float) -> None:
        """Poll until every running node has every other running node NORMAL in gossip, at the generation that
        node itself reports (a restarted node is seen in its new run), and the driver (if connected) has them up.

        Gossip runs a round a second; a node then marks a peer alive after an echo round trip, so a request at
        ALL right after this may still, rarely, be refused as unavailable: callers that need one poll it."""
        while True:
            missing = self._what_is_not_seen()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes do not all see each other:\n" + "\n".join(missing))
            time.sleep(0.2)

    # -- clients --------------------------------------------------------------------------------------

    def session(self) -> Session:
        """A session over every node (round robin), shared in this process and closed by stop()."""
        if self._session is None:
            profile = ExecutionProfile(
                load_balancing_policy=WhiteListRoundRobinPolicy(list(self.addresses)), request_timeout=30
            )
            self._cluster = Cluster(
                contact_points=list(self.addresses),
                port=self.native_port,
                protocol_version=5,
                execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                connect_timeout=5,
                # A node restarted by start_node() is reconnected within a second, not after the driver's
                # default exponential backoff (up to 10 minutes).
                reconnection_policy=ConstantReconnectionPolicy(delay=0.5, max_attempts=None),
            )
            self._session = self._cluster.connect()
        return self._session

    def execute(
        self, query: str, parameters: Sequence[Any] | None = None, consistency_level: int = ConsistencyLevel.ALL
    ) -> list[Any]:
        """`query` at `consistency_level` (ALL unless told) through session(); the rows it returned."""
        statement = SimpleStatement(query, consistency_level=consistency_level)
        return list(self.session().execute(statement, parameters))

    def read_all(self, query: str, parameters: Sequence[Any] | None = None) -> list[Any]:
        """The rows at ConsistencyLevel.ALL: every replica answers (and a stale one is repaired on the way)."""
        return self.execute(query, parameters, ConsistencyLevel.ALL)

    def _close_driver(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = None
        self._session = None

    def rss_bytes(self) -> dict[int, int]:
        """Each running node's resident memory, by node index."""
        return {index: self.nodes[index].rss_bytes() for index in self.running}
