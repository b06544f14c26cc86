"""Standalone check of the CDC segment reader against a real Cassandra 5.0 node (no other fixture).

Starts a throwaway node with CDC on (dev_node.py), creates CDC tables covering the key shapes and
types, makes one change of every kind with an explicit write time, reads every CDC segment with the
reader in small batches (each batch resumes from the previous batch's end line, as the pipeline
will), and compares the change lines with what was written, field by field. Exit 0 when all match.

    cassandra_cdc_reader/build.sh
    python3.11 -m venv .venv-dev && .venv-dev/bin/pip install cassandra-driver
    .venv-dev/bin/python cassandra_cdc_reader/smoke_test.py [--keep DIR] [--bench N] [--compression CLASS]

--bench N also writes N small mutations and reports the reader's JVM start cost and decode rate;
--compression LZ4Compressor runs the same check on a compressed commit log.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args

from dev_node import HERE, DevNode

KEYSPACE = "cdc_smoke"
READER = ["java", f"@{HERE / 'target' / 'reader.argfile'}", "cdc.pipeline.CdcSegmentReader"]
BATCH_MUTATIONS = 6  # small, so that the resume check crosses many batch boundaries

SCHEMA = [
    f"CREATE KEYSPACE {KEYSPACE} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
    f"CREATE TYPE {KEYSPACE}.address (street text, zip int, tags frozen<set<text>>)",
    f"""CREATE TABLE {KEYSPACE}.orders (
          region text, customer int, day date, seq bigint, region_note text STATIC,
          note text, amount decimal, placed timestamp, id uuid, ver timeuuid, big varint, flag boolean,
          raw blob, ratio double, f float, small smallint, tiny tinyint, t time, d duration, addr inet,
          a ascii,
          PRIMARY KEY ((region, customer), day, seq))
        WITH CLUSTERING ORDER BY (day DESC, seq ASC) AND cdc = true""",
    f"""CREATE TABLE {KEYSPACE}.profiles (
          id uuid PRIMARY KEY, tags set<text>, scores list<int>, attrs map<text, int>,
          ftags frozen<set<text>>, flist frozen<list<int>>, fmap frozen<map<int, text>>,
          home frozen<address>, work address, tup tuple<int, text>, vec vector<float, 3>)
        WITH cdc = true""",
    f"CREATE TABLE {KEYSPACE}.page_views (page text PRIMARY KEY, views counter, clicks counter) WITH cdc = true",
    f"CREATE TABLE {KEYSPACE}.plain (k int PRIMARY KEY, v text) WITH cdc = false",
    # A custom type the reader has no JSON form for: the value arrives as an error with its bytes.
    f"""CREATE TABLE {KEYSPACE}.custom (k int PRIMARY KEY,
          v 'org.apache.cassandra.db.marshal.DynamicCompositeType(s=>org.apache.cassandra.db.marshal.UTF8Type)',
          w 'org.apache.cassandra.db.marshal.LexicalUUIDType') WITH cdc = true""",
    f"CREATE TABLE {KEYSPACE}.filler (k int, c int, v text, PRIMARY KEY (k, c)) WITH cdc = true",
]

# --- expectations ------------------------------------------------------------------------------

ANY = object()


def near_now(offset: int = 0) -> Callable[[Any], bool]:
    """A node-clock time in seconds (local deletion / expiration), within a generous window."""
    return lambda v: isinstance(v, int) and abs(v - (time.time() + offset)) < 900


def is_timeuuid(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", v) is not None


def cell(value: Any, ts: int, ttl: int | None = None) -> dict:
    c = {"value": value, "timestamp": ts}
    if ttl:
        c |= {"ttl": ttl, "local_expiration_time": near_now(ttl)}
    return c


def tombstone(ts: int) -> dict:
    return {"timestamp": ts, "tombstone": True, "local_deletion_time": near_now()}


def deletion(ts: int) -> dict:
    return {"timestamp": ts, "local_deletion_time": near_now()}


def element(path: Any, value: Any, ts: int, is_set: bool = False) -> dict:
    e = {"path": path, "timestamp": ts}
    if not is_set:
        e["value"] = value
    return e


def complex_cell(kind: str, elements: list, deleted_at: int | None = None) -> dict:
    c = {"collection": kind, "elements": elements}
    if deleted_at is not None:
        c["deletion"] = deletion(deleted_at)
    return c


def row(clustering: dict | None, cells: dict, live_at: int | None = None, ttl: int | None = None,
        deleted_at: int | None = None) -> dict:
    r: dict = {"cells": cells}
    if clustering is not None:
        r["clustering"] = clustering
    if live_at is not None:
        r["liveness"] = {"timestamp": live_at}
        if ttl:
            r["liveness"] |= {"ttl": ttl, "local_expiration_time": near_now(ttl)}
    if deleted_at is not None:
        r["deletion"] = deletion(deleted_at)
    return r


def change(table: str, key: dict, rows: list, **extra: Any) -> dict:
    return {"kind": "change", "keyspace": KEYSPACE, "table": table, "table_id": ANY, "segment_id": ANY,
            "position": ANY, "partition_key": key, "rows": rows, **extra}


def match(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Differences between an expectation (ANY / predicates allowed) and a decoded line."""
    if expected is ANY:
        return []
    if callable(expected):
        return [] if expected(actual) else [f"{where}: {actual!r} fails {getattr(expected, '__name__', 'check')}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = [f"{where}.{k}: missing" for k in expected if k not in actual]
        problems += [f"{where}.{k}: unexpected {actual[k]!r}" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                problems += match(expected[k], actual[k], f"{where}.{k}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {actual!r}"]
        return [p for i, (e, a) in enumerate(zip(expected, actual)) for p in match(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) and math.isnan(expected):
        return [] if isinstance(actual, float) and math.isnan(actual) else [f"{where}: {actual!r} != NaN"]
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def by_column(line: dict) -> dict:
    """Cells keyed by column (their order in a row is Cassandra's, not the statement's)."""
    line = json.loads(json.dumps(line))
    for r in line.get("rows", []) + ([line["static_row"]] if "static_row" in line else []):
        r["cells"] = {c.pop("column"): c for c in r["cells"]}
    return line


# --- the workload: (statement, expected change lines) ----------------------------------------

T = 1_700_000_000_000_000  # write times (microseconds) are explicit, so every line is predictable
EU7 = {"region": "eu", "customer": 7}
DAY = "2024-05-06"
P1 = "6f1c1e4e-9a55-4d6b-9a4e-2f6a3c1d0b11"
TUID = "e7d5c0a0-0a1b-11ef-8000-0123456789ab"


def workload() -> list[tuple[str, list[dict]]]:
    o, p = f"{KEYSPACE}.orders", f"{KEYSPACE}.profiles"
    k = "WHERE region = 'eu' AND customer = 7"
    return [
        (f"""INSERT INTO {o} (region, customer, day, seq, note, amount, placed, id, ver, big, flag, raw, ratio,
                f, small, tiny, t, d, addr, a)
             VALUES ('eu', 7, '{DAY}', 1, 'first', 12.50, '2024-05-06 10:11:12.345+0000',
                123e4567-e89b-12d3-a456-426614174000, {TUID}, -123456789012345678901234567890, true,
                0xcafe, NaN, 1.5, -2, 3, '08:09:10.123456789', 1mo2d3h4m, '192.168.1.20', 'plain ascii')
             USING TIMESTAMP {T + 1}""",
         [change("orders", EU7, [row({"day": DAY, "seq": 1}, {
             "note": cell("first", T + 1), "amount": cell("12.50", T + 1), "placed": cell(1714990272345, T + 1),
             "id": cell("123e4567-e89b-12d3-a456-426614174000", T + 1), "ver": cell(TUID, T + 1),
             "big": cell("-123456789012345678901234567890", T + 1), "flag": cell(True, T + 1),
             "raw": cell("cafe", T + 1), "ratio": cell("NaN", T + 1), "f": cell(1.5, T + 1),
             "small": cell(-2, T + 1), "tiny": cell(3, T + 1), "t": cell("08:09:10.123456789", T + 1),
             "d": cell("1mo2d3h4m", T + 1), "addr": cell("192.168.1.20", T + 1), "a": cell("plain ascii", T + 1),
         }, live_at=T + 1)])]),
        (f"UPDATE {o} USING TIMESTAMP {T + 2} SET note = 'changed' {k} AND day = '{DAY}' AND seq = 1",
         [change("orders", EU7, [row({"day": DAY, "seq": 1}, {"note": cell("changed", T + 2)})])]),
        (f"""INSERT INTO {o} (region, customer, day, seq, note, amount) VALUES ('eu', 7, '2024-05-07', 2, 'ttl', 1E+3)
             USING TIMESTAMP {T + 3} AND TTL 3600""",
         [change("orders", EU7, [row({"day": "2024-05-07", "seq": 2}, {
             "note": cell("ttl", T + 3, ttl=3600), "amount": cell("1E+3", T + 3, ttl=3600)}, live_at=T + 3, ttl=3600)])]),
        (f"INSERT INTO {o} (region, customer, day, seq, note) VALUES ('eu', 7, '{DAY}', 3, null) USING TIMESTAMP {T + 4}",
         [change("orders", EU7, [row({"day": DAY, "seq": 3}, {"note": tombstone(T + 4)}, live_at=T + 4)])]),
        (f"DELETE note FROM {o} USING TIMESTAMP {T + 5} {k} AND day = '{DAY}' AND seq = 1",
         [change("orders", EU7, [row({"day": DAY, "seq": 1}, {"note": tombstone(T + 5)})])]),
        (f"DELETE FROM {o} USING TIMESTAMP {T + 6} {k} AND day = '{DAY}' AND seq = 3",
         [change("orders", EU7, [row({"day": DAY, "seq": 3}, {}, deleted_at=T + 6)])]),
        (f"DELETE FROM {o} USING TIMESTAMP {T + 7} {k} AND day = '{DAY}' AND seq >= 10 AND seq < 20",
         [change("orders", EU7, [], range_tombstones=[{
             "start": {"clustering": {"day": DAY, "seq": 10}, "inclusive": True},
             "end": {"clustering": {"day": DAY, "seq": 20}, "inclusive": False}, **deletion(T + 7)}])]),
        # day is DESC: "day > X" runs from the partition's first row (empty bound) to X, exclusive.
        (f"DELETE FROM {o} USING TIMESTAMP {T + 8} {k} AND day > '2024-06-01'",
         [change("orders", EU7, [], range_tombstones=[{
             "start": {"clustering": {}, "inclusive": True},
             "end": {"clustering": {"day": "2024-06-01"}, "inclusive": False}, **deletion(T + 8)}])]),
        (f"UPDATE {o} USING TIMESTAMP {T + 9} SET region_note = 'static' {k}",
         [change("orders", EU7, [], static_row={"cells": {"region_note": cell("static", T + 9)}})]),
        (f"""BEGIN BATCH USING TIMESTAMP {T + 10}
               INSERT INTO {o} (region, customer, day, seq, note) VALUES ('us', 8, '{DAY}', 1, 'b1');
               INSERT INTO {o} (region, customer, day, seq, note) VALUES ('us', 8, '{DAY}', 2, 'b2');
             APPLY BATCH""",
         [change("orders", {"region": "us", "customer": 8}, [
             row({"day": DAY, "seq": 1}, {"note": cell("b1", T + 10)}, live_at=T + 10),
             row({"day": DAY, "seq": 2}, {"note": cell("b2", T + 10)}, live_at=T + 10)])]),
        (f"DELETE FROM {o} USING TIMESTAMP {T + 11} {k}",
         [change("orders", EU7, [], partition_deletion=deletion(T + 11))]),
        (f"""INSERT INTO {p} (id, tags, scores, attrs, ftags, flist, fmap, home, work, tup, vec)
             VALUES ({P1}, {{'a', 'b'}}, [1, 2], {{'k1': 1}}, {{'x', 'y'}}, [3, 3], {{1: 'one', 2: 'two'}},
               {{street: 'Main 1', zip: 1234, tags: {{'home'}}}}, {{street: 'Dock 9', zip: 42, tags: null}},
               (5, 'five'), [1.0, 2.5, -3.0])
             USING TIMESTAMP {T + 20}""",
         [change("profiles", {"id": P1}, [row({}, {
             "tags": complex_cell("set", [element("a", None, T + 20, True), element("b", None, T + 20, True)], T + 19),
             "scores": complex_cell("list", [element(is_timeuuid, 1, T + 20), element(is_timeuuid, 2, T + 20)], T + 19),
             "attrs": complex_cell("map", [element("k1", 1, T + 20)], T + 19),
             "ftags": cell(["x", "y"], T + 20),
             "flist": cell([3, 3], T + 20),
             "fmap": cell([[1, "one"], [2, "two"]], T + 20),
             "home": cell({"street": "Main 1", "zip": 1234, "tags": ["home"]}, T + 20),
             # a non-frozen UDT: one cell per field; the null field has none (the deletion covers it)
             "work": complex_cell("udt", [element("street", "Dock 9", T + 20), element("zip", 42, T + 20)], T + 19),
             "tup": cell([5, "five"], T + 20),
             "vec": cell([1.0, 2.5, -3.0], T + 20),
         }, live_at=T + 20)])]),
        (f"UPDATE {p} USING TIMESTAMP {T + 21} SET scores = scores + [4] WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"scores": complex_cell("list", [element(is_timeuuid, 4, T + 21)])})])]),
        (f"UPDATE {p} USING TIMESTAMP {T + 22} SET attrs['k2'] = 5 WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"attrs": complex_cell("map", [element("k2", 5, T + 22)])})])]),
        (f"UPDATE {p} USING TIMESTAMP {T + 23} SET tags = tags - {{'a'}} WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"tags": complex_cell("set", [{"path": "a", **tombstone(T + 23)}])})])]),
        (f"UPDATE {p} USING TIMESTAMP {T + 24} SET attrs = {{'only': 1}} WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"attrs": complex_cell("map", [element("only", 1, T + 24)], T + 23)})])]),
        (f"DELETE attrs['only'] FROM {p} USING TIMESTAMP {T + 25} WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"attrs": complex_cell("map", [{"path": "only", **tombstone(T + 25)}])})])]),
        (f"UPDATE {p} USING TIMESTAMP {T + 26} SET work.zip = 99 WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"work": complex_cell("udt", [element("zip", 99, T + 26)])})])]),
        (f"UPDATE {p} USING TIMESTAMP {T + 27} SET ftags = {{'z'}}, home = null WHERE id = {P1}",
         [change("profiles", {"id": P1}, [row({}, {"ftags": cell(["z"], T + 27), "home": tombstone(T + 27)})])]),
        # Counters take no client write time; the cell holds this node's total after the update.
        (f"UPDATE {KEYSPACE}.page_views SET views = views + 3 WHERE page = 'home'",
         [change("page_views", {"page": "home"}, [row({}, {"views": {"counter": True, "value": 3, "timestamp": ANY}})])]),
        (f"UPDATE {KEYSPACE}.page_views SET views = views + 2, clicks = clicks - 1 WHERE page = 'home'",
         [change("page_views", {"page": "home"}, [row({}, {
             "views": {"counter": True, "value": 5, "timestamp": ANY},
             "clicks": {"counter": True, "value": -1, "timestamp": ANY}})])]),
        # cdc = false: in the segment, but only counted in the end line's skipped_updates
        (f"INSERT INTO {KEYSPACE}.plain (k, v) VALUES (1, 'not captured') USING TIMESTAMP {T + 30}", []),
        (f"""INSERT INTO {KEYSPACE}.custom (k, v, w) VALUES (1, 0x8073000161, 0x123e4567e89b12d3a456426614174000)
             USING TIMESTAMP {T + 31}""",
         [change("custom", {"k": 1}, [row({}, {"v": cell(None, T + 31), "w": cell("123e4567-e89b-12d3-a456-426614174000", T + 31)},
                                          live_at=T + 31)],
                 errors=[{"at": "/rows/0/cells/0/value", "error": lambda e: e.startswith("no JSON form for 'org.apache"),
                          "raw_hex": "8073000161"}])]),
    ]


# --- running the reader ------------------------------------------------------------------------


def durable_offset(idx: Path) -> tuple[int, bool]:
    lines = idx.read_text().split()
    return int(lines[0]), "COMPLETED" in lines[1:]


def run_reader(node: DevNode, schema: Path, segment: Path, start: int, end: int, limit: int) -> list[dict]:
    done = subprocess.run([*READER, str(node.conf_dir), str(schema), str(segment), str(start), str(end), str(limit)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reader exited {done.returncode}: {done.stderr}")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    if not lines or lines[-1]["kind"] != "end":
        raise RuntimeError(f"no end line from the reader: {done.stdout[-500:]} {done.stderr}")
    return lines


def segments(node: DevNode) -> list[tuple[Path, int]]:
    """CDC segments that have an index file, oldest first, with their durable offsets."""
    found = []
    for idx in sorted(node.cdc_raw.glob("*_cdc.idx"), key=lambda p: int(p.name.split("-")[-1].split("_")[0])):
        found.append((idx.with_name(idx.name.replace("_cdc.idx", ".log")), durable_offset(idx)[0]))
    return found


def read_segment(node: DevNode, schema: Path, segment: Path, end: int, limit: int,
                 stop_after: int | None = None) -> tuple[list[dict], list[dict]]:
    """A segment's lines, batch after batch, each resuming where the previous end line says."""
    lines, ends, position = [], [], 0
    while position < (stop_after or end):
        batch = run_reader(node, schema, segment, position, end, limit)
        last = batch[-1]
        if last["position"] <= position or last["position"] > end:
            raise RuntimeError(f"bad progress in {segment.name} from {position}: {last}")
        ends.append(last)
        lines += batch[:-1]
        position = last["position"]
    if stop_after is None and not ends[-1]["complete"]:
        raise RuntimeError(f"{segment.name} read to {position} but not complete: {ends[-1]}")
    return lines, ends


def schema_file(cluster: Cluster, session, path: Path, dropped_columns: bool = True) -> None:
    """What the pipeline's Python side will pass: CQL from the driver, table ids and dropped columns
    from system_schema."""
    keyspace = cluster.metadata.keyspaces[KEYSPACE]
    tables = [
        {"keyspace": KEYSPACE, "table": r.table_name, "id": str(r.id), "cql": keyspace.tables[r.table_name].as_cql_query()}
        for r in session.execute("SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", [KEYSPACE])
    ]
    if dropped_columns:
        for table in tables:
            table["dropped_columns"] = [
                # dropped_time is a CQL timestamp (milliseconds); Cassandra compares it in microseconds
                {"name": r.column_name, "type": r.type, "kind": r.kind,
                 "dropped_time": round(r.dropped_time.replace(tzinfo=timezone.utc).timestamp() * 1000) * 1000}
                for r in session.execute("SELECT column_name, type, kind, dropped_time FROM system_schema.dropped_columns "
                                         "WHERE keyspace_name = %s AND table_name = %s", [KEYSPACE, table["table"]])
            ]
    types = [{"keyspace": KEYSPACE, "cql": t.as_cql_query()} for t in keyspace.user_types.values()]
    path.write_text(json.dumps({"types": types, "tables": tables}, indent=1))


def dropped_column_check(node: DevNode, root: Path, first: dict) -> list[str]:
    """After ALTER TABLE ... DROP, mutations written before it name a column the table no longer has:
    with system_schema.dropped_columns in the schema file they decode (the dropped column's cells are
    left out, as Cassandra itself does); without, the mutation is an error line with its raw bytes."""
    cluster = Cluster(["127.0.0.1"], port=node.native_port)
    session = cluster.connect()
    session.execute(f"ALTER TABLE {KEYSPACE}.orders DROP a")
    cluster.refresh_schema_metadata()
    with_drops, without_drops = root / "schema-dropped.json", root / "schema-no-dropped.json"
    schema_file(cluster, session, with_drops)
    schema_file(cluster, session, without_drops, dropped_columns=False)
    cluster.shutdown()

    segment, end = next((s, e) for s, e in segments(node) if segment_id(s) == first["segment_id"])
    problems = []
    decoded = [x for x in run_reader(node, with_drops, segment, 0, end, 10**9) if x.get("position") == first["position"]]
    expected = json.loads(json.dumps(first))
    expected["rows"][0]["cells"] = [c for c in expected["rows"][0]["cells"] if c["column"] != "a"]
    if decoded != [expected]:
        problems.append(f"dropped column, with dropped_columns: {decoded}")
    failed = [x for x in run_reader(node, without_drops, segment, 0, end, 10**9) if x.get("position") == first["position"]]
    if (len(failed) != 1 or failed[0].get("reason") != "undecodable_mutation"
            or "Unknown column a" not in failed[0]["error"] or not failed[0]["raw_hex"]):
        problems.append(f"dropped column, without dropped_columns: {failed}")
    print("dropped column check: decodes with dropped_columns, an error line with the raw mutation without")
    return problems


def unknown_table_check(node: DevNode, schema: Path, changes: list[dict]) -> list[str]:
    """A table missing from the schema file: each of its mutations is an error line naming its id."""
    tables = json.loads(schema.read_text())
    profiles = next(t for t in tables["tables"] if t["table"] == "profiles")
    tables["tables"].remove(profiles)
    partial = schema.with_name("schema-without-profiles.json")
    partial.write_text(json.dumps(tables))
    segment, end = next((s, e) for s, e in segments(node) if segment_id(s) == changes[0]["segment_id"])
    lines = run_reader(node, partial, segment, 0, end, 10**9)
    unknown = [x for x in lines if x["kind"] == "error"]
    expected = [x["position"] for x in changes if x["table"] == "profiles"]
    if ([x["position"] for x in unknown] != expected or {x["reason"] for x in unknown} != {"unknown_table"}
            or {x["table_id"] for x in unknown} != {profiles["id"]}):
        return [f"unknown table: {unknown}"]
    print(f"unknown table check: {len(unknown)} error lines with the table id, at the mutations' positions")
    return []


def check(node: DevNode, root: Path) -> bool:
    cluster = Cluster(["127.0.0.1"], port=node.native_port)
    session = cluster.connect()
    for statement in SCHEMA:
        session.execute(statement)
    cluster.refresh_schema_metadata()
    schema = root / "schema.json"
    schema_file(cluster, session, schema)

    expected = []
    for statement, lines in workload():
        session.execute(statement)
        expected += lines
    # Enough rows to fill several 1 MiB segments: completed segments and the live one are both read.
    filler = session.prepare(f"INSERT INTO {KEYSPACE}.filler (k, c, v) VALUES (?, ?, ?)")
    execute_concurrent_with_args(session, filler, [(i % 50, i, "x" * 200) for i in range(6000)], concurrency=32)
    cluster.shutdown()

    # Each segment in one call: the lines to compare (the last segment is the live one).
    lines, ends = [], []
    for segment, end in segments(node):
        more_lines, more_ends = read_segment(node, schema, segment, end, 10**9)
        lines += more_lines
        ends += more_ends
    errors = [line for line in lines if line["kind"] == "error"]
    changes = [line for line in lines if line["kind"] == "change" and line["table"] != "filler"]
    fillers = [line for line in lines if line["kind"] == "change" and line["table"] == "filler"]

    problems = [f"error line: {json.dumps(e)[:400]}" for e in errors]
    if len(changes) != len(expected):
        problems.append(f"{len(changes)} change lines, expected {len(expected)}")
    for i, (want, got) in enumerate(zip(expected, changes)):
        problems += match(want, by_column(got), f"change[{i}]")
    if len(fillers) != 6000:
        problems.append(f"{len(fillers)} filler changes, expected 6000")
    if not any(e["skipped_updates"].get(f"{KEYSPACE}.plain") for e in ends):
        problems.append("the cdc = false insert is not counted as skipped")

    # The same lines again, in batches of a few mutations, up to the workload's last change: what
    # the pipeline does, each batch starting at the previous end line's position.
    last = changes[-1] if changes else None
    if last:
        segment, end = next((s, e) for s, e in segments(node) if s.name.endswith(f"-{last['segment_id']}.log"))
        batched, batch_ends = read_segment(node, schema, segment, end, BATCH_MUTATIONS, stop_after=last["position"])
        one_shot = [line for line in lines if line["segment_id"] == last["segment_id"]][:len(batched)]
        if batched != one_shot:
            problems.append(f"{len(batch_ends)} batches of {BATCH_MUTATIONS} differ from one read of the segment")
        print(f"resume check: {len(batch_ends)} batches of <= {BATCH_MUTATIONS} mutations gave the same {len(batched)} lines")
    first, first_end = segments(node)[0]
    empty = run_reader(node, schema, first, first_end, first_end, 10)  # start == end: nothing to read
    if empty[-1]["position"] != empty[-1]["end"] or len(empty) != 1:
        problems.append(f"empty range: {empty}")
    completed = sum(durable_offset(p)[1] for p in node.cdc_raw.glob("*_cdc.idx"))
    print(f"{len(changes)} changes + {len(fillers)} filler changes from {len(ends)} segments ({completed} completed)")
    problems += live_check(node, schema)
    if changes:
        problems += unknown_table_check(node, schema, changes)
        problems += dropped_column_check(node, root, changes[0])
    for p in problems:
        print("MISMATCH", p)
    return not problems


def segment_id(path: Path) -> int:
    return int(path.name.split("-")[-1].split("_")[0].split(".")[0])


def idx_state(idx: Path) -> tuple[int, bool] | None:
    """The index is rewritten in place (truncated, then written): an empty read means "ask again"."""
    lines = idx.read_text().split()
    return (int(lines[0]), "COMPLETED" in lines[1:]) if lines else None


def live_check(node: DevNode, schema: Path, rows: int = 20000, limit: int = 2000) -> list[str]:
    """The pipeline's loop while a client keeps writing: follow each segment's durable offset, move on
    once a segment is COMPLETED and read to its end; every row written must arrive exactly once."""
    import threading

    cluster = Cluster(["127.0.0.1"], port=node.native_port)
    session = cluster.connect()
    insert = session.prepare(f"INSERT INTO {KEYSPACE}.filler (k, c, v) VALUES (?, ?, ?)")
    live_k = 1_000_000
    writer = threading.Thread(target=lambda: execute_concurrent_with_args(
        session, insert, [(live_k, i, f"live {i}") for i in range(rows)], concurrency=8))
    writer.start()

    seen: list[int] = []
    problems: list[str] = []
    batches = past_end = 0
    current, position = None, 0
    while True:
        writing = writer.is_alive()
        indexed = sorted((segment_id(p), p) for p in node.cdc_raw.glob("*_cdc.idx"))
        if current is None:
            current, position = indexed[0][0], 0
        idx = dict(indexed)[current]
        state = idx_state(idx)
        if state is None:
            continue
        offset, completed = state
        if position < offset:
            lines = run_reader(node, schema, idx.with_name(idx.name.replace("_cdc.idx", ".log")), position, offset, limit)
            batches += 1
            position = lines[-1]["position"]
            past_end += lines[-1]["errors_past_end"]
            problems += [f"live: {json.dumps(x)[:300]}" for x in lines[:-1]
                         if x["kind"] == "error" or (x["table"] == "filler" and "errors" in x)]
            seen += [x["rows"][0]["clustering"]["c"] for x in lines
                     if x["kind"] == "change" and x["table"] == "filler" and x["partition_key"]["k"] == live_k]
            continue
        later = [sid for sid, _ in indexed if sid > current]
        if completed and later:
            current, position = later[0], 0
        elif not writing and not later:
            break  # caught up with the last durable offset after the last write was acknowledged
        else:
            time.sleep(0.2)
    cluster.shutdown()
    if sorted(seen) != list(range(rows)):
        problems.append(f"live: {len(seen)} rows arrived ({len(set(seen))} distinct), {rows} written")
    print(f"live check: {rows} rows written while reading, {len(seen)} arrived in {batches} batches "
          f"({past_end} read errors past a durable offset, ignored)")
    return problems


def bench(node: DevNode, root: Path, mutations: int) -> None:
    """JVM start cost (an empty range) and decode rate (whole completed segments in one call)."""
    cluster = Cluster(["127.0.0.1"], port=node.native_port)
    session = cluster.connect()
    insert = session.prepare(f"INSERT INTO {KEYSPACE}.filler (k, c, v) VALUES (?, ?, ?)")
    execute_concurrent_with_args(session, insert, [(i % 1000, i, f"value {i}") for i in range(mutations)], concurrency=64)
    cluster.shutdown()
    schema = root / "schema.json"
    idx = max(node.cdc_raw.glob("*_cdc.idx"), key=lambda p: p.stat().st_mtime)
    segment = idx.with_name(idx.name.replace("_cdc.idx", ".log"))

    starts = []
    for _ in range(5):
        began = time.monotonic()
        run_reader(node, schema, segment, 0, 0, 1)
        starts.append((time.monotonic() - began) * 1000)
    print(f"JVM start + init + schema, empty range: median {statistics.median(starts):.0f} ms of {[round(s) for s in starts]}")

    total, elapsed = 0, 0.0
    for idx in node.cdc_raw.glob("*_cdc.idx"):
        end, completed = durable_offset(idx)
        if not completed:
            continue
        began = time.monotonic()
        batch = run_reader(node, schema, idx.with_name(idx.name.replace("_cdc.idx", ".log")), 0, end, 10_000_000)
        elapsed += time.monotonic() - began - statistics.median(starts) / 1000
        total += batch[-1]["mutations"]
    if total:
        print(f"decoded {total} mutations of completed segments: {total / elapsed:,.0f} mutations/s after the start cost")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run the node in this directory and leave it there")
    parser.add_argument("--bench", type=int, default=0, metavar="N", help="also benchmark with N more mutations")
    parser.add_argument("--compression", metavar="CLASS", help="compress the commit log, e.g. LZ4Compressor")
    args = parser.parse_args()
    if not (HERE / "target" / "reader.argfile").exists():
        subprocess.run([str(HERE / "build.sh")], check=True)
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="cdc-reader-smoke-"))
    root.mkdir(parents=True, exist_ok=True)
    node = DevNode(root, compression=args.compression)
    began = time.monotonic()
    node.start()
    print(f"node up in {time.monotonic() - began:.1f} s on port {node.native_port} ({root})")
    try:
        ok = check(node, root)
        if args.bench:
            bench(node, root, args.bench)
    finally:
        node.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
