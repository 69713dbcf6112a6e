package ai.clipper.container;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * The container's Prometheus endpoint: GET /metrics on CLIPPER_METRICS_HOST:CLIPPER_METRICS_PORT, with the
 * clipper_mc_* metrics every container of this project serves (the list, with types and buckets, is
 * clipper/model_runtime/metrics.py's MC_METRICS; keep them equal). Batches are counted by the model worker
 * thread, the only writer; the HTTP thread only reads.
 */
public final class Metrics {
    private static final double[] CLIPPER_LATENCY_BUCKETS = {5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500};
    private static final double[] CLIPPER_RPC_BUCKETS = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
    private static final double[] QUEUE_BUCKETS = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000};
    private static final double[] BATCH_BUCKETS = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    static final String CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

    /** Cumulative-bucket histogram with one writer. */
    static final class Histogram {
        private final double[] bounds;
        private final AtomicLongArray counts; // bounds.length + 1: the last is +Inf
        private volatile double sum;

        Histogram(double[] bounds) {
            this.bounds = bounds.clone();
            this.counts = new AtomicLongArray(bounds.length + 1);
        }

        void observe(double value) {
            int i = Arrays.binarySearch(bounds, value);
            if (i < 0) {
                i = -i - 1; // the first bound above value
            }
            counts.lazySet(i, counts.get(i) + 1);
            sum = sum + value; // one writer
        }

        void render(StringBuilder out, String name) {
            long total = 0;
            for (int i = 0; i <= bounds.length; i++) {
                total += counts.get(i);
                out.append(name).append("_bucket{le=\"").append(i < bounds.length ? number(bounds[i]) : "+Inf")
                        .append("\"} ").append(total).append('\n');
            }
            out.append(name).append("_sum ").append(number(sum)).append('\n');
            out.append(name).append("_count ").append(total).append('\n');
        }
    }

    private volatile long batches;
    private volatile long inputs;
    private volatile long errors;
    private final Histogram batchSize = new Histogram(BATCH_BUCKETS);
    private final Histogram recv = new Histogram(CLIPPER_RPC_BUCKETS);
    private final Histogram queue = new Histogram(QUEUE_BUCKETS);
    private final Histogram parse = new Histogram(CLIPPER_RPC_BUCKETS);
    private final Histogram handle = new Histogram(CLIPPER_LATENCY_BUCKETS);
    private final Histogram endToEnd = new Histogram(CLIPPER_LATENCY_BUCKETS);

    /**
     * A batch of {@code n} answered ({@code failed}: with errors); System.nanoTime() of its first frame, parsed
     * message, batch start, checked request and outputs ready. Called by the model worker thread only.
     */
    void batch(int n, boolean failed, long firstNs, long receivedNs, long startedNs, long parsedNs, long doneNs) {
        batches = batches + 1;
        inputs = inputs + n;
        if (failed) {
            errors = errors + 1;
        }
        batchSize.observe(n);
        recv.observe((receivedNs - firstNs) / 1e6);
        queue.observe((startedNs - receivedNs) / 1e6);
        if (!failed) {
            parse.observe((parsedNs - startedNs) / 1e6);
            handle.observe((doneNs - parsedNs) / 1e6);
        }
        endToEnd.observe((doneNs - firstNs) / 1e6);
    }

    /** Prometheus text format 0.0.4. */
    public String render() {
        StringBuilder out = new StringBuilder(8192);
        counter(out, "clipper_mc_pred_total", "Prediction requests (batches) answered, failed ones included.", batches);
        counter(out, "clipper_mc_pred_inputs_total", "Inputs answered (predictions), failed batches included.", inputs);
        counter(out, "clipper_mc_pred_errors_total", "Prediction requests (batches) answered with errors.", errors);
        histogram(out, "clipper_mc_pred_batch_size", "Inputs per prediction request.", batchSize);
        histogram(out, "clipper_mc_recv_time_ms", "The time in ms takes to receive RPC call: first frame to request parsed.", recv);
        histogram(out, "clipper_mc_queue_wait_ms", "The time in ms a received request waited before its batch started.", queue);
        histogram(out, "clipper_mc_parse_time_ms", "The time in ms takes to parse RPC call: checking the request.", parse);
        histogram(out, "clipper_mc_handle_time_ms", "The time in ms takes to make prediction (successful batches).", handle);
        histogram(out, "clipper_mc_end_to_end_latency_ms", "The time in ms takes from receive RPC call to send off prediction.", endToEnd);
        return out.toString();
    }

    private static void family(StringBuilder out, String name, String type, String help) {
        out.append("# HELP ").append(name).append(' ').append(help).append('\n');
        out.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }

    private static void counter(StringBuilder out, String name, String help, long value) {
        family(out, name, "counter", help);
        out.append(name).append(' ').append(value).append('\n');
    }

    private static void histogram(StringBuilder out, String name, String help, Histogram h) {
        family(out, name, "histogram", help);
        h.render(out, name);
    }

    /** A float as Python's repr() writes it for these values ("5.0", "0.1", "+Inf"). */
    static String number(double v) {
        if (Double.isInfinite(v)) {
            return v > 0 ? "+Inf" : "-Inf";
        }
        return Double.isNaN(v) ? "NaN" : Double.toString(v);
    }

    /** The metrics port cannot be bound. */
    public static final class ServerError extends RuntimeException {
        private static final long serialVersionUID = 1L;

        ServerError(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** GET /metrics on daemon threads until {@link #stop}. */
    static final class Server {
        private final HttpServer http;
        private final ExecutorService executor;

        Server(Metrics metrics, String host, int port) {
            try {
                http = HttpServer.create(new InetSocketAddress(host, port), 16);
            } catch (IOException | RuntimeException e) {
                throw new ServerError("cannot serve metrics on " + host + ":" + port + ": " + e.getMessage(), e);
            }
            executor = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "clipper-metrics");
                t.setDaemon(true);
                return t;
            });
            http.createContext("/", exchange -> answer(exchange, metrics));
            http.setExecutor(executor);
            http.start();
            Log.info("serving metrics on http://" + host + ":" + http.getAddress().getPort() + "/metrics");
        }

        private static void answer(HttpExchange exchange, Metrics metrics) throws IOException {
            try {
                int status = 200;
                String type = CONTENT_TYPE;
                String body;
                if (!exchange.getRequestURI().getPath().equals("/metrics")) {
                    status = 404;
                    type = "text/plain; charset=utf-8";
                    body = "not found: GET /metrics\n";
                } else if (!exchange.getRequestMethod().equals("GET")) {
                    status = 405;
                    type = "text/plain; charset=utf-8";
                    body = "method not allowed: GET /metrics\n";
                } else {
                    body = metrics.render();
                }
                byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
                exchange.getResponseHeaders().set("Content-Type", type);
                exchange.sendResponseHeaders(status, bytes.length);
                try (OutputStream os = exchange.getResponseBody()) {
                    os.write(bytes);
                }
            } finally {
                exchange.close();
            }
        }

        void stop() {
            http.stop(0);
            executor.shutdownNow();
        }
    }
}
