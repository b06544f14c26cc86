"""Checkpoints as sinks keep them: opaque text, order and version floor, read back by the source
that wrote them; and rows of the form before (position, gtid, server_id) read into the same
checkpoints. Pure functions, tested alone; test_checkpoint_migration.py runs a pipeline over
checkpoint tables of the form before."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import PositionError, StoredPosition
from cdc_pipeline.sinks.checkpoint_rows import checkpoint_from_row, checkpoint_row
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition, as_commit_log_position
from cdc_pipeline.sources.mysql.gtid import Gtid
from cdc_pipeline.sources.mysql.positions import BinlogPosition, GtidPosition, binlog_checkpoint
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber

GTID_POSITION = GtidPosition(BinlogPosition("mysql-bin.000042", 1234), Gtid(0, 1, 77), 4379)
POSITIONS = [
    BinlogPosition("mysql-bin.000042", 1234),
    GTID_POSITION,
    LogSequenceNumber(0x16_B374D848),
    CommitLogPosition(1_733_580_000_000, 4096),
]


@pytest.mark.parametrize("position", POSITIONS, ids=lambda p: type(p).__name__)
def test_a_checkpoint_survives_a_sink_row_in_the_current_form(position: object) -> None:
    checkpoint = Checkpoint(position)  # type: ignore[arg-type]
    text, order, floor = checkpoint_row(checkpoint)
    back = checkpoint_from_row(text, order, floor, None, None)
    assert back == checkpoint and back.version_floor == checkpoint.version_floor
    assert not back.is_after(checkpoint) and not checkpoint.is_after(back)


@pytest.mark.parametrize(
    ("row", "position"),
    [
        (("mysql-bin.000042:1234", None, None), BinlogPosition("mysql-bin.000042", 1234)),
        # Position mode wrote the server id too; only a GTID checkpoint needs it.
        (("mysql-bin.000042:1234", None, 4379), BinlogPosition("mysql-bin.000042", 1234)),
        (("mysql-bin.000042:1234", "0-1-77", 4379), GTID_POSITION),
        (("16/B374D848", None, None), LogSequenceNumber(0x16_B374D848)),
        (("cdc:1733580000000:4096", None, None), CommitLogPosition(1_733_580_000_000, 4096)),
    ],
)
def test_a_row_of_the_form_before_reads_as_the_checkpoint_it_held(
    row: tuple[str, str | None, int | None], position: object
) -> None:
    text, gtid, server_id = row
    assert checkpoint_from_row(text, None, None, gtid, server_id) == Checkpoint(position)  # type: ignore[arg-type]


def test_each_source_reads_its_own_text_back_and_refuses_another_kind() -> None:
    assert binlog_checkpoint(StoredPosition.of(GTID_POSITION)) == GTID_POSITION
    assert binlog_checkpoint(StoredPosition.of(POSITIONS[0])) == POSITIONS[0]
    assert as_commit_log_position(StoredPosition.of(POSITIONS[3])) == POSITIONS[3]
    with pytest.raises(PositionError, match="16/B374D848"):
        binlog_checkpoint(StoredPosition.of(POSITIONS[2]))


def test_orders_follow_each_log_and_gtids_across_a_failover() -> None:
    assert Checkpoint(BinlogPosition("mysql-bin.000043", 4)).is_after(Checkpoint(BinlogPosition("mysql-bin.000042", 9)))
    # After a failover the new server's offsets are smaller; the GTID still orders the checkpoints.
    promoted = GtidPosition(BinlogPosition("mysql-bin.000001", 4), Gtid(0, 2, 78), 5000)
    assert Checkpoint(promoted).is_after(Checkpoint(GTID_POSITION))
    # Cassandra's versions are write times (floor 0): the order still follows segment and offset.
    later = CommitLogPosition(1_733_580_000_001, 0)
    assert Checkpoint(later).is_after(Checkpoint(POSITIONS[3])) and Checkpoint(later).version_floor == 0
