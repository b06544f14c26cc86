"""Dagster as a user runs it, for the service benchmark: `dagster-daemon run` (which starts the code
server that launches every run in a process of its own) on the project's code location, an instance
of its own with the repository's dagster.yaml, and the replication sensor switched on by the CLI.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil

REPO_INSTANCE_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
LOCATION = "cdc_pipeline.definitions"


@dataclass
class DagsterService:
    home: Path
    config: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if REPO_INSTANCE_YAML.exists():
            shutil.copyfile(REPO_INSTANCE_YAML, self.home / "dagster.yaml")
        self.log_path = self.home / "daemon.log"

    @property
    def _env(self) -> dict[str, str]:
        return {**self.env, "DAGSTER_HOME": str(self.home), "CDC_PIPELINE_CONFIG": str(self.config)}

    def _cli(self, name: str) -> str:
        return str(Path(sys.executable).parent / name)

    def start(self, sensors: list[str]) -> None:
        """Switch the sensors on (they start stopped in a production location), then start the daemon.

        In that order: the CLI initialises the instance's storage before the daemon opens it (two
        processes creating a SQLite storage at once can trip over its schema migration)."""
        for sensor in sensors:
            started = subprocess.run(
                [self._cli("dagster"), "sensor", "start", sensor, "-m", LOCATION],
                cwd=self.home,
                env=self._env,
                capture_output=True,
                text=True,
            )
            if started.returncode != 0:
                raise RuntimeError(f"dagster sensor start {sensor} failed:\n{started.stderr[-3000:]}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self._cli("dagster-daemon"), "run", "-m", LOCATION],
                cwd=self.home,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def stop(self) -> None:
        """SIGTERM to everything the daemon started (a streaming run stops at a batch boundary), then SIGKILL."""
        if self.process is None:
            return
        group = self.process.pid
        for signal_number, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            members = _group_members(group)
            for member in members:
                try:
                    member.send_signal(signal_number)
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(members, timeout=grace)
            if not alive:
                break
        self.process.wait()
        self.process = None

    def storage_bytes(self) -> dict[str, int]:
        """What Dagster's SQLite storage holds now, in bytes of content: "events" (the runs and their
        event logs, as serialised) and "ticks" (the sensors' ticks). Counted from the rows, not the
        files: a file grows by pages, and a short window would see none or a whole page; SQLite's
        indexes add about as much again."""
        total = {"events": 0, "ticks": 0}
        queries = {
            "event_logs": ("events", "SELECT coalesce(sum(length(event)), 0) FROM event_logs"),
            "runs": ("events", "SELECT coalesce(sum(length(run_body)), 0) FROM runs"),
            "job_ticks": ("ticks", "SELECT coalesce(sum(length(tick_body)), 0) FROM job_ticks"),
        }
        for database in self.home.rglob("*.db"):
            with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                for table, (part, query) in queries.items():
                    if table in tables:
                        total[part] += int(connection.execute(query).fetchone()[0])
        return total


def _group_members(group: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll `condition()` until true; returns the time it became true (time.time())."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.time()
