package ai.clipper.examples;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.Collections;
import java.util.List;

import ai.clipper.container.Model;
import ai.clipper.container.ModelContainer;

/** Answers "1.0" to every input of any type, like the Python noop (clipper.model_runtime.models:noop). */
public class NoopModel implements Model {
    private static List<String> ones(int n) {
        return Collections.nCopies(n, "1.0");
    }

    @Override
    public List<String> predictBytes(List<byte[]> inputs) {
        return ones(inputs.size());
    }

    @Override
    public List<String> predictInts(List<IntBuffer> inputs) {
        return ones(inputs.size());
    }

    @Override
    public List<String> predictFloats(List<FloatBuffer> inputs) {
        return ones(inputs.size());
    }

    @Override
    public List<String> predictDoubles(List<DoubleBuffer> inputs) {
        return ones(inputs.size());
    }

    @Override
    public List<String> predictStrings(List<String> inputs) {
        return ones(inputs.size());
    }

    public static void main(String[] args) {
        ModelContainer.serve(new NoopModel());
    }
}
