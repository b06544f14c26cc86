"""The MySQL source keeps one binlog dump and one control connection for a run's batches, and opens a
new dump from the checkpoint (through the checks a batch starts with) when the kept one broke."""

from __future__ import annotations

import time

import pytest

from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.defs.resource_keys import source_key
from cdc_pipeline.sources.mysql.change_source import MySqlChangeSource
from cdc_pipeline.sources.mysql.positions import BinlogPosition, as_binlog_position
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline_tests.harness import SOURCE, PipelineHarness

TRANSACTIONS = 12


@pytest.fixture
def source(harness: PipelineHarness) -> MySqlChangeSource:
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    opened: MySqlChangeSource = harness.resources()[source_key(SOURCE)].change_source(
        SOURCE, harness.pipeline.sources[SOURCE]
    )
    yield opened
    opened.close()


def _status(harness: PipelineHarness, name: str) -> int:
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        return int(cursor.fetchone()[1])


def _dump_threads(harness: PipelineHarness) -> set[int]:
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        return {int(row[0]) for row in cursor.fetchall()}


def _insert(harness: PipelineHarness, ids: range) -> None:
    harness.source_execute(*(f"INSERT INTO t VALUES ({i}, 'row {i}')" for i in ids))  # one transaction each


def _read_all(source: MySqlChangeSource, start: BinlogPosition, max_rows: int) -> tuple[list[int], int, BinlogPosition]:
    """Batches from `start` until one reaches the log's end: the ids read, the batches, where it ended."""
    ids: list[int] = []
    batches = 0
    position = start
    while True:
        head = source.high_water_mark()
        batch: ChangeBatch = source.read_batch({"sink": Checkpoint(position)}, None, max_rows)
        batches += 1
        ids += [change.values["id"] for table in batch.tables.values() for change in table.changes]
        position = as_binlog_position(batch.end.position)
        if (batch.log_read_to or batch.end.position) >= head:
            return ids, batches, position


def test_the_batches_of_a_run_share_one_dump_and_one_control_connection(
    harness: PipelineHarness, source: MySqlChangeSource
) -> None:
    start = current_binlog_position(harness.mariadb.settings)
    _insert(harness, range(TRANSACTIONS))
    before = _status(harness, "Connections")

    ids, batches, _ = _read_all(source, start, max_rows=1)

    opened = _status(harness, "Connections") - before
    assert ids == list(range(TRANSACTIONS))
    assert batches >= TRANSACTIONS
    # The control connection, the dump and its library's own connection, the catalog's reads: a
    # fixed few, where a dump per batch opened at least three connections per batch.
    assert opened <= 5, f"{opened} connections for {batches} batches"


def test_a_dump_that_broke_between_batches_is_replaced_and_nothing_is_lost_or_doubled(
    harness: PipelineHarness, source: MySqlChangeSource
) -> None:
    start = current_binlog_position(harness.mariadb.settings)
    others = _dump_threads(harness)
    _insert(harness, range(5))
    first, _, position = _read_all(source, start, max_rows=2)
    ours = _dump_threads(harness) - others
    assert len(ours) == 1, "the source's dump stays open after its batches"
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"KILL {ours.pop()}")
    _insert(harness, range(5, 11))

    second, _, _ = _read_all(source, position, max_rows=2)

    assert first + second == list(range(11))
    assert len(_dump_threads(harness) - others) == 1


def test_a_read_ends_at_a_rotated_binlog_and_after_queued_heartbeats_still_reads_what_follows(
    harness: PipelineHarness, source: MySqlChangeSource
) -> None:
    start = current_binlog_position(harness.mariadb.settings)
    _insert(harness, range(3))
    first, _, position = _read_all(source, start, max_rows=100)
    harness.source_execute("FLUSH BINARY LOGS")
    head = source.high_water_mark()  # after the new file's header events, where no commit ends

    began = time.monotonic()
    batch = source.read_batch({"sink": Checkpoint(position)}, None, 100)
    assert batch.row_count == 0
    assert batch.log_read_to is not None and batch.log_read_to >= head
    assert time.monotonic() - began < 10, "the server's heartbeat ends a read with no commit at the log's end"

    # The kept dump idles while heartbeats queue up in it; they are older than what is asked next.
    time.sleep(2)
    _insert(harness, range(3, 6))
    second, _, _ = _read_all(source, as_binlog_position(batch.end.position), max_rows=100)
    assert first + second == list(range(6))
