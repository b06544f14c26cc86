"""The node's cdc_raw directory: which segments a batch starts in, what may be deleted, how full it is.

A checkpoint `cdc:<segment>:<offset>` says everything before it is in the sink. Once a segment is
COMPLETED and read to its end, a batch ends at `cdc:<next segment>:0`, so a checkpoint has passed every
segment with a smaller id: those are the ones release() deletes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdc_pipeline.core.positions import CommitLogPosition
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

    def start_of(self, segments: list[CdcSegment], resume: CommitLogPosition | None) -> CommitLogPosition | None:
        """Where reading resumes: the oldest segment for a sink without checkpoint; None: nothing to read."""
        if resume is None:
            return CommitLogPosition(segments[0].segment_id, 0) if segments else None
        by_id = {s.segment_id: s for s in segments}
        if resume.segment_id in by_id:
            return resume
        if resume.offset > 0:
            later = [s.segment_id for s in segments if s.segment_id > resume.segment_id]
            until = f"cdc:{later[0]}:0" if later else "the newest segment"
            raise LostChangesError(
                f"checkpoint {resume}: segment {resume.segment_id} is no longer in {self.directory}; the changes from"
                f" {resume} up to {until} were deleted before every sink read them; re-sync the sinks"
            )
        # cdc:<id>:0 names the segment after a finished one, which may never have held CDC data.
        following = [s.segment_id for s in segments if s.segment_id >= resume.segment_id]
        return CommitLogPosition(following[0], 0) if following else resume

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
