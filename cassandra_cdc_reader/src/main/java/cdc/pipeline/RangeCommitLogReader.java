package cdc.pipeline;

import java.io.IOException;

import org.apache.cassandra.db.Mutation;
import org.apache.cassandra.db.commitlog.CommitLogDescriptor;
import org.apache.cassandra.db.commitlog.CommitLogPosition;
import org.apache.cassandra.db.commitlog.CommitLogReadHandler;
import org.apache.cassandra.db.commitlog.CommitLogReader;
import org.apache.cassandra.db.rows.DeserializationHelper;
import org.apache.cassandra.exceptions.UnknownTableException;
import org.apache.cassandra.io.util.DataInputBuffer;
import org.apache.cassandra.io.util.File;

/**
 * Cassandra's {@link CommitLogReader}, bounded to one batch: the entries of one segment that end in
 * (start, end], at most a given number of them.
 *
 * <p>The stock reader starts at a position and reads on to the last section whose sync marker is
 * written. A CDC segment is read while the node still writes it, and only what lies before the
 * durable offset of its {@code _cdc.idx} file is known to be complete, so reading stops at the first
 * entry that ends past it. {@link #readMutation} is the reader's step for each entry whose checksum
 * passed; overriding it also keeps two cases visible that the stock reader hides: a mutation of a
 * table missing from the schema (only counted there) and one that fails to deserialize (dumped to a
 * temporary file there). Both are reported with their position and raw bytes instead.
 */
final class RangeCommitLogReader extends CommitLogReader
{
    /** A sync marker: the next marker's position and a CRC, 4 bytes each (CommitLogSegment's format). */
    private static final int SYNC_MARKER_SIZE = 8;

    private final ReadProgress progress;
    private final SegmentHandler handler;

    /** Unwinds Cassandra's read loop at the end of the range; carries no stack, it is not an error. */
    private static final class EndOfRange extends RuntimeException
    {
        EndOfRange()
        {
            super(null, null, false, false);
        }
    }

    RangeCommitLogReader(ReadProgress progress, SegmentHandler handler)
    {
        this.progress = progress;
        this.handler = handler;
    }

    void read(File segment) throws IOException
    {
        if (progress.start < progress.end && progress.mutationLimit > 0)
        {
            try
            {
                // tolerateTruncation: the segment's tail may be half written while the node runs.
                readCommitLogSegment(handler, segment, new CommitLogPosition(progress.segmentId, progress.start),
                                     progress.mutationLimit, true);
            }
            catch (EndOfRange reached)
            {
                // the next entry belongs to a later batch
            }
        }
        if (progress.ranOutOfEntries())
            acceptEnd();
    }

    /**
     * Every section up to END was read, so the next batch may start at END, even though the last entry
     * may end short of it: a segment closed when full ends with a section holding only its sync marker
     * (the index's offset covers it). Sections with data are never empty, so a larger gap means that
     * entries were not found where the index says they are: reported, and the position stays.
     */
    private void acceptEnd() throws IOException
    {
        int gap = progress.end - progress.position;
        if (gap == 0 || gap == SYNC_MARKER_SIZE)
            progress.position = progress.end;
        else
            handler.positionError("missing_entries", "the read ended " + gap + " bytes before the durable offset " + progress.end
                                  + " without an error: entries are missing from the segment");
    }

    @Override
    protected void readMutation(CommitLogReadHandler ignored, byte[] buffer, int size, CommitLogPosition minPosition,
                                int entryLocation, CommitLogDescriptor descriptor) throws IOException
    {
        // Entries ending at or before the start were in an earlier batch (same test as the stock reader).
        if (entryLocation <= minPosition.position)
            return;
        if (entryLocation > progress.end)
            throw new EndOfRange();

        CommitLogPosition after = new CommitLogPosition(descriptor.id, entryLocation);
        Mutation mutation;
        try (DataInputBuffer in = new DataInputBuffer(buffer, 0, size))
        {
            // LOCAL: this node wrote the entry, so counter shards are its own (as in commit-log replay).
            mutation = Mutation.serializer.deserialize(in, descriptor.getMessagingVersion(), DeserializationHelper.Flag.LOCAL);
        }
        catch (UnknownTableException e)
        {
            progress.took(entryLocation);
            handler.undecodableMutation(after, e.id, "unknown table id " + e.id + " (not in the schema file)", buffer, size);
            return;
        }
        catch (IOException | RuntimeException e)
        {
            progress.took(entryLocation);
            handler.undecodableMutation(after, null, "mutation does not deserialize: " + e, buffer, size);
            return;
        }
        progress.took(entryLocation);
        handler.mutation(mutation, after, buffer, size);
    }
}
