"""WAL positions (LSNs) and the `_version` numbers of PostgreSQL changes: pure functions, tested alone."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import PositionError, StoredPosition
from cdc_pipeline.sources.mysql.positions import BinlogPosition
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber, as_lsn, check_wal_version_room, wal_row_version


def test_lsn_text_round_trips_and_orders_by_value() -> None:
    for text in ("0/0", "0/16B3748", "16/B374D848", "FFFFFFFF/FFFFFFFF"):
        assert str(LogSequenceNumber.parse(text)) == text
    assert LogSequenceNumber.parse("1/0") > LogSequenceNumber.parse("0/FFFFFFFF")
    assert LogSequenceNumber.parse("0/10").value == 16


def test_a_position_a_sink_stored_reads_back_as_the_source_s_own() -> None:
    lsn = LogSequenceNumber(0x16_B374D848)
    stored = StoredPosition.of(lsn)
    assert (stored.text, stored.order, stored.version_floor) == ("16/B374D848", lsn.value, lsn.version_floor)
    assert as_lsn(stored) == lsn
    assert Checkpoint(stored) == Checkpoint(lsn)
    with pytest.raises(PositionError, match="'0/xyz'"):
        LogSequenceNumber.parse("0/xyz")
    with pytest.raises(PositionError, match="'mysql-bin.000042:1234'"):
        as_lsn(StoredPosition.of(BinlogPosition("mysql-bin.000042", 1234)))


def test_versions_follow_commit_order_across_transactions() -> None:
    # A transaction committed at 0/1000 whose commit record ends at 0/1030, the next committing there.
    first_commit, first_end, next_commit = 0x1000, 0x1030, 0x1030
    room = (first_end - first_commit) << 16
    check_wal_version_room(first_commit, first_end, room)
    last_of_first = wal_row_version(first_commit, room - 1)
    assert last_of_first < wal_row_version(next_commit, 0)
    # A sink whose checkpoint is the first transaction's end skips exactly the first transaction.
    floor = LogSequenceNumber(first_end).version_floor
    assert last_of_first < floor <= wal_row_version(next_commit, 0)


def test_a_transaction_too_large_for_its_version_range_is_refused_naming_it() -> None:
    with pytest.raises(PositionError, match=r"committed at 0/1000 changes 3145729 rows"):
        check_wal_version_room(0x1000, 0x1030, (0x30 << 16) + 1)
    with pytest.raises(PositionError, match="past"):
        _ = LogSequenceNumber(2**62).version_floor
