package ai.clipper.container;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A container's settings, from Clipper's environment variables: CLIPPER_MODEL_NAME and
 * CLIPPER_MODEL_VERSION (required), CLIPPER_INPUT_TYPE (doubles), CLIPPER_IP (127.0.0.1),
 * CLIPPER_PORT (7000; comma-separated ports for a query frontend run with --workers),
 * CLIPPER_HEARTBEAT_INTERVAL (1 s), CLIPPER_SESSION_TIMEOUT (10 s), CLIPPER_READY_FILE (touched once
 * registered), CLIPPER_METRICS_PORT (Prometheus metrics on GET /metrics there; unset or empty: none) and
 * CLIPPER_METRICS_HOST (127.0.0.1).
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
    /** The metrics port: -1 for none, 0 for any free one. */
    public final int metricsPort;
    public final String metricsHost;

    public Config(String name, String version, InputType inputType, String host, List<Integer> ports,
                  double heartbeatInterval, double sessionTimeout, String readyFile) {
        this(name, version, inputType, host, ports, heartbeatInterval, sessionTimeout, readyFile, -1, "127.0.0.1");
    }

    public Config(String name, String version, InputType inputType, String host, List<Integer> ports,
                  double heartbeatInterval, double sessionTimeout, String readyFile, int metricsPort,
                  String metricsHost) {
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
        if (metricsPort < -1 || metricsPort > 65535) {
            throw new IllegalArgumentException("invalid metrics port " + metricsPort);
        }
        this.metricsPort = metricsPort;
        this.metricsHost = metricsHost == null || metricsHost.isEmpty() ? "127.0.0.1" : metricsHost;
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
                env.get("CLIPPER_READY_FILE"), metricsPort(env.get("CLIPPER_METRICS_PORT")),
                env.get("CLIPPER_METRICS_HOST"));
    }

    private static int metricsPort(String v) {
        if (v == null || v.isBlank()) {
            return -1;
        }
        int port;
        try {
            port = Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            port = -2;
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("invalid metrics port '" + v + "' (CLIPPER_METRICS_PORT: a port, or empty)");
        }
        return port;
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
