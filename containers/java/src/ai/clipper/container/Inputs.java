package ai.clipper.container;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** Typed views of a batch's input frames (no copies, except the UTF-8 decoding of strings). */
public final class Inputs {
    private Inputs() {}

    public static List<IntBuffer> ints(List<byte[]> frames) {
        List<IntBuffer> out = new ArrayList<>(frames.size());
        for (byte[] f : frames) {
            out.add(little(f, InputType.INTEGERS).asIntBuffer());
        }
        return out;
    }

    public static List<FloatBuffer> floats(List<byte[]> frames) {
        List<FloatBuffer> out = new ArrayList<>(frames.size());
        for (byte[] f : frames) {
            out.add(little(f, InputType.FLOATS).asFloatBuffer());
        }
        return out;
    }

    public static List<DoubleBuffer> doubles(List<byte[]> frames) {
        List<DoubleBuffer> out = new ArrayList<>(frames.size());
        for (byte[] f : frames) {
            out.add(little(f, InputType.DOUBLES).asDoubleBuffer());
        }
        return out;
    }

    public static List<String> strings(List<byte[]> frames) {
        String[] out = new String[frames.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = new String(frames.get(i), StandardCharsets.UTF_8);
        }
        return Arrays.asList(out);
    }

    /** Runs the predict method of {@code type} on the batch {@code frames}. */
    static List<String> predict(Model model, InputType type, List<byte[]> frames) throws Exception {
        switch (type) {
            case BYTES: return model.predictBytes(frames);
            case INTEGERS: return model.predictInts(ints(frames));
            case FLOATS: return model.predictFloats(floats(frames));
            case DOUBLES: return model.predictDoubles(doubles(frames));
            default: return model.predictStrings(strings(frames));
        }
    }

    private static ByteBuffer little(byte[] frame, InputType type) {
        if (frame.length % type.width != 0) {
            throw new IllegalArgumentException("input size is not a multiple of " + type.width + " bytes (" + type + ")");
        }
        return ByteBuffer.wrap(frame).order(ByteOrder.LITTLE_ENDIAN);
    }
}
