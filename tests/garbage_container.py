"""A test-only model container that registers properly and answers prediction batches with garbage.

    CLIPPER_PORT=7000 GARBAGE_MODES=count,frame,junk python tests/garbage_container.py

It heartbeats like a real container, and answers the batches in turn, cycling through
GARBAGE_MODES:

- ``count``: a well-formed response with one output more than the batch has inputs
- ``frame``: a response whose header announces more outputs than it has frames
- ``junk``: frames that are no RPC message at all (undecodable bytes)
- ``utf8``: a well-formed response whose outputs are not UTF-8 (answered as strings)
"""

from __future__ import annotations

import os
import sys
import time

import zmq

from clipper.model_runtime import protocol as p


def garbage(mode: str, request: p.PredictRequest) -> list[bytes]:
    n = len(request.inputs)
    if mode == "count":
        return p.prediction_response(request.msg_id, [b"1.0"] * (n + 1))
    if mode == "frame":
        return p.prediction_response(request.msg_id, [b"1.0"] * n)[:-1]
    if mode == "utf8":
        return p.prediction_response(request.msg_id, [b"\xff\xfe garbage \xc3"] * n)
    return [b"", b"\xde\xad\xbe\xef\x00", b"\x00\x01 not an RPC message"]


def main() -> int:
    name = os.environ.get("CLIPPER_MODEL_NAME", "m")
    version = os.environ.get("CLIPPER_MODEL_VERSION", "1")
    address = f"tcp://{os.environ.get('CLIPPER_IP', '127.0.0.1')}:{os.environ['CLIPPER_PORT']}"
    modes = os.environ.get("GARBAGE_MODES", "count,frame,junk").split(",")
    code = p.parse_input_type(os.environ.get("CLIPPER_INPUT_TYPE", "doubles"))[1]
    sock = zmq.Context().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    sock.send_multipart(p.heartbeat())
    batches, sent = 0, time.monotonic()
    while True:
        if time.monotonic() - sent >= 0.5:
            sock.send_multipart(p.heartbeat())
            sent = time.monotonic()
        if not sock.poll(100):
            continue
        msg = p.parse_request(sock.recv_multipart())
        if isinstance(msg, p.Heartbeat) and msg.heartbeat_type == p.HEARTBEAT_REQUEST_METADATA:
            sock.send_multipart(p.new_container(name, version, code))
        elif isinstance(msg, p.PredictRequest):
            sock.send_multipart(garbage(modes[batches % len(modes)], msg))
            batches += 1
            print(f"batch {batches}: {modes[(batches - 1) % len(modes)]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
