package ai.clipper.container;

import java.util.Locale;

/** Clipper's input types: wire code, canonical name, element width in bytes (0: strings). */
public enum InputType {
    BYTES(0, "bytes", 1, "byte", "b"),
    INTEGERS(1, "integers", 4, "ints", "integer", "int", "i"),
    FLOATS(2, "floats", 4, "float", "f"),
    DOUBLES(3, "doubles", 8, "double", "d"),
    STRINGS(4, "strings", 0, "string", "str", "strs", "s");

    public final int code;
    public final String canonical;
    public final int width;
    private final String[] aliases;

    InputType(int code, String canonical, int width, String... aliases) {
        this.code = code;
        this.canonical = canonical;
        this.width = width;
        this.aliases = aliases;
    }

    /** The type named {@code name} (canonical or one of Clipper's aliases, any case). */
    public static InputType parse(String name) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        for (InputType t : values()) {
            if (t.canonical.equals(n)) {
                return t;
            }
            for (String a : t.aliases) {
                if (a.equals(n)) {
                    return t;
                }
            }
        }
        throw new IllegalArgumentException("unknown input type '" + name + "' (bytes, integers, floats, doubles, strings)");
    }

    /** The type of wire code {@code code}, or null. */
    public static InputType ofCode(long code) {
        for (InputType t : values()) {
            if (t.code == code) {
                return t;
            }
        }
        return null;
    }

    @Override
    public String toString() {
        return canonical;
    }
}
