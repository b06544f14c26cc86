package cdc.pipeline;

import java.io.IOException;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.core.JsonGenerator;

/**
 * Writes the plain values {@link CqlValues} produces. Dispatching on their few classes here, rather
 * than through Jackson's databind, keeps the per-value cost small: every cell of every change goes
 * through this.
 */
final class JsonValues
{
    private JsonValues()
    {
    }

    static void write(JsonGenerator out, Object value) throws IOException
    {
        if (value == null)
            out.writeNull();
        else if (value instanceof String)
            out.writeString((String) value);
        else if (value instanceof Long)
            out.writeNumber((Long) value);
        else if (value instanceof Integer || value instanceof Short || value instanceof Byte)
            out.writeNumber(((Number) value).intValue());
        else if (value instanceof Double)
            out.writeNumber((Double) value);
        else if (value instanceof Float)
            out.writeNumber((Float) value);
        else if (value instanceof Boolean)
            out.writeBoolean((Boolean) value);
        else if (value instanceof List)
        {
            out.writeStartArray();
            for (Object element : (List<?>) value)
                write(out, element);
            out.writeEndArray();
        }
        else if (value instanceof Map)
        {
            out.writeStartObject();
            for (Map.Entry<?, ?> field : ((Map<?, ?>) value).entrySet())
            {
                out.writeFieldName((String) field.getKey());
                write(out, field.getValue());
            }
            out.writeEndObject();
        }
        else
        {
            throw new IllegalArgumentException("not a JSON value: " + value.getClass().getName());
        }
    }
}
