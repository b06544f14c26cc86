package cdc.pipeline;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;

/**
 * The output: newline-delimited JSON where each line reaches the stream whole or not at all. A line is
 * built in memory and written out on {@link #commit}; if building it fails half way (a value or a
 * structure the writers did not expect), {@link #abandon} drops it, and the caller writes an error
 * line in its place. The reader of the stream never sees a broken line.
 */
final class JsonLines
{
    private final JsonFactory factory = new JsonFactory();
    private final OutputStream stream;
    private final ByteArrayOutputStream line = new ByteArrayOutputStream(1 << 12);
    private JsonGenerator generator;

    JsonLines(OutputStream stream) throws IOException
    {
        this.stream = stream;
        this.generator = newGenerator();
    }

    private JsonGenerator newGenerator() throws IOException
    {
        JsonGenerator created = factory.createGenerator(line);
        // Lines end with '\n' from commit(); Jackson's default space between root values would start
        // every line after the first with a blank.
        created.setRootValueSeparator(null);
        return created;
    }

    /** The generator for a new line. */
    JsonGenerator begin()
    {
        line.reset();
        return generator;
    }

    void commit() throws IOException
    {
        generator.flush();
        line.write('\n');
        line.writeTo(stream);
    }

    /** Drops the line being built; its generator may be mid-structure, so the next line gets a new one. */
    void abandon() throws IOException
    {
        line.reset();
        generator = newGenerator();
    }

    void flush() throws IOException
    {
        stream.flush();
    }
}
