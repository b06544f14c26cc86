package cdc.pipeline;

import java.io.BufferedOutputStream;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;

import com.fasterxml.jackson.core.JsonGenerator;

import org.apache.cassandra.schema.TableId;

/**
 * The reader kept up between runs: it listens on a Unix domain socket and serves each connection in a
 * thread of its own, with the request protocol of {@code --serve} (a request line, its lines, its end
 * line; again). Dagster starts a process per run: a JVM per run would pay Cassandra's initialisation
 * and a cold JIT (about two seconds) every micro-batch, while a server pays them once.
 *
 * <p>It exits when no connection has been open for the idle time, or when its socket file is removed
 * (which is how it is asked to stop). A read that fails is answered with a {@code "kind": "failed"}
 * line naming the problem, and that connection is closed; the others go on.
 */
final class ReaderServer
{
    private static final long POLL_MILLIS = 1000;

    private final Path socket;
    private final long idleNanos;
    private final Set<TableId> tables;
    private final AtomicInteger openConnections = new AtomicInteger();
    private volatile long lastActivity = System.nanoTime();

    ReaderServer(Path socket, long idleSeconds, Set<TableId> tables)
    {
        this.socket = socket;
        this.idleNanos = idleSeconds * 1_000_000_000L;
        this.tables = tables;
    }

    void run() throws IOException
    {
        // The caller holds the lock that guards starting a server for this socket: a file left here
        // belongs to a server that died without removing it.
        Files.deleteIfExists(socket);
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
             Selector selector = Selector.open())
        {
            server.bind(UnixDomainSocketAddress.of(socket));
            server.configureBlocking(false);
            server.register(selector, SelectionKey.OP_ACCEPT);
            while (true)
            {
                selector.select(POLL_MILLIS);
                selector.selectedKeys().clear();
                for (SocketChannel connection = server.accept(); connection != null; connection = server.accept())
                    start(connection);
                if (!Files.exists(socket))
                    return; // removed: asked to stop (a new server may already own the name)
                if (openConnections.get() == 0 && System.nanoTime() - lastActivity > idleNanos)
                {
                    // Unlinked first, so no client connects to a server about to go.
                    Files.deleteIfExists(socket);
                    return;
                }
            }
        }
    }

    private void start(SocketChannel connection) throws IOException
    {
        connection.configureBlocking(true);
        openConnections.incrementAndGet();
        lastActivity = System.nanoTime();
        Thread thread = new Thread(() -> serve(connection), "cdc-reader-connection");
        thread.setDaemon(true);
        thread.start();
    }

    private void serve(SocketChannel connection)
    {
        try (connection)
        {
            BufferedReader requests = new BufferedReader(
                new InputStreamReader(Channels.newInputStream(connection), StandardCharsets.UTF_8));
            OutputStream out = new BufferedOutputStream(Channels.newOutputStream(connection), 1 << 16);
            JsonLines lines = new JsonLines(out);
            try
            {
                CdcSegmentReader.serve(requests, lines, tables);
            }
            catch (Exception e)
            {
                System.err.println("cdc segment reader: a read failed:");
                e.printStackTrace();
                failedLine(lines, e);
            }
        }
        catch (IOException e)
        {
            // The client went away (its run ended or was cancelled mid-read): nothing to answer.
        }
        finally
        {
            lastActivity = System.nanoTime();
            openConnections.decrementAndGet();
        }
    }

    private static void failedLine(JsonLines lines, Exception failure) throws IOException
    {
        StringBuilder message = new StringBuilder();
        for (Throwable cause = failure; cause != null; cause = cause.getCause())
            message.append(message.length() == 0 ? "" : "; caused by ").append(cause);
        lines.abandon();
        JsonGenerator out = lines.begin();
        out.writeStartObject();
        out.writeStringField("kind", "failed");
        out.writeStringField("error", message.toString());
        out.writeEndObject();
        lines.commit();
        lines.flush();
    }
}
