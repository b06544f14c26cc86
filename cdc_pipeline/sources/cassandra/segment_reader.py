"""Runs the Java CDC segment reader (`cassandra_cdc_reader/`) over a range of one commit-log segment.

The Python side owns the offsets: it finds CDC segments and their durable offsets in `cdc_raw`,
hands the reader a schema file (CQL and table ids from the live node) and a byte range, and gets
one JSON line per partition update back, ending with an `end` line that says where to resume. The
reader is a long-lived process (SegmentReaderProcess) serving one range after another.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cassandra.cluster import Session

from cdc_pipeline.sources.cassandra.cql_types import timestamp_micros

# The repository's reader, next to the package in a checkout; an installed package (the Docker
# image) names its built copy in $CDC_CASSANDRA_READER_DIR.
READER_DIR = Path(
    os.environ.get("CDC_CASSANDRA_READER_DIR") or Path(__file__).resolve().parents[3] / "cassandra_cdc_reader"
)
_ARGFILE = READER_DIR / "target" / "reader.argfile"
_MAIN_CLASS = "cdc.pipeline.CdcSegmentReader"
# The argfile's C1-only setting suits one short read; a reader that serves a run's reads gains from
# C2 once warm (measured: 69,000 mutations in 0.7-1.0 s warm against 1.8-2.0 s with C1 only).
_LONG_LIVED_JVM_OPTIONS = ("-XX:TieredStopAtLevel=4",)


def reader_is_built() -> bool:
    return _ARGFILE.exists()


class SegmentReadError(RuntimeError):
    """The reader failed or said nothing about where it stopped; the message names the segment and range."""


@dataclass(frozen=True)
class CdcSegment:
    """A commit-log segment hard-linked into cdc_raw, and how far it is durable."""

    path: Path
    segment_id: int
    durable_offset: int
    complete: bool


@dataclass
class SegmentRead:
    changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] = field(default_factory=dict)


def cdc_segments(cdc_raw: Path) -> list[CdcSegment]:
    """The segments with an index file, oldest first. Cassandra rewrites an index in place: an empty
    read means "ask again", so such a segment is left out of this listing."""
    found = []
    for index in cdc_raw.glob("*_cdc.idx"):
        lines = index.read_text().split()
        if not lines:
            continue
        segment = index.with_name(index.name.removesuffix("_cdc.idx") + ".log")
        segment_id = int(segment.stem.rsplit("-", 1)[1])
        found.append(CdcSegment(segment, segment_id, int(lines[0]), len(lines) > 1 and lines[1] == "COMPLETED"))
    return sorted(found, key=lambda s: s.segment_id)


def write_schema_file(session: Session, keyspaces: Iterable[str], path: Path) -> Path:
    """Every table and type of the keyspaces (a mutation may span a keyspace's tables), with their ids
    and dropped columns, as the reader needs them to deserialize mutations."""
    metadata = session.cluster.metadata
    tables: list[dict[str, Any]] = []
    types: list[dict[str, str]] = []
    for keyspace in keyspaces:
        described = metadata.keyspaces[keyspace]
        types += [{"keyspace": keyspace, "cql": t.as_cql_query()} for t in described.user_types.values()]
        ids = session.execute("SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", [keyspace])
        for row in ids:
            dropped = session.execute(
                "SELECT column_name, type, kind, dropped_time FROM system_schema.dropped_columns"
                " WHERE keyspace_name = %s AND table_name = %s",
                [keyspace, row.table_name],
            )
            tables.append(
                {
                    "keyspace": keyspace,
                    "table": row.table_name,
                    "id": str(row.id),
                    "cql": described.tables[row.table_name].as_cql_query(),
                    # dropped_time is a CQL timestamp (ms); Cassandra compares it in microseconds.
                    "dropped_columns": [
                        {
                            "name": d.column_name,
                            "type": d.type,
                            "kind": d.kind,
                            "dropped_time": timestamp_micros(d.dropped_time),
                        }
                        for d in dropped
                    ],
                }
            )
    path.write_text(json.dumps({"types": types, "tables": tables}))
    return path


class SegmentReaderProcess:
    """A `CdcSegmentReader --serve` JVM for one node and one schema file, kept for many reads.

    Starting the JVM and initialising Cassandra's offline tooling takes about a second: a run reads
    many ranges (continuous runs read for as long as they live), so the reader stays up and is asked
    for one range at a time on its stdin. A read's lines are handed over as they arrive, so Python
    decodes them while Java is still reading (the two use both cores). The process ends when its
    stdin closes: at close(), or when this process dies.
    """

    def __init__(self, cassandra_yaml: Path, schema_file: Path) -> None:
        self.schema_file = schema_file
        self._cassandra_yaml = cassandra_yaml
        # stderr goes to a file nobody names: a pipe nobody reads would block the reader when full.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                ["java", f"@{_ARGFILE}", *_LONG_LIVED_JVM_OPTIONS, _MAIN_CLASS, "--serve", str(cassandra_yaml),
                 str(schema_file)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )  # fmt: skip
        except FileNotFoundError:
            self._stderr.close()
            raise SegmentReadError(
                "java is not on this machine's PATH: the Cassandra segment reader needs a JDK 17"
                " (Debian package openjdk-17-jre-headless)"
            ) from None
        # A read whose lines were not all taken leaves them in the pipe: the process cannot serve again.
        self._mid_read = False

    @property
    def usable(self) -> bool:
        return not self._mid_read and self._process.poll() is None

    def lines(self, segment: CdcSegment, start: int, max_mutations: int) -> Iterator[dict[str, Any]]:
        """The read's lines, parsed, as the reader writes them; the last one is its `end` line.

        Raises SegmentReadError when the reader fails or ends without an end line."""
        where = f"segment {segment.path.name} ({start}, {segment.durable_offset}]"
        if not self.usable:
            raise SegmentReadError(f"{where}: the reader process is not usable any more; open a new one")
        assert self._process.stdin is not None and self._process.stdout is not None
        request = f"{segment.path}\t{start}\t{segment.durable_offset}\t{max_mutations}\n"
        self._mid_read = True
        try:
            self._process.stdin.write(request.encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            raise self._failure(where) from None
        for raw in self._process.stdout:
            line: dict[str, Any] = orjson.loads(raw)
            yield line
            if line.get("kind") == "end":
                self._mid_read = False
                return
        raise self._failure(where)

    def _failure(self, where: str) -> SegmentReadError:
        code = self._process.wait()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")
        return SegmentReadError(f"{where}: the reader exited with {code} before its end line: {stderr[-2000:]}")

    def close(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass  # it had ended already
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # Mid-read, writing into a pipe nobody empties: end it.
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SegmentReaderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_segment(
    cassandra_yaml: Path, schema_file: Path, segment: CdcSegment, start: int, max_mutations: int
) -> SegmentRead:
    """The CDC table changes in (start, durable offset] of `segment`, at most `max_mutations` entries,
    read by a reader process of its own (tests and tools; the source keeps one process)."""
    where = f"segment {segment.path.name} ({start}, {segment.durable_offset}]"
    if not _ARGFILE.exists():
        raise SegmentReadError(f"{where}: the reader is not built; run {READER_DIR / 'build.sh'}")
    result = SegmentRead()
    with SegmentReaderProcess(cassandra_yaml, schema_file) as reader:
        for entry in reader.lines(segment, start, max_mutations):
            kind = entry.get("kind")
            if kind == "change":
                result.changes.append(entry)
            elif kind == "error":
                result.errors.append(entry)
            elif kind == "end":
                result.end = entry
    return result
