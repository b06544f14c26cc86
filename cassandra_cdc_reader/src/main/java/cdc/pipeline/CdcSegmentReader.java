package cdc.pipeline;

import java.io.BufferedOutputStream;
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
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
 * Decodes ranges of Cassandra 5.0 CDC commit-log segments into newline-delimited JSON on stdout.
 *
 * <pre>
 * java @target/reader.argfile cdc.pipeline.CdcSegmentReader \
 *     CASSANDRA_YAML_OR_CONF_DIR SCHEMA_JSON SEGMENT_FILE START END MAX_MUTATIONS
 * java @target/reader.argfile cdc.pipeline.CdcSegmentReader \
 *     --listen SOCKET_FILE IDLE_SECONDS CASSANDRA_YAML_OR_CONF_DIR SCHEMA_JSON
 * </pre>
 *
 * One read takes the entries of one segment (its id is in the file name) that end in (START, END],
 * END being the durable offset from the segment's {@code _cdc.idx}. Its output is a line per
 * partition update of a CDC table ({@code "kind": "change"}), a line per problem
 * ({@code "kind": "error"}), and always, last, {@code "kind": "end"} with the position the next read
 * starts from.
 *
 * <p>The first form makes one read and exits: 0 when the end line was written, 2 for bad arguments
 * or schema, 1 otherwise. The second form is a server ({@link ReaderServer}) on a Unix domain socket:
 * on each connection it makes a read for every line {@code SEGMENT_FILE<TAB>START<TAB>END<TAB>MAX_MUTATIONS}
 * it receives, each answered by its lines and its end line, flushed. It spares each run the JVM start,
 * Cassandra's initialisation and a cold JIT, and the caller decodes a read's lines while the next ones
 * are being written.
 */
public final class CdcSegmentReader
{
    private static final String LISTEN = "--listen";

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

        boolean listen = args.length == 5 && LISTEN.equals(args[0]);
        if (!listen && args.length != 6)
        {
            System.err.println("usage: CdcSegmentReader CASSANDRA_YAML_OR_CONF_DIR SCHEMA_JSON SEGMENT_FILE START END MAX_MUTATIONS");
            System.err.println("   or: CdcSegmentReader --listen SOCKET_FILE IDLE_SECONDS CASSANDRA_YAML_OR_CONF_DIR SCHEMA_JSON");
            System.exit(2);
        }
        int first = listen ? 3 : 0;
        Set<TableId> tables;
        try
        {
            OfflineCassandra.initialise(Path.of(args[first]));
            tables = SchemaFile.load(Path.of(args[first + 1]));
        }
        catch (Exception | ExceptionInInitializerError e)
        {
            System.err.println("cdc segment reader: " + e);
            System.exit(2);
            return;
        }
        try
        {
            if (listen)
                new ReaderServer(Path.of(args[1]), parseIdleSeconds(args[2]), tables).run();
            else
                read(new JsonLines(stdout), tables, args[2], args[3], args[4], args[5]);
        }
        catch (BadRequest e)
        {
            System.err.println("cdc segment reader: " + e.getMessage());
            System.exit(2);
        }
        catch (Exception e)
        {
            System.err.println("cdc segment reader: reading failed:");
            e.printStackTrace();
            System.exit(1);
        }
        // Cassandra's static initialisers start non-daemon threads; do not wait for them.
        System.exit(0);
    }

    /** A read request that does not parse. */
    private static final class BadRequest extends Exception
    {
        BadRequest(String message)
        {
            super(message);
        }
    }

    private static long parseIdleSeconds(String given) throws BadRequest
    {
        try
        {
            long seconds = Long.parseLong(given);
            if (seconds > 0)
                return seconds;
        }
        catch (NumberFormatException e)
        {
            // named below
        }
        throw new BadRequest("IDLE_SECONDS must be a positive whole number, got: " + given);
    }

    /** Reads for every request line until the requests end (the client closed its side). */
    static void serve(BufferedReader requests, JsonLines lines, Set<TableId> tables) throws Exception
    {
        for (String request = requests.readLine(); request != null; request = requests.readLine())
        {
            String[] fields = request.split("\t", -1);
            if (fields.length != 4)
                throw new BadRequest("a request is SEGMENT_FILE<TAB>START<TAB>END<TAB>MAX_MUTATIONS, got: " + request);
            read(lines, tables, fields[0], fields[1], fields[2], fields[3]);
        }
    }

    private static void read(JsonLines lines, Set<TableId> tables, String segmentFile, String start, String end,
                             String maxMutations) throws Exception
    {
        File segment = new File(segmentFile);
        ReadProgress progress;
        try
        {
            long segmentId = CommitLogDescriptor.fromFileName(segment.name()).id;
            progress = new ReadProgress(segmentId, Integer.parseInt(start), Integer.parseInt(end), Integer.parseInt(maxMutations));
        }
        catch (RuntimeException e)
        {
            throw new BadRequest(segmentFile + " " + start + " " + end + " " + maxMutations + ": " + e);
        }
        if (progress.start < 0 || progress.end < progress.start)
            throw new BadRequest("need 0 <= START <= END, got " + progress.start + ", " + progress.end);
        try
        {
            RangeCommitLogReader reader = new RangeCommitLogReader(progress, new SegmentHandler(lines, progress, tables));
            reader.read(segment);
        }
        catch (IOException | RuntimeException e)
        {
            throw new IOException("reading " + segment + " (" + start + ", " + end + "] failed", e);
        }
        endLine(lines.begin(), progress);
        lines.commit();
        lines.flush();
    }

    private static void endLine(JsonGenerator out, ReadProgress progress) throws IOException
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
