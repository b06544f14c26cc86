"""The node's cdc_raw directory: which segments a batch starts in, what may be deleted, how full it is.

A checkpoint `cdc:<segment>:<offset>` says everything before it is in the sink. Once a segment is
COMPLETED and read to its end, a batch ends at `cdc:<next segment>:0`, so a checkpoint has passed every
segment with a smaller id: those are the ones release() deletes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cdc_pipeline.core.retention import RetentionStatus, SinkRetention
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition
from cdc_pipeline.sources.cassandra.segment_reader import CdcSegment, cdc_segments


class LostChangesError(RuntimeError):
    """A checkpoint points into a segment that is gone from cdc_raw: changes were deleted unread."""


@dataclass(frozen=True)
class CdcRawUsage:
    bytes_used: int
    segments: int
    cdc_total_space: str

    def as_metadata(self) -> dict[str, int | str]:
        return {
            "cdc_raw_bytes_used": self.bytes_used,
            "cdc_raw_segments": self.segments,
            "cdc_total_space": self.cdc_total_space,
        }


class CdcRaw:
    def __init__(self, directory: Path, cdc_total_space: str) -> None:
        self.directory = directory
        self._cdc_total_space = cdc_total_space

    def segments(self) -> list[CdcSegment]:
        """Segments holding CDC data (with a readable index), oldest first."""
        return cdc_segments(self.directory)

    def high_water_mark(self) -> CommitLogPosition:
        segments = self.segments()
        if not segments:
            return CommitLogPosition(0, 0)
        newest = segments[-1]
        return CommitLogPosition(newest.segment_id, newest.durable_offset)

    def start_of(
        self, segments: list[CdcSegment], resume: CommitLogPosition | None, sink: str | None = None
    ) -> CommitLogPosition | None:
        """Where reading resumes: the oldest segment for a sink without checkpoint; None: nothing to read.
        `sink` is the sink whose checkpoint `resume` is (named when its changes are gone)."""
        if resume is None:
            return CommitLogPosition(segments[0].segment_id, 0) if segments else None
        by_id = {s.segment_id: s for s in segments}
        if resume.segment_id in by_id:
            return resume
        lost = self.lost_range(segments, resume)
        if lost is not None:
            whose = f"sink '{sink}' checkpoint" if sink else "checkpoint"
            oldest = f"cdc:{segments[0].segment_id}:0" if segments else "none"
            raise LostChangesError(
                f"{whose} {resume}: segment {resume.segment_id} is no longer in {self.directory} (oldest kept:"
                f" {oldest}); the changes from {lost} were deleted before every sink read them; re-sync the sinks"
            )
        # cdc:<id>:0 names the segment after a finished one, which may never have held CDC data.
        following = [s.segment_id for s in segments if s.segment_id >= resume.segment_id]
        return CommitLogPosition(following[0], 0) if following else resume

    @staticmethod
    def lost_range(segments: list[CdcSegment], checkpoint: CommitLogPosition) -> str | None:
        """The range after `checkpoint` that is gone from cdc_raw, or None while it is still there."""
        if checkpoint.offset == 0 or any(s.segment_id == checkpoint.segment_id for s in segments):
            # cdc:<id>:0 names the segment after a finished one, which may never have held CDC data.
            return None
        later = [s.segment_id for s in segments if s.segment_id > checkpoint.segment_id]
        return f"{checkpoint} up to " + (f"cdc:{later[0]}:0" if later else "the newest segment")

    def retention(
        self, source_name: str, checkpoints: Mapping[str, CommitLogPosition | None], total_bytes: int
    ) -> RetentionStatus:
        """cdc_raw against cdc_total_space, and the segments kept for each sink. Nothing is purged by
        age here: a sink that lags fills cdc_raw, and when it is full the node refuses writes."""
        segments = self.segments()
        sizes = {}
        for segment in segments:
            try:
                sizes[segment.segment_id] = segment.path.stat().st_size
            except FileNotFoundError:
                sizes[segment.segment_id] = 0  # deleted meanwhile
        usage = self.usage()
        percent_used = round(100 * usage.bytes_used / total_bytes, 1) if total_bytes else 100.0
        sinks = {}
        for sink, position in checkpoints.items():
            first = position.segment_id if position is not None else 0
            sinks[sink] = SinkRetention(
                sink,
                str(position) if position is not None else None,
                lost=self.lost_range(segments, position) if position is not None else None,
                percent_used=percent_used,
                bytes_behind=sum(size for segment_id, size in sizes.items() if segment_id >= first),
            )
        log: dict[str, int | float | str] = {**usage.as_metadata(), "cdc_total_space_bytes": total_bytes}
        oldest = f"cdc:{segments[0].segment_id}:0" if segments else "none"
        return RetentionStatus(source_name, oldest, log, sinks)

    def releasable(self, earliest: CommitLogPosition) -> list[CdcSegment]:
        """COMPLETED segments every checkpoint (the earliest is given) has passed."""
        return [
            s
            for s in self.segments()
            if s.complete
            and (s.segment_id < earliest.segment_id
                 or (s.segment_id == earliest.segment_id and earliest.offset >= s.durable_offset))
        ]  # fmt: skip

    def delete(self, segment: CdcSegment) -> None:
        # The .log first: an index left behind by a crash in between is listed, and deleted by the next
        # release; a .log left without its index would fill cdc_raw unseen.
        segment.path.unlink(missing_ok=True)
        segment.path.with_name(segment.path.stem + "_cdc.idx").unlink(missing_ok=True)

    def usage(self) -> CdcRawUsage:
        sizes = []
        for path in self.directory.glob("*.log"):
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                continue  # deleted meanwhile
        return CdcRawUsage(sum(sizes), len(sizes), self._cdc_total_space)
