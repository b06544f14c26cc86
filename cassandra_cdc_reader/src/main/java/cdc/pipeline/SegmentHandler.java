package cdc.pipeline;

import java.io.IOException;
import java.util.Set;

import com.fasterxml.jackson.core.JsonGenerator;

import org.apache.cassandra.db.Mutation;
import org.apache.cassandra.db.commitlog.CommitLogDescriptor;
import org.apache.cassandra.db.commitlog.CommitLogPosition;
import org.apache.cassandra.db.commitlog.CommitLogReadHandler;
import org.apache.cassandra.db.partitions.PartitionUpdate;
import org.apache.cassandra.schema.TableId;
import org.apache.cassandra.schema.TableMetadata;
import org.apache.cassandra.utils.Hex;

/**
 * Turns what the reader finds in a segment into output lines: a change line per partition update of a
 * CDC table, an error line per entry or read problem that cannot be decoded, nothing silently lost.
 */
final class SegmentHandler implements CommitLogReadHandler
{
    private final JsonLines lines;
    private final ReadProgress progress;
    private final Set<TableId> schemaFileTables;
    private final PartitionUpdateJson updates = new PartitionUpdateJson();

    SegmentHandler(JsonLines lines, ReadProgress progress, Set<TableId> schemaFileTables)
    {
        this.lines = lines;
        this.progress = progress;
        this.schemaFileTables = schemaFileTables;
    }

    /**
     * A decoded entry. The entry's bytes come along so that an update which fails to be written out
     * can still be reported with them.
     */
    void mutation(Mutation mutation, CommitLogPosition after, byte[] buffer, int size) throws IOException
    {
        for (PartitionUpdate update : mutation.getPartitionUpdates())
        {
            TableMetadata table = update.metadata();
            // A segment holds every write of the node; only tables with cdc = true are changes to
            // deliver. The others are counted in the last line.
            if (!schemaFileTables.contains(table.id) || !table.params.cdc)
            {
                progress.skipped(table.keyspace + "." + table.name);
                continue;
            }
            try
            {
                if (updates.write(lines.begin(), update, after))
                    progress.updatesWithErrors++;
                lines.commit();
                progress.updatesEmitted++;
            }
            catch (RuntimeException e)
            {
                // Something in the update the writers do not expect: an error line instead of it.
                lines.abandon();
                error("undecodable_update", after, table.id, table.keyspace + "." + table.name + ": " + e, buffer, size);
            }
        }
    }

    /** Not called: {@link RangeCommitLogReader} hands decoded entries to {@link #mutation} with their bytes. */
    @Override
    public void handleMutation(Mutation mutation, int size, int entryLocation, CommitLogDescriptor descriptor)
    {
        throw new UnsupportedOperationException("RangeCommitLogReader calls mutation(...)");
    }

    /**
     * An entry whose checksum passed but which does not decode; the read goes on after it.
     *
     * @param unknownTable the table id when the schema file lacks the table, else null
     */
    void undecodableMutation(CommitLogPosition after, TableId unknownTable, String error, byte[] buffer, int size)
    throws IOException
    {
        error(unknownTable != null ? "unknown_table" : "undecodable_mutation", after, unknownTable, error, buffer, size);
    }

    private void error(String reason, CommitLogPosition after, TableId table, String error, byte[] buffer, int size)
    throws IOException
    {
        progress.errors++;
        JsonGenerator out = lines.begin();
        out.writeStartObject();
        out.writeStringField("kind", "error");
        out.writeStringField("reason", reason);
        out.writeNumberField("segment_id", after.segmentId);
        out.writeNumberField("position", after.position);
        if (table != null)
            out.writeStringField("table_id", table.toString());
        out.writeStringField("error", error);
        out.writeStringField("raw_hex", Hex.bytesToHex(buffer, 0, size));
        out.writeEndObject();
        lines.commit();
    }

    /** A corrupt or truncated entry, section or header: the read of the segment stops here. */
    @Override
    public boolean shouldSkipSegmentOnError(CommitLogReadException exception) throws IOException
    {
        readError(exception);
        return true;
    }

    @Override
    public void handleUnrecoverableError(CommitLogReadException exception) throws IOException
    {
        readError(exception);
    }

    private void readError(CommitLogReadException exception) throws IOException
    {
        // Past the durable offset the node may be writing right now: what is there is not data yet.
        if (progress.pastEnd())
        {
            progress.errorsPastEnd++;
            return;
        }
        progress.stoppedByError = true;
        positionError("segment_read", exception.reason + ": " + exception.getMessage());
    }

    /** An error line at the last good position: the next read starts there again. */
    void positionError(String reason, String error) throws IOException
    {
        progress.errors++;
        JsonGenerator out = lines.begin();
        out.writeStartObject();
        out.writeStringField("kind", "error");
        out.writeStringField("reason", reason);
        out.writeNumberField("segment_id", progress.segmentId);
        out.writeNumberField("position", progress.position);
        out.writeStringField("error", error);
        out.writeEndObject();
        lines.commit();
    }
}
