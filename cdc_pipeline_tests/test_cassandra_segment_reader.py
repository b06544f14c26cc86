"""The CDC segment reader (Cassandra's own commit-log reader, in Java) against a real Cassandra 5 node.

Each change is written with an explicit write time, so the test knows which cell, row, range or
partition each decoded line must describe, independently of the reader's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.sources.cassandra.segment_reader import (
    SegmentRead,
    cdc_segments,
    read_segment,
    write_schema_file,
)

T0 = 1_700_000_000_000_000  # microseconds: every write below is T0 + its number


def _read_everything(cassandra: LocalCassandra, schema: Path, batch: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every segment in cdc_raw, `batch` entries per reader run, each run resuming at the previous end."""
    changes: list[dict[str, Any]] = []
    errors: list[Any] = []
    for segment in cdc_segments(cassandra.cdc_raw_dir):
        position = 0
        while position < segment.durable_offset:
            read: SegmentRead = read_segment(cassandra.base_dir / "cassandra.yaml", schema, segment, position, batch)
            changes += read.changes
            errors += read.errors
            assert read.end["position"] > position, read.end
            position = read.end["position"]
    return changes, errors


def test_every_change_kind_decodes_with_its_write_time(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(
        f"CREATE TABLE {ks}.orders (region text, customer int, day date, seq int, amount decimal, note text,"
        " PRIMARY KEY ((region, customer), day, seq)) WITH cdc = true"
    )
    session.execute(
        f"CREATE TABLE {ks}.profiles (id uuid PRIMARY KEY, tags set<text>, scores list<int>, attrs map<text, int>)"
        " WITH cdc = true"
    )
    session.execute(f"CREATE TABLE {ks}.plain (id int PRIMARY KEY, v text)")  # no cdc: never reported
    profile = "5b6962dd-3f90-4c93-8f61-eabfa4a5e3b9"
    writes = [
        f"INSERT INTO {ks}.orders (region, customer, day, seq, amount, note) VALUES ('eu', 7, '2024-05-06', 1, 12.50,"
        f" 'first') USING TIMESTAMP {T0 + 1}",
        f"UPDATE {ks}.orders USING TIMESTAMP {T0 + 2} SET note = 'changed'"
        " WHERE region = 'eu' AND customer = 7 AND day = '2024-05-06' AND seq = 1",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 7, '2024-05-07', 2, 'ttl')"
        f" USING TIMESTAMP {T0 + 3} AND TTL 3600",
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 4}"
        " WHERE region = 'eu' AND customer = 7 AND day = '2024-05-06' AND seq = 1",
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 5}"
        " WHERE region = 'eu' AND customer = 7 AND day = '2024-05-06' AND seq >= 10 AND seq < 20",
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 6} WHERE region = 'us' AND customer = 1",
        f"INSERT INTO {ks}.plain (id, v) VALUES (1, 'not captured') USING TIMESTAMP {T0 + 7}",
        f"INSERT INTO {ks}.profiles (id, tags, scores, attrs) VALUES ({profile}, {{'a', 'b'}}, [1], {{'k': 1}})"
        f" USING TIMESTAMP {T0 + 8}",
        f"UPDATE {ks}.profiles USING TIMESTAMP {T0 + 9} SET scores = scores + [2], attrs['j'] = 5,"
        f" tags = tags - {{'a'}} WHERE id = {profile}",
    ]
    for statement in writes:
        session.execute(statement)
    schema = write_schema_file(session, [ks], tmp_path / "schema.json")

    changes, errors = _read_everything(cassandra, schema, batch=4)
    assert errors == []
    ours = [change for change in changes if change["keyspace"] == ks]
    by_time: dict[int, dict[str, Any]] = {}
    for change in ours:
        for stamp in _write_times(change):
            by_time.setdefault(stamp - T0, change)
    # Every write but the one to the table without cdc, each exactly once.
    assert sorted(by_time) == [1, 2, 3, 4, 5, 6, 8, 9], sorted(by_time)
    assert len(ours) == 8 and all(change["table"] in ("orders", "profiles") for change in ours)

    insert = by_time[1]
    assert insert["partition_key"] == {"region": "eu", "customer": 7}
    (row,) = insert["rows"]
    assert row["clustering"] == {"day": "2024-05-06", "seq": 1}
    assert {cell["column"]: cell["value"] for cell in row["cells"]} == {"amount": "12.50", "note": "first"}

    (update_row,) = by_time[2]["rows"]  # only the changed cell travels
    assert [(cell["column"], cell["value"]) for cell in update_row["cells"]] == [("note", "changed")]

    (ttl_row,) = by_time[3]["rows"]
    assert ttl_row["liveness"]["ttl"] == 3600 and ttl_row["cells"][0]["ttl"] == 3600

    (deleted_row,) = by_time[4]["rows"]
    assert deleted_row["deletion"]["timestamp"] == T0 + 4 and deleted_row["cells"] == []

    (tombstone,) = by_time[5]["range_tombstones"]
    assert tombstone["start"] == {"clustering": {"day": "2024-05-06", "seq": 10}, "inclusive": True}
    assert tombstone["end"] == {"clustering": {"day": "2024-05-06", "seq": 20}, "inclusive": False}

    assert by_time[6]["partition_key"] == {"region": "us", "customer": 1}
    assert by_time[6]["partition_deletion"]["timestamp"] == T0 + 6

    (collections,) = by_time[9]["rows"]
    cells = {cell["column"]: cell for cell in collections["cells"]}
    assert [element["value"] for element in cells["scores"]["elements"]] == [2]
    assert [(e["path"], e["value"]) for e in cells["attrs"]["elements"]] == [("j", 5)]
    assert [(e["path"], e["tombstone"]) for e in cells["tags"]["elements"]] == [("a", True)]

    # Reading in batches of 4 entries or all at once gives the same lines.
    assert _read_everything(cassandra, schema, batch=10**6)[0] == changes


def _write_times(change: dict[str, Any]) -> list[int]:
    """The write times a change line carries, wherever they sit in it."""
    stamps = []
    if "partition_deletion" in change:
        stamps.append(change["partition_deletion"]["timestamp"])
    stamps += [tombstone["timestamp"] for tombstone in change.get("range_tombstones", [])]
    for row in change.get("rows", []):
        if "deletion" in row:
            stamps.append(row["deletion"]["timestamp"])
        for cell in row["cells"]:
            # (A whole-collection write also carries a collection tombstone one microsecond older.)
            stamps += [e["timestamp"] for e in cell.get("elements", [])] or [cell.get("timestamp", 0)]
    return [stamp for stamp in stamps if stamp]
