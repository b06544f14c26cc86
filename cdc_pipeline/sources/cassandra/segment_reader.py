"""Runs the Java CDC segment reader (`cassandra_cdc_reader/`) over a range of one commit-log segment.

The Python side owns the offsets: it finds CDC segments and their durable offsets in `cdc_raw`,
hands the reader a schema file (CQL and table ids from the live node) and a byte range, and gets
one JSON line per partition update back, ending with an `end` line that says where to resume.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cassandra.cluster import Session

from cdc_pipeline.sources.cassandra.cql_types import timestamp_micros

# The repository's reader, next to the package in a checkout; an installed package (the Docker
# image) names its built copy in $CDC_CASSANDRA_READER_DIR.
READER_DIR = Path(
    os.environ.get("CDC_CASSANDRA_READER_DIR") or Path(__file__).resolve().parents[3] / "cassandra_cdc_reader"
)
_ARGFILE = READER_DIR / "target" / "reader.argfile"
_MAIN_CLASS = "cdc.pipeline.CdcSegmentReader"


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


def read_segment(
    cassandra_yaml: Path, schema_file: Path, segment: CdcSegment, start: int, max_mutations: int
) -> SegmentRead:
    """The CDC table changes in (start, durable offset] of `segment`, at most `max_mutations` entries."""
    where = f"segment {segment.path.name} ({start}, {segment.durable_offset}]"
    if not _ARGFILE.exists():
        raise SegmentReadError(f"{where}: the reader is not built; run {READER_DIR / 'build.sh'}")
    done = subprocess.run(
        ["java", f"@{_ARGFILE}", _MAIN_CLASS, str(cassandra_yaml), str(schema_file), str(segment.path),
         str(start), str(segment.durable_offset), str(max_mutations)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SegmentReadError(f"{where}: the reader exited with {done.returncode}: {done.stderr[-2000:]}")
    result = SegmentRead()
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        kind = entry.get("kind")
        if kind == "change":
            result.changes.append(entry)
        elif kind == "error":
            result.errors.append(entry)
        elif kind == "end":
            result.end = entry
    if not result.end:
        raise SegmentReadError(f"{where}: the reader wrote no end line; stderr: {done.stderr[-2000:]}")
    return result
