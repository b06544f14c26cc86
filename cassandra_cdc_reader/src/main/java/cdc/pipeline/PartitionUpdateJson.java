package cdc.pipeline;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;

import com.fasterxml.jackson.core.JsonGenerator;

import org.apache.cassandra.db.ClusteringBound;
import org.apache.cassandra.db.ClusteringPrefix;
import org.apache.cassandra.db.DeletionTime;
import org.apache.cassandra.db.LivenessInfo;
import org.apache.cassandra.db.RangeTombstone;
import org.apache.cassandra.db.commitlog.CommitLogPosition;
import org.apache.cassandra.db.context.CounterContext;
import org.apache.cassandra.db.marshal.AbstractType;
import org.apache.cassandra.db.marshal.CollectionType;
import org.apache.cassandra.db.marshal.CompositeType;
import org.apache.cassandra.db.marshal.ListType;
import org.apache.cassandra.db.marshal.MapType;
import org.apache.cassandra.db.marshal.SetType;
import org.apache.cassandra.db.marshal.UserType;
import org.apache.cassandra.db.partitions.PartitionUpdate;
import org.apache.cassandra.db.rows.Cell;
import org.apache.cassandra.db.rows.ColumnData;
import org.apache.cassandra.db.rows.ComplexColumnData;
import org.apache.cassandra.db.rows.Row;
import org.apache.cassandra.schema.ColumnMetadata;
import org.apache.cassandra.schema.TableMetadata;
import org.apache.cassandra.utils.ByteBufferUtil;

/**
 * Writes one partition update as one JSON line: where it is in the log, its key, its deletions and
 * its rows with every cell as written (an update carries only the cells it changed). A value that
 * cannot be decoded is written as null and listed in the line's {@code "errors"} with where it is
 * (a JSON Pointer into the line), what failed and its raw bytes: the rest of the update still
 * arrives and nothing is lost silently. The format is described in this project's README.
 */
final class PartitionUpdateJson
{
    private record UndecodedValue(String at, String reason, String rawHex)
    {
    }

    /** The line being written. */
    private JsonGenerator out;
    /** Undecodable values of the line being written. */
    private final List<UndecodedValue> errors = new ArrayList<>();

    /** @return whether some value could not be decoded (the line lists them in "errors") */
    boolean write(JsonGenerator line, PartitionUpdate update, CommitLogPosition after) throws IOException
    {
        out = line;
        TableMetadata table = update.metadata();
        out.writeStartObject();
        out.writeStringField("kind", "change");
        out.writeStringField("keyspace", table.keyspace);
        out.writeStringField("table", table.name);
        out.writeStringField("table_id", table.id.toString());
        out.writeNumberField("segment_id", after.segmentId);
        out.writeNumberField("position", after.position);

        errors.clear();
        out.writeFieldName("partition_key");
        partitionKey(table, update.partitionKey().getKey());

        DeletionTime partitionDeletion = update.partitionLevelDeletion();
        if (!partitionDeletion.isLive())
        {
            out.writeFieldName("partition_deletion");
            deletion(partitionDeletion);
        }

        if (update.deletionInfo().hasRanges())
        {
            out.writeArrayFieldStart("range_tombstones");
            for (Iterator<RangeTombstone> it = update.deletionInfo().rangeIterator(false); it.hasNext(); )
                rangeTombstone(table, it.next());
            out.writeEndArray();
        }

        Row staticRow = update.staticRow();
        if (!staticRow.isEmpty())
        {
            out.writeFieldName("static_row");
            row(table, staticRow);
        }

        out.writeArrayFieldStart("rows");
        for (Row row : update)
            row(table, row);
        out.writeEndArray();

        if (!errors.isEmpty())
        {
            out.writeArrayFieldStart("errors");
            for (UndecodedValue error : errors)
            {
                out.writeStartObject();
                out.writeStringField("at", error.at());
                out.writeStringField("error", error.reason());
                out.writeStringField("raw_hex", error.rawHex());
                out.writeEndObject();
            }
            out.writeEndArray();
        }

        out.writeEndObject();
        return !errors.isEmpty();
    }

    private void partitionKey(TableMetadata table, ByteBuffer key) throws IOException
    {
        List<ColumnMetadata> columns = table.partitionKeyColumns();
        out.writeStartObject();
        if (columns.size() == 1)
        {
            keyValue(columns.get(0), key);
        }
        else
        {
            // A composite key is one blob of length-prefixed components; CompositeType splits it.
            ByteBuffer[] components = ((CompositeType) table.partitionKeyType).split(key);
            for (int i = 0; i < columns.size(); i++)
                keyValue(columns.get(i), components[i]);
        }
        out.writeEndObject();
    }

    /** Clustering values by column name; a bound of a range may hold only a prefix of them. */
    private void clustering(TableMetadata table, ClusteringPrefix<?> prefix) throws IOException
    {
        List<ColumnMetadata> columns = table.clusteringColumns();
        out.writeStartObject();
        for (int i = 0; i < prefix.size(); i++)
            keyValue(columns.get(i), prefix.bufferAt(i));
        out.writeEndObject();
    }

    private void keyValue(ColumnMetadata column, ByteBuffer bytes) throws IOException
    {
        value(column.name.toString(), column.type, bytes);
    }

    private void rangeTombstone(TableMetadata table, RangeTombstone tombstone) throws IOException
    {
        out.writeStartObject();
        out.writeFieldName("start");
        bound(table, tombstone.deletedSlice().start());
        out.writeFieldName("end");
        bound(table, tombstone.deletedSlice().end());
        deletionFields(tombstone.deletionTime());
        out.writeEndObject();
    }

    /** An empty clustering means open-ended (the partition's first or last row). */
    private void bound(TableMetadata table, ClusteringBound<?> bound) throws IOException
    {
        out.writeStartObject();
        out.writeFieldName("clustering");
        clustering(table, bound);
        out.writeBooleanField("inclusive", bound.isInclusive());
        out.writeEndObject();
    }

    private void row(TableMetadata table, Row row) throws IOException
    {
        out.writeStartObject();
        if (!row.isStatic())
        {
            out.writeFieldName("clustering");
            clustering(table, row.clustering());
        }
        if (!row.deletion().isLive())
        {
            out.writeFieldName("deletion");
            deletion(row.deletion().time());
        }
        LivenessInfo liveness = row.primaryKeyLivenessInfo();
        if (!liveness.isEmpty())
        {
            // Present for INSERT (the row exists even with all columns null), absent for UPDATE.
            out.writeObjectFieldStart("liveness");
            out.writeNumberField("timestamp", liveness.timestamp());
            if (liveness.isExpiring())
            {
                out.writeNumberField("ttl", liveness.ttl());
                out.writeNumberField("local_expiration_time", liveness.localExpirationTime());
            }
            out.writeEndObject();
        }
        out.writeArrayFieldStart("cells");
        for (ColumnData data : row)
        {
            if (data.column().isSimple())
                simpleCell((Cell<?>) data);
            else
                complexColumn((ComplexColumnData) data);
        }
        out.writeEndArray();
        out.writeEndObject();
    }

    private void simpleCell(Cell<?> cell) throws IOException
    {
        ColumnMetadata column = cell.column();
        out.writeStartObject();
        out.writeStringField("column", column.name.toString());
        if (cell.isCounterCell())
        {
            // The cell holds a counter context (shards of the node ids that counted); its total is
            // the counter's value in this node's view after the update, not the increment.
            out.writeBooleanField("counter", true);
            if (!cell.isTombstone())
                out.writeNumberField("value", CounterContext.instance().total(cell));
        }
        else if (!cell.isTombstone())
        {
            value("value", column.type, cell.buffer());
        }
        cellMetadata(cell);
        out.writeEndObject();
    }

    /**
     * A non-frozen collection or UDT: its cells each carry a path (list: the element's timeuuid,
     * set: the element, map: the key, UDT: the field). A whole-value write (`m = {...}`) also deletes
     * what was there before: that shows as the column's "deletion", just below the new cells' time.
     */
    private void complexColumn(ComplexColumnData data) throws IOException
    {
        ColumnMetadata column = data.column();
        AbstractType<?> type = column.type.unwrap();
        out.writeStartObject();
        out.writeStringField("column", column.name.toString());
        out.writeStringField("collection", collectionKind(type));
        if (!data.complexDeletion().isLive())
        {
            out.writeFieldName("deletion");
            deletion(data.complexDeletion());
        }
        out.writeArrayFieldStart("elements");
        for (Cell<?> cell : data)
        {
            out.writeStartObject();
            ByteBuffer path = cell.path().get(0);
            if (type instanceof UserType udt)
            {
                int field = ByteBufferUtil.toShort(path);
                if (field >= udt.size())
                {
                    undecodable("path", "field " + field + " not in " + udt.asCQL3Type(), path);
                }
                else
                {
                    out.writeStringField("path", udt.fieldNameAsString(field));
                    if (!cell.isTombstone())
                        value("value", udt.fieldType(field), cell.buffer());
                }
            }
            else if (type instanceof CollectionType<?> collection)
            {
                value("path", collection.nameComparator(), path);
                // a set element is all path; its cell value is empty
                if (!cell.isTombstone() && !(type instanceof SetType))
                    value("value", collection.valueComparator(), cell.buffer());
            }
            else
            {
                undecodable("path", "no decoding for cells of " + type.asCQL3Type(), path);
                undecodable("value", "no decoding for cells of " + type.asCQL3Type(), cell.buffer());
            }
            cellMetadata(cell);
            out.writeEndObject();
        }
        out.writeEndArray();
        out.writeEndObject();
    }

    private static String collectionKind(AbstractType<?> type)
    {
        if (type instanceof ListType)
            return "list";
        if (type instanceof SetType)
            return "set";
        if (type instanceof MapType)
            return "map";
        if (type instanceof UserType)
            return "udt";
        return type.asCQL3Type().toString();
    }

    private void cellMetadata(Cell<?> cell) throws IOException
    {
        out.writeNumberField("timestamp", cell.timestamp());
        // Only a tombstone says so: most cells are live, and the field was a sixth of a line.
        if (cell.isTombstone())
        {
            out.writeBooleanField("tombstone", true);
            out.writeNumberField("local_deletion_time", cell.localDeletionTime());
        }
        else if (cell.isExpiring())
        {
            out.writeNumberField("ttl", cell.ttl());
            out.writeNumberField("local_expiration_time", cell.localDeletionTime());
        }
    }

    private void deletion(DeletionTime deletion) throws IOException
    {
        out.writeStartObject();
        deletionFields(deletion);
        out.writeEndObject();
    }

    /** Write time of the delete (microseconds, like cell timestamps) and the node's clock then (seconds). */
    private void deletionFields(DeletionTime deletion) throws IOException
    {
        out.writeNumberField("timestamp", deletion.markedForDeleteAt());
        out.writeNumberField("local_deletion_time", deletion.localDeletionTime());
    }

    /** A named value; null and an entry in the line's errors when it cannot be decoded. */
    private void value(String field, AbstractType<?> type, ByteBuffer bytes) throws IOException
    {
        Object decoded;
        try
        {
            decoded = CqlValues.decode(type, bytes);
        }
        catch (CqlValues.UndecodableValue e)
        {
            undecodable(field, e.getMessage(), bytes);
            return;
        }
        out.writeFieldName(field);
        JsonValues.write(out, decoded);
    }

    private void undecodable(String field, String reason, ByteBuffer bytes) throws IOException
    {
        out.writeFieldName(field);
        // Jackson knows where in the line it is: a JSON Pointer such as /rows/0/cells/3/value.
        String at = out.getOutputContext().pathAsPointer().toString();
        out.writeNull();
        errors.add(new UndecodedValue(at, reason, ByteBufferUtil.bytesToHex(bytes)));
    }
}
