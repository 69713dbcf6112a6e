package ai.clipper.container;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.List;

/**
 * A model served by {@link ModelContainer}. Implement the method of the input type the container is
 * started with (CLIPPER_INPUT_TYPE); each takes one batch and returns one output per input, in order.
 *
 * <p>Inputs are views of the received frames, not copies: each buffer spans one input
 * ({@code remaining()} elements from position 0), little-endian. They are valid during the call only.
 * Throwing fails the whole batch: every output becomes the error marker with the exception's message
 * (the frontend answers those queries with the app's default output), and the container keeps serving.
 */
public interface Model {
    /** {@code bytes}: each input is its frame itself (unsigned values: {@code b & 0xff}). */
    default List<String> predictBytes(List<byte[]> inputs) throws Exception {
        throw unsupported("bytes");
    }

    /** {@code integers}: int32 views. */
    default List<String> predictInts(List<IntBuffer> inputs) throws Exception {
        throw unsupported("integers");
    }

    /** {@code floats}: float32 views. */
    default List<String> predictFloats(List<FloatBuffer> inputs) throws Exception {
        throw unsupported("floats");
    }

    /** {@code doubles}: float64 views. */
    default List<String> predictDoubles(List<DoubleBuffer> inputs) throws Exception {
        throw unsupported("doubles");
    }

    /** {@code strings}: UTF-8 decoded (invalid bytes become U+FFFD). */
    default List<String> predictStrings(List<String> inputs) throws Exception {
        throw unsupported("strings");
    }

    private UnsupportedOperationException unsupported(String type) {
        return new UnsupportedOperationException(getClass().getSimpleName() + " does not take " + type + " inputs");
    }
}
