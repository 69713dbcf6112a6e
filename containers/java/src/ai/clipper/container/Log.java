package ai.clipper.container;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Instant;
import java.util.Locale;

/** Log lines on stderr: {@code <time> <LEVEL> clipper.java: <message>}; CLIPPER_LOG_LEVEL (INFO) filters them. */
final class Log {
    private Log() {}

    private static final String[] LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"};
    private static final int THRESHOLD = threshold(System.getenv("CLIPPER_LOG_LEVEL"));

    private static int threshold(String name) {
        for (int i = 0; name != null && i < LEVELS.length; i++) {
            if (LEVELS[i].equals(name.trim().toUpperCase(Locale.ROOT))) {
                return i;
            }
        }
        return 1;
    }

    static void debug(String m) {
        write(0, m, null);
    }

    static void info(String m) {
        write(1, m, null);
    }

    static void warn(String m) {
        write(2, m, null);
    }

    static void error(String m, Throwable t) {
        write(3, m, t);
    }

    static boolean debugEnabled() {
        return THRESHOLD == 0;
    }

    private static void write(int level, String m, Throwable t) {
        if (level < THRESHOLD) {
            return;
        }
        StringBuilder line = new StringBuilder(Instant.now().toString()).append(' ').append(LEVELS[level])
                .append(" clipper.java: ").append(m);
        if (t != null) {
            StringWriter trace = new StringWriter();
            t.printStackTrace(new PrintWriter(trace));
            line.append('\n').append(trace.toString().stripTrailing());
        }
        System.err.println(line);
    }
}
