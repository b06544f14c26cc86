"""Listing cdc_raw while the node rewrites an index (truncate, then write): the segment stays listed.

A listing that missed the segment of a sink's checkpoint made the run fail with a false "changes were
deleted, re-sync the sinks" (seen in the service benchmark at 1,000 writes a second). The rewriting
here is the node's own pattern, on a real file system; no database is involved.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cdc_pipeline.sources.cassandra.cdc_raw import CdcRaw
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition
from cdc_pipeline.sources.cassandra.segment_reader import cdc_segments

_SEGMENT_ID = 1796677116298


def _segment(directory: Path, segment_id: int, index: str) -> Path:
    (directory / f"CommitLog-7-{segment_id}.log").write_bytes(b"\0" * 64)
    path = directory / f"CommitLog-7-{segment_id}_cdc.idx"
    path.write_text(index)
    return path


def test_a_segment_whose_index_is_being_rewritten_is_never_left_out(tmp_path: Path) -> None:
    index = _segment(tmp_path, _SEGMENT_ID, "4096\n")
    stop = threading.Event()

    def rewrite() -> None:
        offset = 4096
        while not stop.is_set():
            offset += 128
            with index.open("w") as file:  # truncates first, as Cassandra's FileWriter does
                file.write(f"{offset}\n")

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        listings = [cdc_segments(tmp_path) for _ in range(2000)]
    finally:
        stop.set()
        writer.join()

    assert all([s.segment_id for s in listing] == [_SEGMENT_ID] for listing in listings)
    offsets = [listing[0].durable_offset for listing in listings]
    assert all(offset == 0 or offset >= 4096 for offset in offsets)
    raw = CdcRaw(tmp_path, "4096MiB")
    checkpoint = CommitLogPosition(_SEGMENT_ID, 4096)
    assert raw.start_of(cdc_segments(tmp_path), checkpoint, "analytics") == checkpoint


def test_an_index_that_stays_empty_is_listed_as_nothing_durable_yet(tmp_path: Path) -> None:
    _segment(tmp_path, _SEGMENT_ID, "")
    _segment(tmp_path, _SEGMENT_ID - 1, "8192\nCOMPLETED\n")

    listing = cdc_segments(tmp_path)

    assert [(s.segment_id, s.durable_offset, s.complete) for s in listing] == [
        (_SEGMENT_ID - 1, 8192, True),
        (_SEGMENT_ID, 0, False),
    ]
    raw = CdcRaw(tmp_path, "4096MiB")
    # Released: only the completed segment a checkpoint passed, never the one whose index is unknown.
    assert [s.segment_id for s in raw.releasable(CommitLogPosition(_SEGMENT_ID, 100))] == [_SEGMENT_ID - 1]
