package cdc.pipeline;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.cassandra.auth.AuthKeyspace;
import org.apache.cassandra.cql3.CQLFragmentParser;
import org.apache.cassandra.cql3.CqlParser;
import org.apache.cassandra.cql3.statements.schema.CreateTableStatement;
import org.apache.cassandra.cql3.statements.schema.CreateTypeStatement;
import org.apache.cassandra.db.marshal.AbstractType;
import org.apache.cassandra.schema.CQLTypeParser;
import org.apache.cassandra.schema.ColumnMetadata;
import org.apache.cassandra.schema.KeyspaceMetadata;
import org.apache.cassandra.schema.KeyspaceParams;
import org.apache.cassandra.schema.Schema;
import org.apache.cassandra.schema.SchemaTransformations;
import org.apache.cassandra.schema.SystemDistributedKeyspace;
import org.apache.cassandra.schema.TableId;
import org.apache.cassandra.schema.TableMetadata;
import org.apache.cassandra.schema.Tables;
import org.apache.cassandra.schema.Types;
import org.apache.cassandra.schema.UserFunctions;
import org.apache.cassandra.schema.Views;
import org.apache.cassandra.tracing.TraceKeyspace;

/**
 * Builds table metadata from CQL statements in a JSON file and registers it with Cassandra's
 * offline {@link Schema}, which the mutation deserializer looks tables up in (by table id).
 *
 * <p>The node's own schema (system_schema sstables in its live data directory) is deliberately not
 * read: opening a running node's sstables from a second process races its flushes and compactions,
 * and Cassandra's offline loading also cleans up "leftover" transaction files it finds, which for a
 * running node are in-flight work. The caller reads the schema over CQL instead and passes:
 *
 * <pre>
 * {"types":  [{"keyspace": "ks", "cql": "CREATE TYPE ks.address (street text, ...)"}],
 *  "tables": [{"keyspace": "ks", "table": "t", "id": "&lt;system_schema.tables.id&gt;",
 *              "cql": "CREATE TABLE ks.t (...) WITH ...",
 *              "dropped_columns": [{"name": "old", "type": "text", "kind": "regular",
 *                                   "dropped_time": &lt;micros&gt;}]}]}
 * </pre>
 *
 * The id must be the node's: mutations name their table by id only. Dropped columns (from
 * system_schema.dropped_columns) let mutations written before a column was dropped still decode.
 */
final class SchemaFile
{
    private SchemaFile()
    {
    }

    /** Registers the file's keyspaces and returns the ids of its tables: the tables to emit. */
    static Set<TableId> load(Path file) throws IOException
    {
        JsonNode root = new ObjectMapper().readTree(file.toFile());
        Map<String, List<JsonNode>> typesByKeyspace = groupByKeyspace(root.path("types"));
        Map<String, List<JsonNode>> tablesByKeyspace = groupByKeyspace(root.path("tables"));
        if (tablesByKeyspace.isEmpty())
            throw new IllegalArgumentException(file + ": no tables");

        Set<TableId> ids = new HashSet<>();
        for (Map.Entry<String, List<JsonNode>> keyspace : tablesByKeyspace.entrySet())
        {
            String name = keyspace.getKey();
            Types types = types(name, typesByKeyspace.getOrDefault(name, List.of()));
            List<TableMetadata> tables = new ArrayList<>();
            for (JsonNode entry : keyspace.getValue())
            {
                TableMetadata table = table(name, entry, types);
                tables.add(table);
                ids.add(table.id);
            }
            // Replication is irrelevant offline: only the tables and types are ever looked at.
            register(KeyspaceMetadata.create(name, KeyspaceParams.simple(1), Tables.of(tables), Views.none(),
                                             types, UserFunctions.none()));
        }
        registerCassandraKeyspaces();
        return ids;
    }

    /**
     * Cassandra's replicated system keyspaces write to the same segments as user tables. Their
     * metadata is fixed in code, so knowing it turns their mutations into known, skipped ones instead
     * of "unknown table" errors. (system and system_schema come with tool initialisation.)
     */
    private static void registerCassandraKeyspaces()
    {
        for (KeyspaceMetadata keyspace : List.of(AuthKeyspace.metadata(), TraceKeyspace.metadata(),
                                                 SystemDistributedKeyspace.metadata()))
        {
            if (Schema.instance.getKeyspaceMetadata(keyspace.name) == null)
                register(keyspace);
        }
    }

    private static void register(KeyspaceMetadata keyspace)
    {
        Schema.instance.transform(SchemaTransformations.addKeyspace(keyspace, false));
    }

    private static Map<String, List<JsonNode>> groupByKeyspace(JsonNode entries)
    {
        Map<String, List<JsonNode>> grouped = new LinkedHashMap<>();
        for (JsonNode entry : entries)
            grouped.computeIfAbsent(required(entry, "keyspace"), k -> new ArrayList<>()).add(entry);
        return grouped;
    }

    /** User types may reference each other; Cassandra's raw builder resolves them in any order. */
    private static Types types(String keyspace, List<JsonNode> entries)
    {
        Types.RawBuilder builder = Types.rawBuilder(keyspace);
        for (JsonNode entry : entries)
        {
            CreateTypeStatement.Raw raw = CQLFragmentParser.parseAny(CqlParser::createTypeStatement,
                                                                     required(entry, "cql"), "CREATE TYPE");
            raw.addToRawBuilder(builder);
        }
        return builder.build();
    }

    private static TableMetadata table(String keyspace, JsonNode entry, Types types)
    {
        CreateTableStatement.Raw raw = CQLFragmentParser.parseAny(CqlParser::createTableStatement,
                                                                  required(entry, "cql"), "CREATE TABLE");
        String name = raw.table();
        String expected = entry.path("table").asText(name);
        if (!expected.equals(name))
            throw new IllegalArgumentException("table " + keyspace + "." + expected + ": its cql creates " + name);
        TableMetadata.Builder builder = raw.keyspace(keyspace)
                                           // a null client state is fine once the keyspace is set
                                           .prepare(null)
                                           .builder(types)
                                           .id(TableId.fromUUID(UUID.fromString(required(entry, "id"))));

        for (JsonNode dropped : entry.path("dropped_columns"))
        {
            AbstractType<?> type = CQLTypeParser.parse(keyspace, required(dropped, "type"), types);
            String column = required(dropped, "name");
            ColumnMetadata metadata = "static".equals(dropped.path("kind").asText())
                                      ? ColumnMetadata.staticColumn(keyspace, name, column, type)
                                      : ColumnMetadata.regularColumn(keyspace, name, column, type);
            builder.recordColumnDrop(metadata, dropped.path("dropped_time").asLong());
        }
        return builder.build();
    }

    private static String required(JsonNode entry, String field)
    {
        JsonNode value = entry.get(field);
        if (value == null || !value.isTextual())
            throw new IllegalArgumentException("schema entry without \"" + field + "\": " + entry);
        return value.asText();
    }
}
