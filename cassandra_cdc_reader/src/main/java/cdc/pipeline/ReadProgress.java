package cdc.pipeline;

import java.util.Map;
import java.util.TreeMap;

/**
 * How far one read got through its range (start, end] of a segment, and what it met on the way;
 * becomes the run's last line, which tells the caller where the next batch starts.
 */
final class ReadProgress
{
    final long segmentId;
    final int start;
    final int end;
    final int mutationLimit;

    /** End of the last commit-log entry taken (emitted, skipped or reported as an error). */
    int position;
    int mutations;
    int updatesEmitted;
    /** Emitted updates with values that did not decode (listed in their lines). */
    int updatesWithErrors;
    /** Partition updates of tables without CDC (Cassandra's own, or user tables with cdc = false). */
    final Map<String, Integer> updatesSkipped = new TreeMap<>();
    /** Error lines written: undecodable entries (passed over) and read errors (which stop the read). */
    int errors;
    /** A read error inside the range stopped the read at {@link #position}. */
    boolean stoppedByError;
    /** Read errors in the part of the segment past the durable end: not yet data, so not errors. */
    int errorsPastEnd;

    ReadProgress(long segmentId, int start, int end, int mutationLimit)
    {
        this.segmentId = segmentId;
        this.start = start;
        this.end = end;
        this.mutationLimit = mutationLimit;
        this.position = start;
    }

    void took(int entryEnd)
    {
        position = entryEnd;
        mutations++;
    }

    boolean pastEnd()
    {
        return position >= end;
    }

    boolean limitReached()
    {
        return mutations >= mutationLimit;
    }

    /** Everything up to the durable end was read: the next batch of this segment starts there. */
    boolean complete()
    {
        return position == end;
    }

    /** The read stopped for neither the limit nor an error: it ran out of entries before END. */
    boolean ranOutOfEntries()
    {
        return !stoppedByError && !limitReached();
    }

    void skipped(String table)
    {
        updatesSkipped.merge(table, 1, Integer::sum);
    }
}
