package cdc.pipeline;

import java.nio.file.Files;
import java.nio.file.Path;

import org.apache.cassandra.config.DatabaseDescriptor;

/**
 * Initialises Cassandra's static configuration as an offline tool, never as a node.
 *
 * <p>{@link DatabaseDescriptor#toolInitialization()} loads the node's cassandra.yaml for what
 * deserializing a mutation needs — the partitioner (decorated keys), the commit-log encryption
 * context (segment headers) — and sets up nothing else: no directories are created, no sstable is
 * opened, no port is bound. Tool mode also makes {@link org.apache.cassandra.schema.Schema} hold
 * Cassandra's local keyspaces ({@code system}, {@code system_schema}), whose mutations are in every
 * segment.
 */
final class OfflineCassandra
{
    private OfflineCassandra()
    {
    }

    /** @param configPath cassandra.yaml, or the directory holding it (the node's conf dir) */
    static void initialise(Path configPath)
    {
        Path yaml = Files.isDirectory(configPath) ? configPath.resolve("cassandra.yaml") : configPath;
        if (!Files.isRegularFile(yaml))
            throw new IllegalArgumentException("no cassandra.yaml at " + yaml);
        // DatabaseDescriptor reads the yaml's location from this property (a URI) and nothing else.
        System.setProperty("cassandra.config", yaml.toAbsolutePath().toUri().toString());
        DatabaseDescriptor.toolInitialization();
    }
}
