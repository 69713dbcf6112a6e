package ai.clipper.container;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Clipper RPC v3 codec (docs/protocol.md, part 1), frames as a container's DEALER socket sends and
 * receives them: the empty delimiter first; messages from the frontend then carry a u32 RPC version.
 */
public final class Protocol {
    private Protocol() {}

    public static final int RPC_VERSION = 3;
    static final int MSG_NEW_CONTAINER = 0;
    static final int MSG_CONTAINER_CONTENT = 1;
    static final int MSG_HEARTBEAT = 2;
    static final int HEARTBEAT_REQUEST_METADATA = 1;
    static final int REQUEST_PREDICT = 0;
    static final int REQUEST_FEEDBACK = 1;
    /** Prefix of the outputs of a failed batch. */
    public static final byte[] ERROR_PREFIX = "\0error:".getBytes(StandardCharsets.US_ASCII);
    static final int MAX_ERROR_BYTES = 500;
    private static final byte[] EMPTY = new byte[0];

    /** A frontend message that does not follow the protocol. */
    public static final class ProtocolException extends Exception {
        ProtocolException(String message) {
            super(message);
        }
    }

    /** A message from the frontend: a heartbeat reply, a predict request, or a feedback request. */
    public static final class Message {
        public final int kind; // MSG_HEARTBEAT, or MSG_CONTAINER_CONTENT with requestType
        public final int heartbeatType;
        public final int requestType;
        public final byte[] msgId;
        public final long inputType;
        public final List<byte[]> inputs;
        /** System.nanoTime() when the first frame was read and when the message was parsed (with metrics on). */
        long firstNs;
        long receivedNs;

        Message(int kind, int heartbeatType, int requestType, byte[] msgId, long inputType, List<byte[]> inputs) {
            this.kind = kind;
            this.heartbeatType = heartbeatType;
            this.requestType = requestType;
            this.msgId = msgId;
            this.inputType = inputType;
            this.inputs = inputs;
        }

        boolean isPredict() {
            return kind == MSG_CONTAINER_CONTENT && requestType == REQUEST_PREDICT;
        }

        boolean asksToRegister() {
            return kind == MSG_HEARTBEAT && heartbeatType == HEARTBEAT_REQUEST_METADATA;
        }
    }

    static byte[] u32(int v) {
        return ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(v).array();
    }

    static byte[] u64(long v) {
        return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array();
    }

    private static int readU32(byte[] frame, String what) throws ProtocolException {
        if (frame.length != 4) {
            throw new ProtocolException(what + ": expected a 4-byte u32 frame, got " + frame.length + " bytes");
        }
        return ByteBuffer.wrap(frame).order(ByteOrder.LITTLE_ENDIAN).getInt();
    }

    /** Container to frontend: {@code ["", u32 2]}. */
    public static List<byte[]> heartbeat() {
        return List.of(EMPTY, u32(MSG_HEARTBEAT));
    }

    /** Container to frontend: {@code ["", u32 0, name, version, "<code>", u32 3]}. */
    public static List<byte[]> newContainer(String name, String version, InputType type) {
        return List.of(EMPTY, u32(MSG_NEW_CONTAINER), utf8(name), utf8(version),
                utf8(Integer.toString(type.code)), u32(RPC_VERSION));
    }

    /** Container to frontend: {@code ["", u32 1, msgId, u64 8(1+n), u64[n, len...], outputs...]}. */
    public static List<byte[]> predictionResponse(byte[] msgId, byte[][] outputs) {
        int n = outputs.length;
        ByteBuffer header = ByteBuffer.allocate(8 * (n + 1)).order(ByteOrder.LITTLE_ENDIAN);
        header.putLong(n);
        for (byte[] o : outputs) {
            header.putLong(o.length);
        }
        List<byte[]> frames = new ArrayList<>(n + 5);
        frames.add(EMPTY);
        frames.add(u32(MSG_CONTAINER_CONTENT));
        frames.add(msgId);
        frames.add(u64(8L * (n + 1)));
        frames.add(header.array());
        for (byte[] o : outputs) {
            frames.add(o);
        }
        return frames;
    }

    /** The output reporting a failed batch: the prefix and at most 500 bytes of message (whole characters). */
    public static byte[] errorOutput(String message) {
        byte[] raw = utf8(message);
        int len = Math.min(raw.length, MAX_ERROR_BYTES);
        while (len > 0 && len < raw.length && (raw[len] & 0xC0) == 0x80) {
            len--; // do not cut a character
        }
        byte[] out = new byte[ERROR_PREFIX.length + len];
        System.arraycopy(ERROR_PREFIX, 0, out, 0, ERROR_PREFIX.length);
        System.arraycopy(raw, 0, out, ERROR_PREFIX.length, len);
        return out;
    }

    /** Parses a frontend-to-container message. */
    public static Message parse(List<byte[]> frames) throws ProtocolException {
        if (frames.size() < 3) {
            throw new ProtocolException("message too short: " + frames.size() + " frames");
        }
        if (frames.get(0).length != 0) {
            throw new ProtocolException("missing empty delimiter frame");
        }
        int version = readU32(frames.get(1), "rpc version");
        if (version != RPC_VERSION) {
            throw new ProtocolException("unsupported rpc version " + Integer.toUnsignedString(version) + " (expected 3)");
        }
        int type = readU32(frames.get(2), "message type");
        if (type == MSG_HEARTBEAT) {
            if (frames.size() != 4) {
                throw new ProtocolException("heartbeat: expected 4 frames, got " + frames.size());
            }
            return new Message(MSG_HEARTBEAT, readU32(frames.get(3), "heartbeat type"), -1, null, -1, null);
        }
        if (type != MSG_CONTAINER_CONTENT) {
            throw new ProtocolException("unexpected message type " + Integer.toUnsignedString(type));
        }
        if (frames.size() < 5) {
            throw new ProtocolException("container content: expected at least 5 frames, got " + frames.size());
        }
        byte[] msgId = frames.get(3);
        readU32(msgId, "message id");
        int requestType = readU32(frames.get(4), "request type");
        if (requestType == REQUEST_FEEDBACK) {
            return new Message(MSG_CONTAINER_CONTENT, -1, REQUEST_FEEDBACK, msgId, -1, null);
        }
        if (requestType != REQUEST_PREDICT) {
            throw new ProtocolException("unknown request type " + Integer.toUnsignedString(requestType));
        }
        if (frames.size() < 7) {
            throw new ProtocolException("predict: expected at least 7 frames, got " + frames.size());
        }
        byte[] lenFrame = frames.get(5);
        byte[] headerFrame = frames.get(6);
        long headerLen = lenFrame.length == 8 ? ByteBuffer.wrap(lenFrame).order(ByteOrder.LITTLE_ENDIAN).getLong() : -1;
        if (headerLen != headerFrame.length || headerLen < 16 || headerLen % 8 != 0) {
            throw new ProtocolException("predict: bad header length " + headerLen + " for " + headerFrame.length + " bytes");
        }
        ByteBuffer header = ByteBuffer.wrap(headerFrame).order(ByteOrder.LITTLE_ENDIAN);
        long inputType = header.getLong();
        long n = header.getLong();
        int count = frames.size() - 7;
        if (n != count || headerLen / 8 != n + 2) {
            throw new ProtocolException("predict: header announces " + Long.toUnsignedString(n) + " inputs, got "
                    + count + " frames");
        }
        List<byte[]> inputs = frames.subList(7, frames.size());
        for (byte[] input : inputs) {
            if (header.getLong() != input.length) {
                throw new ProtocolException("predict: input frame sizes differ from the header");
            }
        }
        return new Message(MSG_CONTAINER_CONTENT, -1, REQUEST_PREDICT, msgId, inputType, inputs);
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
