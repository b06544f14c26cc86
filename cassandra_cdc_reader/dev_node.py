"""A throwaway single Cassandra 5.0 node with CDC on, for developing and checking the segment reader.

Runs `org.apache.cassandra.service.CassandraDaemon` from the jars build.sh resolved (no Cassandra
install, no Docker) with a generated cassandra.yaml: 127.0.0.1, random free ports (so it never meets
another node on this machine), `cdc_enabled: true`, 1 MiB commit-log segments (a small workload fills
several, so completed and live segments both occur) and `commitlog_sync: batch` (every write is
synced before it is acknowledged, so the `_cdc.idx` offset covers it when the driver call returns).

    python dev_node.py /tmp/somewhere [SEGMENT_MIB]   # start, print the CQL port, stop on Ctrl-C
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jvm17_options() -> list[str]:
    lines = (HERE / "jvm17.options").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def cassandra_classpath() -> str:
    path = HERE / "target" / "classpath.txt"
    if not path.exists():
        raise SystemExit(f"{path} missing: run {HERE / 'build.sh'} first")
    return path.read_text().strip()


class DevNode:
    """One node under `root`: its yaml in root/conf, its data, commit log and cdc_raw under root."""

    def __init__(self, root: Path, segment_mib: int = 1, compression: str | None = None):
        self.root = root
        self.segment_mib = segment_mib
        # e.g. LZ4Compressor: compressed segments are read through a different path of the reader
        self.compression = compression
        self.conf_dir = root / "conf"
        self.yaml_path = self.conf_dir / "cassandra.yaml"
        self.cdc_raw = root / "cdc_raw"
        self.commitlog = root / "commitlog"
        self.native_port = free_port()
        self.storage_port = free_port()
        self.process: subprocess.Popen | None = None

    def _write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        r = self.root
        self.yaml_path.write_text(
            f"""cluster_name: cdc_reader_dev
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{self.storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {self.storage_port}
native_transport_port: {self.native_port}
start_native_transport: true
data_file_directories: [{r / 'data'}]
commitlog_directory: {self.commitlog}
cdc_raw_directory: {self.cdc_raw}
saved_caches_directory: {r / 'saved_caches'}
hints_directory: {r / 'hints'}
cdc_enabled: true
cdc_total_space: 256MiB
commitlog_sync: batch
commitlog_segment_size: {self.segment_mib}MiB
auto_snapshot: false
concurrent_compactors: 1
"""
            + (f"commitlog_compression:\n  - class_name: {self.compression}\n" if self.compression else "")
        )
        # Cassandra ships no logback.xml in its jar; without one logback prints DEBUG to stdout.
        (self.conf_dir / "logback.xml").write_text(
            f"""<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{r / 'system.log'}</file>
    <encoder><pattern>%d %-5level [%thread] %logger{{20}} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""
        )

    def start(self, timeout: float = 180.0) -> None:
        self._write_config()
        command = [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            *jvm17_options(),
            f"-Dcassandra.config=file://{self.yaml_path}",
            f"-Dlogback.configurationFile={self.conf_dir / 'logback.xml'}",
            f"-Dcassandra.storagedir={self.root}",
            "-Dcassandra-foreground=yes",
            # One node, nothing to wait for: skip the gossip settle delay and ring delay.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-cp",
            cassandra_classpath(),
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        log = open(self.root / "stdout.log", "wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Cassandra exited with {self.process.returncode}; see {self.root}/system.log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.native_port)) == 0:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"Cassandra did not open port {self.native_port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    node = DevNode(root, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    started = time.monotonic()
    node.start()
    print(f"node up in {time.monotonic() - started:.1f} s: 127.0.0.1:{node.native_port} yaml {node.yaml_path} pid {node.process.pid}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        node.process.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        node.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
