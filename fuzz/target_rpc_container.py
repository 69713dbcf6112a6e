"""The model container's side of Clipper RPC v3: every message the frontend's ROUTER sends it.

Input format (shared with rust_core/fuzz): frames, each a one-byte length L and L bytes; byte 0
first picks the container's input type (`b % 5`) and the rest are the frames.

Three layers are checked:
* `clipper.model_runtime.protocol.parse_request(frames)` returns a Heartbeat, PredictRequest or
  FeedbackRequest, or raises ProtocolError (a ValueError); a PredictRequest is consistent with its
  header (one input per announced size, sizes as announced);
* `clipper.rust_core.decode_batch(frames)`, the compiled decoder the session's connection hands batches
  over with, agrees with it: a batch exactly when the Python codec finds a PredictRequest, with the same
  id, input type and inputs;
* `_Session.handle`, the session loop's step (run the model on a batch and answer it, or parse and
  answer another message): it never raises, so a malformed message is dropped and the session goes on;
  every message it sends (encoded as its connection encodes it, `rust_core.encode_prediction`) is a
  well-formed registration or prediction response (one output per input, lengths as in its header).
"""

from __future__ import annotations

import struct

from .common import FEATURES, Failure, split_frames, template

NAME = "rpc_container"


def _model(batch):
    """A model that looks at every input: its shape or length, as text."""
    return [repr(getattr(x, "shape", len(x))) for x in batch]


class _SentRecorder:
    """Stands in for a session's connection (none is made): keeps what the session sends, each message's
    frames as the connection would write them."""

    def __init__(self, rust_core) -> None:
        self.rust_core = rust_core
        self.sent: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> None:
        self.sent.append([bytes(f) for f in frames])

    def send_prediction(self, msg_id: int, outputs) -> None:
        self.sent.append(self.rust_core.encode_prediction(msg_id, outputs))

    def close(self) -> None:
        pass


class Target:
    def __init__(self) -> None:
        from clipper import rust_core
        from clipper.model_runtime import protocol, runtime

        self.p = protocol
        self.rust_core = rust_core
        self.runtime = runtime
        self.containers = [
            runtime._Container(_model, "m", "1", code, ["tcp://127.0.0.1:1"], 1.0, 10.0, None) for code in range(5)
        ]
        for c in self.containers:
            c.feedback_logged = True  # log once is fine, but keep the fuzz output quiet
        # the session step the runtime's loop calls for each message (a connection never made: nothing is sent)
        self.sessions = [runtime._Session(c, "tcp://127.0.0.1:1") for c in self.containers]
        for session in self.sessions:
            session.owner.acquire()  # held by the session thread except while a batch runs
            session.sock.close()
            session.sock = _SentRecorder(rust_core)
        import logging

        logging.getLogger("clipper.model_runtime").setLevel(logging.CRITICAL)

    def check(self, data: bytes) -> None:
        if not data:
            return
        session = self.sessions[data[0] % 5]
        container = session.container
        frames = split_frames(data[1:])
        p = self.p
        try:
            msg = p.parse_request(frames)
        except p.ProtocolError as e:
            FEATURES("ProtocolError", template(str(e)))
            msg = None
        FEATURES("parsed", type(msg).__name__)
        if isinstance(msg, p.PredictRequest):
            header = struct.unpack(f"<{len(frames[6]) // 8}Q", frames[6])
            if header[1] != len(msg.inputs) or list(header[2:]) != [len(x) for x in msg.inputs]:
                raise Failure(f"PredictRequest disagrees with its header {header}: {msg}")
            if msg.msg_id != frames[3]:
                raise Failure("msg_id is not the raw id frame")
        batch = self.rust_core.decode_batch(frames)
        self._check_batch(batch, msg)
        session.sock.sent.clear()
        session.handle(batch if batch is not None else frames)  # any exception here would end the session
        if len(session.sock.sent) > 1:
            raise Failure(f"{len(session.sock.sent)} messages sent for one received")
        for out in session.sock.sent:
            self._check_sent(out, msg, container.input_type)

    def _check_batch(self, batch, msg) -> None:
        p = self.p
        if not isinstance(msg, p.PredictRequest):
            if batch is not None:
                raise Failure(f"the compiled decoder found a batch where the Python codec found {msg}")
            return
        if batch is None:
            raise Failure(f"the compiled decoder found no batch in {msg}")
        msg_id, input_type, data, sizes = batch
        if msg_id != int.from_bytes(msg.msg_id, "little") or input_type != msg.input_type:
            raise Failure(f"decoded batch {batch[:2]} differs from {msg}")
        if input_type == p.INPUT_STRINGS:
            expected = [str(b, "utf-8", "replace") for b in msg.inputs]
            if sizes is not None or data != expected:
                raise Failure(f"decoded strings {data!r} differ from {expected!r}")
        elif type(data) is not bytearray or data != b"".join(msg.inputs) or sizes != [len(x) for x in msg.inputs]:
            raise Failure(f"decoded inputs {data!r} {sizes} differ from {msg.inputs}")

    def _check_sent(self, out: list[bytes], msg, input_type: int) -> None:
        p = self.p
        if out[:2] == [b"", struct.pack("<I", p.MSG_NEW_CONTAINER)]:
            FEATURES("sent registration")
            if not isinstance(msg, p.Heartbeat) or msg.heartbeat_type != p.HEARTBEAT_REQUEST_METADATA:
                raise Failure(f"registration sent for {msg}")
            return
        if not isinstance(msg, p.PredictRequest):
            raise Failure(f"sent {out!r} for {msg}")
        if out[0] != b"" or out[1] != struct.pack("<I", p.MSG_CONTAINER_CONTENT) or out[2] != msg.msg_id:
            raise Failure(f"malformed response head {out[:3]!r}")
        n = len(msg.inputs)
        header = struct.unpack(f"<{len(out[4]) // 8}Q", out[4])
        outputs = out[5:]
        if out[3] != struct.pack("<Q", len(out[4])) or header[0] != n or len(outputs) != n:
            raise Failure(f"response for {n} inputs has header {header} and {len(outputs)} outputs")
        if list(header[1:]) != [len(o) for o in outputs]:
            raise Failure(f"response lengths {header[1:]} differ from its outputs")
        errors = sum(o.startswith(p.ERROR_PREFIX) for o in outputs)
        FEATURES("sent response", input_type, msg.input_type == input_type, min(n, 8), errors > 0,
                 template(outputs[0].decode("utf-8", "replace")) if errors else "")

    def close(self) -> None:
        pass


def setup() -> Target:
    return Target()
