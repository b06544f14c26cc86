package cdc.pipeline;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import org.apache.cassandra.db.marshal.AbstractType;
import org.apache.cassandra.db.marshal.ByteBufferAccessor;
import org.apache.cassandra.db.marshal.BytesType;
import org.apache.cassandra.db.marshal.CounterColumnType;
import org.apache.cassandra.db.marshal.DurationType;
import org.apache.cassandra.db.marshal.ListType;
import org.apache.cassandra.db.marshal.MapType;
import org.apache.cassandra.db.marshal.SetType;
import org.apache.cassandra.db.marshal.SimpleDateType;
import org.apache.cassandra.db.marshal.TimeType;
import org.apache.cassandra.db.marshal.TupleType;
import org.apache.cassandra.db.marshal.UserType;
import org.apache.cassandra.db.marshal.ValueAccessor;
import org.apache.cassandra.db.marshal.VectorType;
import org.apache.cassandra.serializers.CollectionSerializer;
import org.apache.cassandra.utils.ByteBufferUtil;
import org.apache.cassandra.utils.TimeUUID;

/**
 * Serialized CQL values to plain Java values that map 1:1 onto JSON: String, Long/Integer/Short/Byte,
 * Double/Float, Boolean, List, Map (UDT fields by name) and null.
 *
 * <p>Conventions, chosen so that no value loses precision in a JSON parser: varint and decimal as
 * strings (exact digits and scale); timestamp as epoch milliseconds; date as ISO {@code yyyy-mm-dd};
 * time as {@code hh:mm:ss.nnnnnnnnn}; uuid, timeuuid and inet as their text; blob as hex; duration
 * in CQL's form ({@code 1mo2d3h}); NaN and infinities as the strings Java prints for them. Frozen
 * collections and tuples are JSON arrays, a map is an array of {@code [key, value]} pairs (keys need
 * not be strings), a UDT an object keyed by field name, a vector an array. A type without a mapping
 * throws {@link UndecodableValue}: the caller writes the raw bytes with an error instead.
 */
final class CqlValues
{
    /** A value this class cannot turn into JSON, with the reason. */
    static final class UndecodableValue extends RuntimeException
    {
        UndecodableValue(String message, Throwable cause)
        {
            super(message, cause);
        }
    }

    private CqlValues()
    {
    }

    static Object decode(AbstractType<?> declared, ByteBuffer value)
    {
        try
        {
            return decodeUnchecked(declared.unwrap(), value);
        }
        catch (UndecodableValue e)
        {
            throw e;
        }
        catch (RuntimeException e)
        {
            throw new UndecodableValue("cannot decode " + declared.asCQL3Type() + ": " + e, e);
        }
    }

    private static Object decodeUnchecked(AbstractType<?> type, ByteBuffer value)
    {
        if (value == null)
            return null;
        // UserType first: it is a TupleType.
        if (type instanceof UserType udt)
            return userType(udt, value);
        if (type instanceof TupleType tuple)
            return tuple(tuple, value);
        if (type instanceof ListType<?> list)
            return elements(list.getElementsType(), value);
        if (type instanceof SetType<?> set)
            return elements(set.getElementsType(), value);
        if (type instanceof MapType<?, ?> map)
            return map(map, value);
        if (type instanceof VectorType<?> vector)
            return vector(vector, value);
        if (type instanceof BytesType)
            return ByteBufferUtil.bytesToHex(value);
        // Their composed Java values (unsigned day counts, nanoseconds, a Duration object) are not
        // what a reader expects; Cassandra's own text form is.
        if (type instanceof SimpleDateType || type instanceof TimeType || type instanceof DurationType)
            return type.getString(value);
        if (type instanceof CounterColumnType)
            throw new UndecodableValue("counter value outside a counter cell", null);
        return scalar(type, type.compose(value));
    }

    private static Object scalar(AbstractType<?> type, Object composed)
    {
        if (composed == null || composed instanceof String || composed instanceof Boolean
            || composed instanceof Long || composed instanceof Integer
            || composed instanceof Short || composed instanceof Byte)
            return composed;
        if (composed instanceof Double || composed instanceof Float)
        {
            double d = ((Number) composed).doubleValue();
            return Double.isFinite(d) ? composed : composed.toString();
        }
        if (composed instanceof BigDecimal || composed instanceof BigInteger || composed instanceof UUID
            || composed instanceof TimeUUID)
            return composed.toString();
        if (composed instanceof Date date)
            return date.getTime();
        if (composed instanceof InetAddress address)
            return address.getHostAddress();
        throw new UndecodableValue("no JSON form for " + type.asCQL3Type() + " (" + composed.getClass().getName() + ")", null);
    }

    private static Map<String, Object> userType(UserType type, ByteBuffer value)
    {
        ByteBuffer[] fields = type.split(ByteBufferAccessor.instance, value);
        Map<String, Object> decoded = new LinkedHashMap<>();
        // A value written before fields were added has fewer fields; the missing ones are null.
        for (int i = 0; i < type.size(); i++)
            decoded.put(type.fieldNameAsString(i), i < fields.length ? decode(type.fieldType(i), fields[i]) : null);
        return decoded;
    }

    private static List<Object> tuple(TupleType type, ByteBuffer value)
    {
        ByteBuffer[] parts = type.split(ByteBufferAccessor.instance, value);
        List<Object> decoded = new ArrayList<>(parts.length);
        for (int i = 0; i < parts.length; i++)
            decoded.add(decode(type.type(i), parts[i]));
        return decoded;
    }

    /** A frozen list or set: an element count, then each element with its length. */
    private static List<Object> elements(AbstractType<?> elementType, ByteBuffer value)
    {
        List<ByteBuffer> raw = collectionElements(value, 1);
        List<Object> decoded = new ArrayList<>(raw.size());
        for (ByteBuffer element : raw)
            decoded.add(decode(elementType, element));
        return decoded;
    }

    private static List<List<Object>> map(MapType<?, ?> type, ByteBuffer value)
    {
        List<ByteBuffer> raw = collectionElements(value, 2);
        List<List<Object>> pairs = new ArrayList<>(raw.size() / 2);
        for (int i = 0; i < raw.size(); i += 2)
        {
            List<Object> pair = new ArrayList<>(2);
            pair.add(decode(type.getKeysType(), raw.get(i)));
            pair.add(decode(type.getValuesType(), raw.get(i + 1)));
            pairs.add(pair);
        }
        return pairs;
    }

    private static List<ByteBuffer> collectionElements(ByteBuffer value, int valuesPerElement)
    {
        ValueAccessor<ByteBuffer> accessor = ByteBufferAccessor.instance;
        int count = CollectionSerializer.readCollectionSize(value, accessor);
        int offset = CollectionSerializer.sizeOfCollectionSize();
        List<ByteBuffer> elements = new ArrayList<>(count * valuesPerElement);
        for (int i = 0; i < count * valuesPerElement; i++)
        {
            ByteBuffer element = CollectionSerializer.readValue(value, accessor, offset);
            offset += CollectionSerializer.sizeOfValue(element, accessor);
            elements.add(element);
        }
        return elements;
    }

    private static List<Object> vector(VectorType<?> type, ByteBuffer value)
    {
        List<ByteBuffer> raw = type.split(value);
        List<Object> decoded = new ArrayList<>(raw.size());
        for (ByteBuffer element : raw)
            decoded.add(decode(type.getElementsType(), element));
        return decoded;
    }
}
