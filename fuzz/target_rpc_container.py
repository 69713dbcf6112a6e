"""The model container's side of Clipper RPC v3: every message the frontend's ROUTER sends it.

Input format (shared with rust_core/fuzz): frames, each a one-byte length L and L bytes; byte 0
first picks the container's input type (`b % 5`) and the rest are the frames.

Two layers are checked:
* `clipper.model_runtime.protocol.parse_request(frames)` returns a Heartbeat, PredictRequest or
  FeedbackRequest, or raises ProtocolError (a ValueError); a PredictRequest is consistent with its
  header (one input per announced size, sizes as announced);
* `_Session.reply(frames)`, the session loop's step (parse, decode the inputs, run the
  model, answer): it never raises, so a malformed message is dropped and the session goes on; every
  message it sends is a well-formed registration or prediction response (one output per input,
  lengths as in its header).
"""

from __future__ import annotations

import struct

from .common import FEATURES, Failure, split_frames, template

NAME = "rpc_container"


def _model(batch):
    """A model that looks at every input: its shape or length, as text."""
    return [repr(getattr(x, "shape", len(x))) for x in batch]


class Target:
    def __init__(self) -> None:
        from clipper.model_runtime import protocol, runtime

        self.p = protocol
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
        out = session.reply(frames)  # any exception here would end the container's session
        if out is not None:
            self._check_sent([bytes(f) for f in out], msg, container.input_type)

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
