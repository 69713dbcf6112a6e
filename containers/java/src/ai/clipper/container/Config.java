package ai.clipper.container;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A container's settings, from Clipper's environment variables: CLIPPER_MODEL_NAME and
 * CLIPPER_MODEL_VERSION (required), CLIPPER_INPUT_TYPE (doubles), CLIPPER_IP (127.0.0.1),
 * CLIPPER_PORT (7000; comma-separated ports for a query frontend run with --workers),
 * CLIPPER_HEARTBEAT_INTERVAL (1 s), CLIPPER_SESSION_TIMEOUT (10 s), CLIPPER_READY_FILE (touched once
 * registered).
 */
public final class Config {
    public final String name;
    public final String version;
    public final InputType inputType;
    public final String host;
    public final List<Integer> ports;
    public final double heartbeatInterval;
    public final double sessionTimeout;
    public final String readyFile;

    public Config(String name, String version, InputType inputType, String host, List<Integer> ports,
                  double heartbeatInterval, double sessionTimeout, String readyFile) {
        if (name == null || name.isEmpty()) {
            throw new IllegalArgumentException("model name is required: set CLIPPER_MODEL_NAME");
        }
        if (version == null || version.isEmpty()) {
            throw new IllegalArgumentException("model version is required: set CLIPPER_MODEL_VERSION");
        }
        if (!(heartbeatInterval > 0) || !(sessionTimeout > 0)) {
            throw new IllegalArgumentException("heartbeat interval and session timeout must be positive");
        }
        if (ports.isEmpty()) {
            throw new IllegalArgumentException("at least one frontend port is needed");
        }
        this.name = name;
        this.version = version;
        this.inputType = inputType;
        this.host = host;
        this.ports = List.copyOf(ports);
        this.heartbeatInterval = heartbeatInterval;
        this.sessionTimeout = sessionTimeout;
        this.readyFile = readyFile == null || readyFile.isEmpty() ? null : readyFile;
    }

    /** The settings in {@code env} (e.g. {@code System.getenv()}); IllegalArgumentException says what is wrong. */
    public static Config fromEnvironment(Map<String, String> env) {
        List<Integer> ports = new ArrayList<>();
        String portList = env.getOrDefault("CLIPPER_PORT", "7000");
        for (String p : portList.split(",")) {
            int port;
            try {
                port = Integer.parseInt(p.trim());
            } catch (NumberFormatException e) {
                port = -1;
            }
            if (port <= 0 || port > 65535) {
                throw new IllegalArgumentException("invalid port '" + portList + "' (CLIPPER_PORT: a port or comma-separated ports)");
            }
            ports.add(port);
        }
        return new Config(env.get("CLIPPER_MODEL_NAME"), env.get("CLIPPER_MODEL_VERSION"),
                InputType.parse(env.getOrDefault("CLIPPER_INPUT_TYPE", "doubles")),
                env.getOrDefault("CLIPPER_IP", "127.0.0.1"), ports,
                seconds(env, "CLIPPER_HEARTBEAT_INTERVAL", 1.0), seconds(env, "CLIPPER_SESSION_TIMEOUT", 10.0),
                env.get("CLIPPER_READY_FILE"));
    }

    private static double seconds(Map<String, String> env, String key, double fallback) {
        String v = env.get(key);
        if (v == null || v.isBlank()) {
            return fallback;
        }
        try {
            return Double.parseDouble(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + " must be a number of seconds, got '" + v + "'");
        }
    }
}
