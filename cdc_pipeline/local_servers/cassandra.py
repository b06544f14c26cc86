"""A throwaway single-node Cassandra 5 with change-data-capture on (tests).

The server is `cassandra-all` from Maven Central (see `cassandra_classpath.py`) run as its own JVM, so
nothing is installed system-wide and no Docker is needed. Everything it writes lives under `base_dir`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import psutil
import yaml
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import WhiteListRoundRobinPolicy

from cdc_pipeline.local_servers.cassandra_classpath import cassandra_classpath
from cdc_pipeline.local_servers.mariadb import free_port

HOST = "127.0.0.1"

# What Cassandra 5.0's conf/jvm17-server.options opens to the unnamed module on JDK 17: the daemon
# reaches into JDK internals (direct buffers, Unsafe, class loading for UDFs, attach for jamm/sjk).
# Without them it fails at start with InaccessibleObjectException.
JDK17_MODULE_FLAGS = (
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Djdk.attach.allowAttachSelf=true",
    # Netty creates direct buffers through Unsafe only with this (else ByteBuffer.allocateDirect).
    "-Dio.netty.tryReflectionSetAccessible=true",
)

# A test node: start fast, stay small, and leave the commit log durable (the CDC index must be real).
FAST_START_PROPERTIES = (
    # One node, its own seed: nothing to wait for (the default polls the gossip state for 8 s or more).
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    # Schema changes are in the (batch-synced) commit log anyway; flushing the schema tables on every
    # CREATE/DROP (the default) made a per-test keyspace with two tables cost 0.52 s instead of 0.35 s.
    "-Dcassandra.test.flush_local_schema_changes=false",
    # Stopping: nobody to tell about the shutdown (the default waits 2 s for the announcement to spread).
    "-Dcassandra.shutdown_announce_in_ms=0",
)

_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: only the prctl call itself runs between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # A test process killed with SIGKILL cannot stop its node: the kernel sends the JVM SIGTERM when the
    # thread that started it ends, so no 430 MiB JVM outlives the session on a shared machine.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise RuntimeError("java is not installed: Cassandra 5 needs a JDK 17 (Debian package openjdk-17-jre-headless)")
    return java


@dataclass(frozen=True)
class CdcIndex:
    """A `<segment>_cdc.idx` file: how far its segment is durable, and whether the segment is closed."""

    segment: Path
    offset: int
    completed: bool

    @property
    def segment_id(self) -> int:
        # CommitLog-<format version>-<id>.log: ids grow with every new segment.
        return int(self.segment.stem.rsplit("-", 1)[1])


def read_cdc_index(index_file: Path) -> CdcIndex | None:
    """The index's content, or None while Cassandra rewrites it (it truncates, then writes the offset)."""
    try:
        lines = index_file.read_text().split()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].isdigit():
        return None
    segment = index_file.with_name(index_file.name.removesuffix("_cdc.idx") + ".log")
    return CdcIndex(segment, int(lines[0]), lines[1:] == ["COMPLETED"])


@dataclass(frozen=True)
class ClusterMembership:
    """What makes a node one of several on this machine (see cassandra_cluster.py)."""

    cluster_name: str
    # Both ports the same on every node (each on its own loopback address): seeds are dialled on the port the
    # seed list names, and the driver has one native port for every host it discovers.
    storage_port: int
    native_port: int
    seeds: tuple[str, ...]  # addresses, on storage_port
    # The node's one token (num_tokens 1): a fixed ring, joined at once (auto_bootstrap false: nothing to stream).
    initial_token: int


class LocalCassandra:
    def __init__(
        self, base_dir: Path, heap_mb: int = 512, host: str = HOST, membership: ClusterMembership | None = None
    ) -> None:
        self.base_dir = base_dir
        self.host = host
        self.membership = membership
        self.port = membership.native_port if membership else free_port()
        self.storage_port = membership.storage_port if membership else free_port()
        self.heap_mb = heap_mb
        # commitlog and cdc_raw must share a file system: segments are hard-linked into cdc_raw.
        self.commitlog_dir = base_dir / "commitlog"
        self.cdc_raw_dir = base_dir / "cdc_raw"
        self.data_dir = base_dir / "data"
        self.log_file = base_dir / "system.log"
        self.start_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._cluster: Cluster | None = None
        self._session: Session | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def cassandra_yaml(self) -> dict[str, Any]:
        """The node's settings: Cassandra's defaults except where a small, fast, CDC-enabled test node differs."""
        membership = self.membership
        seeds = membership.seeds if membership else (self.host,)
        return {
            # A name per node (or cluster): two nodes of two xdist workers refuse to gossip with each other.
            "cluster_name": membership.cluster_name if membership else f"cdc_test_{self.port}",
            "num_tokens": 1,
            **({"initial_token": str(membership.initial_token), "auto_bootstrap": False} if membership else {}),
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "seed_provider": [
                {
                    "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                    "parameters": [{"seeds": ",".join(f"{seed}:{self.storage_port}" for seed in seeds)}],
                }
            ],
            "listen_address": self.host,
            "rpc_address": self.host,
            "storage_port": self.storage_port,
            "native_transport_port": self.port,
            "start_native_transport": True,
            "authenticator": "AllowAllAuthenticator",
            "authorizer": "AllowAllAuthorizer",
            "data_file_directories": [str(self.data_dir)],
            "commitlog_directory": str(self.commitlog_dir),
            "cdc_raw_directory": str(self.cdc_raw_dir),
            "saved_caches_directory": str(self.base_dir / "saved_caches"),
            "hints_directory": str(self.base_dir / "hints"),
            # batch: a write is acknowledged after its segment is synced, and every sync of a segment holding
            # CDC data rewrites <segment>_cdc.idx; so the durable offset moves before the write returns.
            # Batch mode needs commitlog_sync_period 0 (5.0 refuses to start with the shipped 10000ms), and 4.x's
            # commitlog_sync_batch_window_in_ms is gone ("Invalid yaml. Please remove properties").
            "commitlog_sync": "batch",
            "commitlog_sync_period": "0ms",
            # Small segments so a test can roll them over: 1 MiB is the smallest (the size is whole MiB; 512KiB
            # is invalid yaml).
            "commitlog_segment_size": "1MiB",
            "cdc_enabled": True,
            # Small enough that a test can fill cdc_raw and see CDC writes rejected.
            "cdc_total_space": "64MiB",
            "cdc_free_space_check_interval": "250ms",
            # Per-test keyspaces are dropped: snapshots of them would only cost time and disk.
            "auto_snapshot": False,
            "hinted_handoff_enabled": False,
            # Sized for a 512 MiB heap on 2 shared cores.
            "memtable_heap_space": "64MiB",
            "memtable_offheap_space": "64MiB",
            "memtable_flush_writers": 1,
            "concurrent_reads": 4,
            "concurrent_writes": 4,
            "concurrent_counter_writes": 2,
            "concurrent_materialized_view_writes": 1,
            "concurrent_compactors": 1,
            "key_cache_size": "8MiB",
            "counter_cache_size": "0MiB",
            "prepared_statements_cache_size": "8MiB",
            "file_cache_size": "32MiB",
            "networking_cache_size": "16MiB",
            "index_summary_capacity": "4MiB",
        }

    def _logback_xml(self) -> str:
        # Everything goes to system.log under base_dir; nothing to the console (the tests' output stays clean).
        return (
            "<configuration>\n"
            '  <appender name="FILE" class="ch.qos.logback.core.FileAppender">\n'
            f"    <file>{escape(str(self.log_file))}</file>\n"
            "    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern></encoder>\n"
            "  </appender>\n"
            '  <root level="INFO"><appender-ref ref="FILE"/></root>\n'
            "</configuration>\n"
        )

    def java_command(self, classpath: str) -> list[str]:
        return [
            java_executable(),
            # The heap starts small and grows only as far as the node needs: with -Xms equal to -Xmx
            # (Cassandra's advice for production) the node's RSS was 810 MiB after start instead of 430 MiB.
            "-Xms128m",
            f"-Xmx{self.heap_mb}m",
            # Cassandra's own stack size: it runs a few hundred threads.
            "-Xss256k",
            # Serial GC: a small heap collects in milliseconds, with no GC threads on 2 shared cores
            # (measured: RSS 430 MiB after start instead of 520 MiB with G1, Cassandra's choice).
            "-XX:+UseSerialGC",
            # C1 only: a test node never runs long enough for C2 to pay off (start-up took 4.9 s of CPU
            # instead of 7.3 s, in the same wall time).
            "-XX:TieredStopAtLevel=1",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:+PerfDisableSharedMem",
            "-Djava.net.preferIPv4Stack=true",
            *JDK17_MODULE_FLAGS,
            f"-Dcassandra.config=file://{self.base_dir / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile=file://{self.base_dir / 'logback.xml'}",
            f"-Dcassandra.storagedir={self.base_dir}",
            f"-Dcassandra.logdir={self.base_dir}",
            "-Dcassandra-foreground=yes",
            # No cassandra.jmx.*.port property: JMX stays off (nothing here uses nodetool, and it is one port less).
            *FAST_START_PROPERTIES,
            "-cp",
            classpath,
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def start(self, timeout_seconds: float = 90.0) -> LocalCassandra:
        classpath = cassandra_classpath()
        started = time.monotonic()
        for directory in (self.base_dir, self.commitlog_dir, self.cdc_raw_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "cassandra.yaml").write_text(yaml.safe_dump(self.cassandra_yaml(), sort_keys=False))
        (self.base_dir / "logback.xml").write_text(self._logback_xml())
        output = self.base_dir / "cassandra.out"
        with output.open("ab") as output_file:
            self._process = subprocess.Popen(
                self.java_command(classpath),
                stdout=output_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base_dir,
                preexec_fn=_die_with_parent,
            )
        deadline = started + timeout_seconds
        try:
            self._wait_for_native_port(deadline)
            self._wait_for_cql(deadline)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _check_alive(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(
                f"Cassandra exited with {self._process.returncode} while starting; see {self.log_file} and "
                f"{self.base_dir / 'cassandra.out'}:\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        lines: list[str] = []
        for path in (self.base_dir / "cassandra.out", self.log_file):
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-15:]
        return "\n".join(lines)

    def _wait_for_native_port(self, deadline: float) -> None:
        # The native transport is the last thing the daemon starts: once it accepts a connection, the
        # node has replayed its commit log, loaded the schema and joined its (one-node) ring.
        while True:
            self._check_alive()
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Cassandra did not open its native port {self.port} in time; see {self.log_file}:\n"
                        f"{self._log_tail()}"
                    ) from error
                time.sleep(0.2)

    def _wait_for_cql(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                row = self.session().execute("SELECT release_version FROM system.local").one()
                if row is not None:
                    return
            except NoHostAvailable as error:
                self._close_driver()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Cassandra did not answer CQL in time; see {self.log_file}") from error
                time.sleep(0.2)

    def cdc_indexes(self) -> list[CdcIndex]:
        """The readable `_cdc.idx` files in cdc_raw, oldest segment first."""
        indexes = [read_cdc_index(path) for path in self.cdc_raw_dir.glob("*_cdc.idx")]
        return sorted((index for index in indexes if index is not None), key=lambda index: index.segment_id)

    def discard_completed_cdc_segments(self) -> int:
        """Delete the closed segments in cdc_raw (what a CDC consumer does once it has read them).

        cdc_raw keeps every segment that held CDC data until someone deletes it, and CDC writes are
        rejected once it holds cdc_total_space: between tests, this frees the space for the next one.
        """
        discarded = 0
        for index in self.cdc_indexes():
            if index.completed:
                index.segment.unlink(missing_ok=True)
                index.segment.with_name(index.segment.stem + "_cdc.idx").unlink(missing_ok=True)
                discarded += 1
        return discarded

    def release_version(self) -> str:
        row = self.session().execute("SELECT release_version FROM system.local").one()
        assert row is not None
        return str(row.release_version)

    def connect(self, keyspace: str | None = None) -> tuple[Cluster, Session]:
        """A new driver cluster and session; the caller shuts the cluster down."""
        profile = ExecutionProfile(
            # The only node: without a policy the driver warns and guesses the data centre.
            load_balancing_policy=WhiteListRoundRobinPolicy([self.host]),
            request_timeout=30,
        )
        cluster = Cluster(
            contact_points=[self.host],
            port=self.port,
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=5,
        )
        return cluster, cluster.connect(keyspace)

    def session(self) -> Session:
        """A session shared by this process's users of the node, closed by stop()."""
        if self._session is None:
            self._cluster, self._session = self.connect()
        return self._session

    def _close_driver(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = None
        self._session = None

    def stop(self, timeout_seconds: float = 30.0, remove_data: bool = False) -> None:
        """SIGTERM lets the daemon drain (flush memtables, close the commit log); SIGKILL only if it hangs."""
        self._close_driver()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if remove_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)
