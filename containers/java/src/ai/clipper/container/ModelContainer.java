package ai.clipper.container;

import java.io.IOException;
import java.lang.reflect.Proxy;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.zeromq.ZMQ;

/**
 * Serves a {@link Model} to a Clipper RPC v3 query frontend (docs/protocol.md, part 1).
 *
 * <p>One socket thread per frontend address owns its DEALER socket; batches run on one model worker
 * thread (one batch at a time, whichever address sent it), so the socket thread keeps heartbeating and
 * answering the frontend while a batch runs. When nothing arrives for the session timeout, the socket
 * is closed and a new one connects (the frontend sees a new replica and asks it to register).
 *
 * <p>Runs with either ZeroMQ binding: libzmq-java (JNI over libzmq, ZMTP 3.1) or JeroMQ 0.3.x
 * (pure Java, ZMTP 2.0); only methods both have, with the same signatures, are used.
 */
public final class ModelContainer {
    /** Longest single wait on the socket, so that a stop is noticed quickly. */
    private static final long MAX_POLL_MS = 100;
    /** While a batch runs, the socket thread looks at the socket this often (or a quarter of the interval). */
    private static final long BUSY_TICK_MS = 50;
    /** A send that cannot go out for this long ends the session. */
    private static final int SEND_TIMEOUT_MS = 5000;

    private final Model model;
    private final Config config;
    private final ExecutorService worker;
    private final Metrics metrics; // null: no metrics endpoint
    private volatile boolean stopping;
    private volatile boolean readyTouched;
    private volatile boolean feedbackLogged;

    public ModelContainer(Model model, Config config) {
        this.model = model;
        this.config = config;
        this.metrics = config.metricsPort >= 0 ? new Metrics() : null;
        this.worker = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "clipper-model");
            t.setDaemon(true); // a model that never returns does not keep the JVM up
            return t;
        });
    }

    /** Serves {@code model} with the settings of the environment until SIGTERM/SIGINT, then exits 0. */
    public static void serve(Model model) {
        Config config;
        try {
            config = Config.fromEnvironment(System.getenv());
        } catch (IllegalArgumentException e) {
            System.err.println("clipper-java-container: error: " + e.getMessage());
            System.exit(2);
            return;
        }
        ModelContainer container = new ModelContainer(model, config);
        container.stopOnSignals();
        try {
            container.run();
        } catch (Metrics.ServerError e) {
            System.err.println("clipper-java-container: error: " + e.getMessage());
            System.exit(2);
        }
        System.exit(0);
    }

    /** {@code java ai.clipper.container.ModelContainer [ModelClass]}: see {@link ModelLoader}. */
    public static void main(String[] args) {
        Model model;
        try {
            model = ModelLoader.load(args, System.getenv());
        } catch (ModelLoader.LoadException e) {
            System.err.println("clipper-java-container: error: " + e.getMessage());
            System.exit(2);
            return;
        }
        serve(model);
    }

    /** Ends {@link #run} within about 0.1 s. */
    public void stop() {
        stopping = true;
    }

    /** SIGTERM and SIGINT call {@link #stop} (sun.misc.Signal, so that the JVM exits with status 0). */
    public void stopOnSignals() {
        try {
            Class<?> signal = Class.forName("sun.misc.Signal");
            Class<?> handlerType = Class.forName("sun.misc.SignalHandler");
            Object handler = Proxy.newProxyInstance(handlerType.getClassLoader(), new Class<?>[] {handlerType},
                    (proxy, method, a) -> {
                        switch (method.getName()) {
                            case "handle": stop(); return null;
                            case "hashCode": return System.identityHashCode(proxy);
                            case "equals": return proxy == a[0];
                            default: return "clipper stop handler";
                        }
                    });
            for (String name : new String[] {"TERM", "INT"}) {
                signal.getMethod("handle", signal, handlerType)
                        .invoke(null, signal.getConstructor(String.class).newInstance(name), handler);
            }
        } catch (ReflectiveOperationException | RuntimeException e) {
            Log.warn("no signal handlers (" + e + "); SIGTERM ends the JVM with status 143");
        }
    }

    /** The container's metrics (null when CLIPPER_METRICS_PORT is not set). */
    public Metrics metrics() {
        return metrics;
    }

    /**
     * Serves until {@link #stop}: one socket thread per frontend address (this thread takes the first), and
     * GET /metrics when the configuration names a metrics port ({@link Metrics.ServerError} if it is taken).
     */
    public void run() {
        Metrics.Server metricsServer = metrics == null ? null
                : new Metrics.Server(metrics, config.metricsHost, config.metricsPort);
        ZMQ.Context ctx = ZMQ.context(1);
        List<Thread> threads = new ArrayList<>();
        List<String> addresses = new ArrayList<>();
        for (int port : config.ports) {
            addresses.add("tcp://" + config.host + ":" + port);
        }
        try {
            for (String address : addresses.subList(1, addresses.size())) {
                Thread t = new Thread(() -> serveAddress(ctx, address), "clipper-session " + address);
                t.setDaemon(true);
                t.start();
                threads.add(t);
            }
            serveAddress(ctx, addresses.get(0));
            for (Thread t : threads) {
                t.join();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            stopping = true;
            worker.shutdownNow();
            ctx.term();
            if (metricsServer != null) {
                metricsServer.stop();
            }
        }
    }

    private void serveAddress(ZMQ.Context ctx, String address) {
        Log.info("serving " + config.name + ":" + config.version + " (" + config.inputType + ") to " + address);
        while (!stopping) {
            try {
                new Session(ctx, address).run();
            } catch (RuntimeException e) { // a ZeroMQ error: start over with a new socket
                Log.error("session with " + address + " failed; reconnecting", e);
                sleepQuietly(100);
            }
        }
    }

    /** Runs one batch on the worker thread; a failure becomes one error output per input. */
    byte[][] runBatch(Protocol.Message request) {
        int n = request.inputs.size();
        String message;
        long startedNs = metrics == null ? 0 : System.nanoTime();
        long parsedNs = startedNs;
        try {
            InputType type = InputType.ofCode(request.inputType);
            if (type != config.inputType) {
                throw new BatchError("request input type " + (type == null ? Long.toUnsignedString(request.inputType) : type)
                        + " does not match the container's input type " + config.inputType);
            }
            if (metrics != null) {
                parsedNs = System.nanoTime();
            }
            List<String> result = Inputs.predict(model, type, request.inputs);
            if (result == null) {
                throw new BatchError("model returned null, expected a list of " + n + " outputs");
            }
            if (result.size() != n) {
                throw new BatchError("model returned " + result.size() + " outputs for a batch of " + n);
            }
            byte[][] outputs = new byte[n][];
            for (int i = 0; i < n; i++) {
                String o = result.get(i);
                if (o == null) {
                    throw new BatchError("model returned null for input " + i);
                }
                outputs[i] = Protocol.utf8(o);
            }
            if (metrics != null) {
                metrics.batch(n, false, request.firstNs, request.receivedNs, startedNs, parsedNs, System.nanoTime());
            }
            return outputs;
        } catch (BatchError e) {
            message = e.getMessage();
            Log.error("batch of " + n + " failed: " + message, null);
        } catch (Throwable e) { // a failing model must not kill the container
            message = e.getClass().getSimpleName() + ": " + e.getMessage();
            Log.error("batch of " + n + " failed: model threw " + message, e);
        }
        if (metrics != null) {
            metrics.batch(n, true, request.firstNs, request.receivedNs, startedNs, parsedNs, System.nanoTime());
        }
        byte[][] outputs = new byte[n][];
        java.util.Arrays.fill(outputs, Protocol.errorOutput(message));
        return outputs;
    }

    private void registered(String address) {
        Log.info("registered " + config.name + ":" + config.version + " with " + address);
        if (config.readyFile != null && !readyTouched) {
            readyTouched = true;
            try {
                Path p = Paths.get(config.readyFile);
                if (!Files.exists(p)) {
                    Files.createFile(p);
                }
            } catch (IOException e) {
                Log.warn("cannot touch CLIPPER_READY_FILE " + config.readyFile + ": " + e);
            }
        }
    }

    private static void sleepQuietly(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static final class BatchError extends Exception {
        BatchError(String message) {
            super(message);
        }
    }

    /** One DEALER connection to a frontend; used by its socket thread only. */
    private final class Session {
        private final String address;
        private final ZMQ.Socket sock;
        private final long intervalNs = (long) (config.heartbeatInterval * 1e9);
        private final long timeoutNs = (long) (config.sessionTimeout * 1e9);
        private long heard = System.nanoTime(); // last message from the frontend
        private long sent = heard; // last message to it
        private final ArrayDeque<Protocol.Message> pending = new ArrayDeque<>(); // batches waiting for the worker
        private Protocol.Message running;
        private Future<byte[][]> result;
        private long firstNs; // when the first frame of the last message received was read (with metrics on)

        Session(ZMQ.Context ctx, String address) {
            this.address = address;
            this.sock = ctx.socket(ZMQ.DEALER);
        }

        void run() {
            try {
                sock.setLinger(0);
                sock.setReceiveTimeOut((int) Math.max(1, Math.min(MAX_POLL_MS, Math.min(intervalNs, timeoutNs) / 1_000_000)));
                sock.setSendTimeOut(SEND_TIMEOUT_MS);
                sock.connect(address);
                send(Protocol.heartbeat());
                boolean connected = false; // like Clipper: no repeated heartbeats before the frontend answers
                while (!stopping) {
                    long now = System.nanoTime();
                    if (now - heard >= timeoutNs) {
                        Log.warn(String.format("nothing heard from %s for %.1f s; reconnecting", address, (now - heard) / 1e9));
                        return;
                    }
                    if (running != null) {
                        busy();
                        continue;
                    }
                    if (!pending.isEmpty()) {
                        start(pending.poll());
                        continue;
                    }
                    if (connected && now - Math.max(heard, sent) >= intervalNs) {
                        send(Protocol.heartbeat());
                    }
                    List<byte[]> frames = receive(0);
                    if (frames == null) {
                        continue;
                    }
                    connected = true;
                    heard = System.nanoTime();
                    handle(frames);
                }
            } finally {
                if (running != null) {
                    Log.warn("dropping the answer to the batch in flight: the session with " + address + " ended");
                }
                sock.close();
            }
        }

        /** A batch runs: wait for it a tick, then heartbeat when due and answer the frontend meanwhile. */
        private void busy() {
            long tickMs = Math.max(1, Math.min(BUSY_TICK_MS, intervalNs / 4_000_000));
            try {
                byte[][] outputs = result.get(tickMs, TimeUnit.MILLISECONDS);
                Protocol.Message done = running;
                running = null;
                result = null;
                send(Protocol.predictionResponse(done.msgId, outputs));
                heard = sent;
                return;
            } catch (TimeoutException e) {
                // still running
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                stopping = true;
                return;
            } catch (ExecutionException e) { // runBatch catches everything; this is a bug
                Log.error("model worker failed", e.getCause());
                running = null;
                result = null;
                return;
            }
            if (System.nanoTime() - sent >= intervalNs) {
                send(Protocol.heartbeat());
            }
            List<byte[]> frames;
            while ((frames = receive(ZMQ.DONTWAIT)) != null) {
                heard = System.nanoTime();
                handle(frames);
            }
        }

        private void start(Protocol.Message request) {
            running = request;
            result = worker.submit(() -> runBatch(request));
        }

        private void handle(List<byte[]> frames) {
            Protocol.Message msg;
            try {
                msg = Protocol.parse(frames);
            } catch (Protocol.ProtocolException e) {
                Log.error("dropping malformed message from the frontend: " + e.getMessage(), null);
                return;
            }
            if (msg.isPredict()) {
                if (metrics != null) {
                    msg.firstNs = firstNs;
                    msg.receivedNs = System.nanoTime();
                }
                if (running == null && pending.isEmpty()) {
                    start(msg);
                } else {
                    pending.add(msg); // after the batch that runs
                }
            } else if (msg.asksToRegister()) {
                send(Protocol.newContainer(config.name, config.version, config.inputType));
                registered(address);
            } else if (msg.kind == Protocol.MSG_CONTAINER_CONTENT && !feedbackLogged) {
                feedbackLogged = true;
                Log.warn("feedback requests are not supported by this container; ignoring them");
            }
        }

        private List<byte[]> receive(int flags) {
            byte[] first = sock.recv(flags);
            if (first == null) {
                return null;
            }
            if (metrics != null) {
                firstNs = System.nanoTime();
            }
            List<byte[]> frames = new ArrayList<>(8);
            frames.add(first);
            while (sock.hasReceiveMore()) {
                frames.add(sock.recv(0));
            }
            return frames;
        }

        private void send(List<byte[]> frames) {
            int last = frames.size() - 1;
            for (int i = 0; i <= last; i++) {
                if (!sock.send(frames.get(i), i < last ? ZMQ.SNDMORE : 0)) {
                    throw new IllegalStateException("cannot send to " + address + " (send timed out)");
                }
            }
            sent = System.nanoTime();
        }
    }
}
