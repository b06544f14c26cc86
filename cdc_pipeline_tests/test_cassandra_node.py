"""The test Cassandra node is usable for CDC: writes to a table with cdc reach cdc_raw, durably indexed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cassandra import WriteFailure

from cdc_pipeline.local_servers.cassandra import CdcIndex, LocalCassandra, read_cdc_index

# Generous: with commitlog_sync batch the index is rewritten before the write returns, so the first poll
# normally succeeds; polling only covers the instant in which Cassandra truncates and rewrites the file.
INDEX_DEADLINE_SECONDS = 10.0


def _segment_id(index_file: Path) -> int:
    return int(index_file.name.removesuffix("_cdc.idx").rsplit("-", 1)[1])


def newest_cdc_index(cassandra: LocalCassandra) -> CdcIndex:
    """The index of the newest segment that holds CDC data."""
    deadline = time.monotonic() + INDEX_DEADLINE_SECONDS
    while True:
        files = sorted(cassandra.cdc_raw_dir.glob("*_cdc.idx"), key=_segment_id)
        index = read_cdc_index(files[-1]) if files else None
        if index is not None:
            return index
        assert time.monotonic() < deadline, f"no readable _cdc.idx in {cassandra.cdc_raw_dir}: {files}"
        time.sleep(0.05)


def durable_bytes(cassandra: LocalCassandra) -> bytes:
    """Every CDC segment's content up to its durable offset: what a consumer may read."""
    return b"".join(index.segment.read_bytes()[: index.offset] for index in cassandra.cdc_indexes())


def test_cdc_writes_are_linked_into_cdc_raw_with_a_growing_durable_offset(
    cassandra: LocalCassandra, cassandra_keyspace: str
) -> None:
    print(
        f"Cassandra {cassandra.release_version()} started in {cassandra.start_seconds:.1f} s, RSS "
        f"{cassandra.rss_bytes() >> 20} MiB"
    )
    assert cassandra.start_seconds is not None and cassandra.start_seconds < 60
    session = cassandra.session()
    keyspace = cassandra_keyspace
    session.execute(f"CREATE TABLE {keyspace}.orders (id int PRIMARY KEY, customer text, status text) WITH cdc = true")
    session.execute(f"CREATE TABLE {keyspace}.audit (id int PRIMARY KEY, note text)")
    insert = session.prepare(f"INSERT INTO {keyspace}.orders (id, customer, status) VALUES (?, ?, ?)")

    # Values carry the keyspace name: the node's cdc_raw may still hold earlier tests' segments.
    positions: list[tuple[int, int]] = []

    def record_position() -> None:
        index = newest_cdc_index(cassandra)
        positions.append((index.segment_id, index.offset))

    for row in range(5):
        session.execute(insert, (row, f"{keyspace}-customer-{row}", "new"))
    record_position()
    session.execute(f"UPDATE {keyspace}.orders SET status = '{keyspace}-shipped' WHERE id = 2")
    record_position()
    session.execute(f"DELETE FROM {keyspace}.orders WHERE id = 3")
    record_position()
    session.execute(
        f"INSERT INTO {keyspace}.orders (id, customer, status) VALUES (9, '{keyspace}-ttl', 'new') USING TTL 3600"
    )
    record_position()

    assert positions[0][1] > 0
    # Each acknowledged mutation (insert, one-cell update, delete, TTL'd insert) moved the durable position:
    # batch sync rewrites the index before the write returns. A segment roll-over also counts as a move.
    assert positions == sorted(set(positions)), positions

    newest = newest_cdc_index(cassandra)
    assert not newest.completed, "the segment being written is still open"
    # The segment in cdc_raw is the commit log's own file, hard-linked when the segment was created.
    assert os.path.samefile(newest.segment, cassandra.commitlog_dir / newest.segment.name)

    durable = durable_bytes(cassandra)
    for value in (f"{keyspace}-customer-0", f"{keyspace}-customer-4", f"{keyspace}-shipped", f"{keyspace}-ttl"):
        # The commit log is not compressed here, so each written cell's value is in the durable bytes.
        assert value.encode() in durable, value

    # The offset is the whole segment's durable position, not a CDC-only one: a write to a table without cdc
    # that lands in a segment holding CDC data moves it too (a consumer must skip such tables' mutations).
    before = (newest.segment_id, newest.offset)
    session.execute(f"INSERT INTO {keyspace}.audit (id, note) VALUES (1, 'no cdc')")
    after = newest_cdc_index(cassandra)
    assert (after.segment_id, after.offset) > before


def test_a_full_cdc_raw_rejects_cdc_writes_until_a_consumer_deletes_segments(
    cassandra: LocalCassandra, cassandra_keyspace: str
) -> None:
    session = cassandra.session()
    keyspace = cassandra_keyspace
    session.execute(f"CREATE TABLE {keyspace}.blobs (id int PRIMARY KEY, payload blob) WITH cdc = true")
    session.execute(f"CREATE TABLE {keyspace}.plain (id int PRIMARY KEY, payload blob)")
    insert = session.prepare(f"INSERT INTO {keyspace}.blobs (id, payload) VALUES (?, ?)")
    payload = os.urandom(200 * 1024)
    # 64 MiB of cdc_total_space holds about 320 of these; twice that bounds the loop if nothing is rejected.
    rejected: WriteFailure | None = None
    for row in range(640):
        try:
            session.execute(insert, (row, payload))
        except WriteFailure as error:
            rejected = error
            break
    assert rejected is not None, (
        f"cdc_raw never filled: {sum(p.stat().st_size for p in cassandra.cdc_raw_dir.iterdir())}"
    )
    # Only tables with cdc are refused: the rest of the node keeps writing.
    session.execute(f"INSERT INTO {keyspace}.plain (id, payload) VALUES (1, 0x00)")

    assert cassandra.discard_completed_cdc_segments() > 0
    # Cassandra re-measures cdc_raw at most every cdc_free_space_check_interval (250 ms): retry until it has.
    deadline = time.monotonic() + INDEX_DEADLINE_SECONDS
    while True:
        try:
            session.execute(insert, (10_000, b"accepted again"))
            break
        except WriteFailure:
            assert time.monotonic() < deadline, "CDC writes still refused after the segments were deleted"
            time.sleep(0.1)
