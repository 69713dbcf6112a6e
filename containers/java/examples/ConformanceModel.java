package ai.clipper.examples;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import ai.clipper.container.Model;
import ai.clipper.container.ModelContainer;

/**
 * The conformance model every container library ships (tests/conformance): numbers and bytes answer
 * "count:sum" (each element truncated toward zero to a long; bytes unsigned), strings "utf8Length:string".
 * A batch holding a poisoned input (numbers: first element -7; bytes: first byte 0xEE; strings: "poison")
 * fails as a whole.
 */
public class ConformanceModel implements Model {
    private static IllegalArgumentException poisoned(int i) {
        return new IllegalArgumentException("poisoned input " + i + " in the batch");
    }

    @Override
    public List<String> predictBytes(List<byte[]> inputs) {
        List<String> out = new ArrayList<>(inputs.size());
        for (int i = 0; i < inputs.size(); i++) {
            byte[] x = inputs.get(i);
            if (x.length > 0 && (x[0] & 0xff) == 0xEE) {
                throw poisoned(i);
            }
            long sum = 0;
            for (byte b : x) {
                sum += b & 0xff;
            }
            out.add(x.length + ":" + sum);
        }
        return out;
    }

    @Override
    public List<String> predictInts(List<IntBuffer> inputs) {
        List<String> out = new ArrayList<>(inputs.size());
        for (int i = 0; i < inputs.size(); i++) {
            IntBuffer x = inputs.get(i);
            int n = x.remaining();
            if (n > 0 && x.get(0) == -7) {
                throw poisoned(i);
            }
            long sum = 0;
            for (int k = 0; k < n; k++) {
                sum += x.get(k);
            }
            out.add(n + ":" + sum);
        }
        return out;
    }

    @Override
    public List<String> predictFloats(List<FloatBuffer> inputs) {
        List<String> out = new ArrayList<>(inputs.size());
        for (int i = 0; i < inputs.size(); i++) {
            FloatBuffer x = inputs.get(i);
            int n = x.remaining();
            if (n > 0 && x.get(0) == -7f) {
                throw poisoned(i);
            }
            long sum = 0;
            for (int k = 0; k < n; k++) {
                sum += (long) x.get(k); // truncates toward zero
            }
            out.add(n + ":" + sum);
        }
        return out;
    }

    @Override
    public List<String> predictDoubles(List<DoubleBuffer> inputs) {
        List<String> out = new ArrayList<>(inputs.size());
        for (int i = 0; i < inputs.size(); i++) {
            DoubleBuffer x = inputs.get(i);
            int n = x.remaining();
            if (n > 0 && x.get(0) == -7d) {
                throw poisoned(i);
            }
            long sum = 0;
            for (int k = 0; k < n; k++) {
                sum += (long) x.get(k);
            }
            out.add(n + ":" + sum);
        }
        return out;
    }

    @Override
    public List<String> predictStrings(List<String> inputs) {
        List<String> out = new ArrayList<>(inputs.size());
        for (int i = 0; i < inputs.size(); i++) {
            String s = inputs.get(i);
            if (s.equals("poison")) {
                throw poisoned(i);
            }
            out.add(s.getBytes(StandardCharsets.UTF_8).length + ":" + s);
        }
        return out;
    }

    public static void main(String[] args) {
        ModelContainer.serve(new ConformanceModel());
    }
}
