package cdc.pipeline;

import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;

import com.fasterxml.jackson.core.JsonGenerator;

import org.apache.cassandra.db.commitlog.CommitLogDescriptor;
import org.apache.cassandra.io.util.File;
import org.apache.cassandra.schema.TableId;

/**
 * Decodes one batch of a Cassandra 5.0 CDC commit-log segment into newline-delimited JSON on stdout.
 *
 * <pre>
 * java @target/reader.argfile cdc.pipeline.CdcSegmentReader \
 *     CASSANDRA_YAML_OR_CONF_DIR SCHEMA_JSON SEGMENT_FILE START END MAX_MUTATIONS
 * </pre>
 *
 * START and END are byte positions in the segment (its id is in the file name): the entries ending in
 * (START, END] are read, END being the durable offset from the segment's {@code _cdc.idx}. The output
 * is a line per partition update of a CDC table ({@code "kind": "change"}), a line per problem
 * ({@code "kind": "error"}), and always, last, {@code "kind": "end"} with the position the next batch
 * starts from. Exit status 0 when the end line was written, 2 for bad arguments or schema, 1 otherwise.
 */
public final class CdcSegmentReader
{
    private CdcSegmentReader()
    {
    }

    public static void main(String[] args)
    {
        // Only our JSON may reach stdout: anything a library prints goes to stderr.
        OutputStream stdout = new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16);
        System.setOut(new PrintStream(new FileOutputStream(FileDescriptor.err), true));
        // Cassandra ships no logback configuration and logback's default logs DEBUG to stdout.
        if (System.getProperty("logback.configurationFile") == null)
            System.setProperty("logback.configurationFile", "cdc-reader-logback.xml");

        if (args.length != 6)
        {
            System.err.println("usage: CdcSegmentReader CASSANDRA_YAML_OR_CONF_DIR SCHEMA_JSON SEGMENT_FILE START END MAX_MUTATIONS");
            System.exit(2);
        }
        ReadProgress progress;
        Set<TableId> tables;
        File segment = new File(args[2]);
        try
        {
            OfflineCassandra.initialise(Path.of(args[0]));
            tables = SchemaFile.load(Path.of(args[1]));
            long segmentId = CommitLogDescriptor.fromFileName(segment.name()).id;
            progress = new ReadProgress(segmentId, Integer.parseInt(args[3]), Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            if (progress.start < 0 || progress.end < progress.start)
                throw new IllegalArgumentException("need 0 <= START <= END, got " + progress.start + ", " + progress.end);
        }
        catch (Exception | ExceptionInInitializerError e)
        {
            System.err.println("cdc segment reader: " + e);
            System.exit(2);
            return;
        }

        try
        {
            JsonLines lines = new JsonLines(stdout);
            RangeCommitLogReader reader = new RangeCommitLogReader(progress, new SegmentHandler(lines, progress, tables));
            reader.read(segment);
            endLine(lines.begin(), progress);
            lines.commit();
            lines.flush();
        }
        catch (Exception e)
        {
            System.err.println("cdc segment reader: reading " + segment + " failed:");
            e.printStackTrace();
            System.exit(1);
        }
        // Cassandra's static initialisers start non-daemon threads; do not wait for them.
        System.exit(0);
    }

    private static void endLine(JsonGenerator out, ReadProgress progress) throws java.io.IOException
    {
        out.writeStartObject();
        out.writeStringField("kind", "end");
        out.writeNumberField("segment_id", progress.segmentId);
        out.writeNumberField("start", progress.start);
        out.writeNumberField("end", progress.end);
        // Where the next batch starts: END when everything up to it was read.
        out.writeNumberField("position", progress.position);
        out.writeBooleanField("complete", progress.complete());
        out.writeBooleanField("limit_reached", progress.limitReached());
        out.writeNumberField("mutations", progress.mutations);
        out.writeNumberField("changes", progress.updatesEmitted);
        out.writeNumberField("changes_with_errors", progress.updatesWithErrors);
        out.writeNumberField("errors", progress.errors);
        out.writeNumberField("errors_past_end", progress.errorsPastEnd);
        out.writeObjectFieldStart("skipped_updates");
        for (Map.Entry<String, Integer> skipped : progress.updatesSkipped.entrySet())
            out.writeNumberField(skipped.getKey(), skipped.getValue());
        out.writeEndObject();
        out.writeEndObject();
    }
}
