"""Clipper RPC v3 byte codec (no sockets).

Frames are lists of bytes-like objects exactly as a container's DEALER socket sends and receives
them: every message starts with the empty delimiter frame. Messages from the frontend carry a u32
RPC version frame right after the delimiter; messages from the container do not. All integers
are little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..input_types import INPUT_BYTES as INPUT_BYTES
from ..input_types import INPUT_DOUBLES as INPUT_DOUBLES
from ..input_types import INPUT_FLOATS as INPUT_FLOATS
from ..input_types import INPUT_INTS as INPUT_INTS
from ..input_types import INPUT_STRINGS as INPUT_STRINGS
from ..input_types import INPUT_TYPE_CODES as INPUT_TYPE_CODES
from ..input_types import INPUT_TYPE_NAMES as INPUT_TYPE_NAMES
from ..input_types import parse_input_type as parse_input_type

RPC_VERSION = 3

# Message types.
MSG_NEW_CONTAINER = 0
MSG_CONTAINER_CONTENT = 1
MSG_HEARTBEAT = 2

# Heartbeat types.
HEARTBEAT_KEEPALIVE = 0
HEARTBEAT_REQUEST_METADATA = 1

# Request types.
REQUEST_PREDICT = 0
REQUEST_FEEDBACK = 1

#: numpy dtype of one element per numeric input type code. Clipper's Python container used signed
#: int8 for bytes; we deliberately hand raw bytes to models as uint8.
INPUT_DTYPES: dict[int, np.dtype] = {
    INPUT_BYTES: np.dtype(np.uint8),
    INPUT_INTS: np.dtype("<i4"),
    INPUT_FLOATS: np.dtype("<f4"),
    INPUT_DOUBLES: np.dtype("<f8"),
}

#: Prefix of an output that reports a failed batch instead of a prediction.
ERROR_PREFIX = b"\x00error:"
#: Longest error message (in bytes, after the prefix) put on the wire.
MAX_ERROR_BYTES = 500

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_EMPTY = b""
_HEARTBEAT = [_EMPTY, _U32.pack(MSG_HEARTBEAT)]
_CONTENT = _U32.pack(MSG_CONTAINER_CONTENT)

Buffer = bytes | bytearray | memoryview


class ProtocolError(ValueError):
    """A frontend message that does not follow Clipper RPC v3."""


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat reply from the frontend; type 1 asks the container to (re-)register."""

    heartbeat_type: int


@dataclass(frozen=True)
class PredictRequest:
    """A batch to predict: `msg_id` is the raw 4-byte id to echo, `inputs` one buffer per input."""

    msg_id: bytes
    input_type: int
    inputs: list[Buffer]


@dataclass(frozen=True)
class FeedbackRequest:
    """A feedback request (never sent by Clipper's frontend; containers do not answer it)."""

    msg_id: bytes


Message = Heartbeat | PredictRequest | FeedbackRequest


def heartbeat() -> list[bytes]:
    """Container -> frontend heartbeat: ``["", u32 2]``."""
    return list(_HEARTBEAT)


def new_container(name: str, version: str, input_type_code: int) -> list[bytes]:
    """Container -> frontend registration: ``["", u32 0, name, version, "<code>", u32 3]``."""
    return [
        _EMPTY,
        _U32.pack(MSG_NEW_CONTAINER),
        name.encode(),
        str(version).encode(),
        str(int(input_type_code)).encode(),
        _U32.pack(RPC_VERSION),
    ]


def prediction_response(msg_id: bytes, outputs: Sequence[bytes]) -> list[bytes]:
    """Container -> frontend response: ``["", u32 1, msg_id, u64 8(1+n), u64[n, len_i...], out_i...]``."""
    n = len(outputs)
    header = struct.pack(f"<{n + 1}Q", n, *map(len, outputs))
    return [_EMPTY, _CONTENT, bytes(msg_id), _U64.pack(8 * (n + 1)), header, *outputs]


def error_text(message: str) -> str:
    """The output, as text, that reports a failed batch: ``"\\x00error:" + message`` (at most 500 bytes of it
    in UTF-8)."""
    raw = message.encode("utf-8", "replace")[:MAX_ERROR_BYTES]
    return ERROR_PREFIX.decode() + raw.decode("utf-8", "ignore")


def error_output(message: str) -> bytes:
    """The output that reports a failed batch: ``b"\\x00error:" + message`` (at most 500 bytes)."""
    return error_text(message).encode()


def _u32(frame: Buffer, what: str) -> int:
    if len(frame) != 4:
        raise ProtocolError(f"{what}: expected a 4-byte u32 frame, got {len(frame)} bytes")
    return _U32.unpack(frame)[0]


def parse_request(frames: Sequence[Buffer]) -> Message:
    """Parse a frontend -> container message (delimiter, u32 version, u32 type, ...)."""
    if len(frames) < 3:
        raise ProtocolError(f"message too short: {len(frames)} frames")
    if len(frames[0]) != 0:
        raise ProtocolError("missing empty delimiter frame")
    version = _u32(frames[1], "rpc version")
    if version != RPC_VERSION:
        raise ProtocolError(f"unsupported rpc version {version} (expected {RPC_VERSION})")
    msg_type = _u32(frames[2], "message type")
    if msg_type == MSG_HEARTBEAT:
        if len(frames) != 4:
            raise ProtocolError(f"heartbeat: expected 4 frames, got {len(frames)}")
        return Heartbeat(_u32(frames[3], "heartbeat type"))
    if msg_type != MSG_CONTAINER_CONTENT:
        raise ProtocolError(f"unexpected message type {msg_type}")
    if len(frames) < 5:
        raise ProtocolError(f"container content: expected at least 5 frames, got {len(frames)}")
    msg_id = bytes(frames[3])
    _u32(msg_id, "message id")
    request_type = _u32(frames[4], "request type")
    if request_type == REQUEST_FEEDBACK:
        return FeedbackRequest(msg_id)
    if request_type != REQUEST_PREDICT:
        raise ProtocolError(f"unknown request type {request_type}")
    if len(frames) < 7:
        raise ProtocolError(f"predict: expected at least 7 frames, got {len(frames)}")
    header_len = _U64.unpack(frames[5])[0] if len(frames[5]) == 8 else -1
    header_frame = frames[6]
    if header_len != len(header_frame) or header_len < 16 or header_len % 8:
        raise ProtocolError(f"predict: bad header length {header_len} for {len(header_frame)} bytes")
    header = struct.unpack(f"<{header_len // 8}Q", header_frame)
    input_type, n = header[0], header[1]
    inputs = list(frames[7:])
    if len(header) != n + 2 or len(inputs) != n:
        raise ProtocolError(f"predict: header announces {n} inputs, got {len(inputs)} frames")
    if list(header[2:]) != list(map(len, inputs)):
        raise ProtocolError("predict: input frame sizes differ from the header")
    return PredictRequest(msg_id, input_type, inputs)


def decode_inputs(input_type: int, inputs: Sequence[Buffer]) -> np.ndarray | list:
    """Decode raw input buffers into what the model receives.

    Numeric types and bytes: a writable ``(n, k)`` array when all inputs have the same length
    (one copy, no per-item Python work), else a list of 1-D arrays. Strings: a list of ``str``
    (UTF-8, invalid bytes replaced). dtypes: ints int32, floats float32, doubles float64, bytes
    uint8 (Clipper used int8).
    """
    if input_type == INPUT_STRINGS:
        return [str(b, "utf-8", "replace") for b in inputs]
    return decode_joined(input_type, bytearray().join(inputs), list(map(len, inputs)))


def decode_joined(input_type: int, data: bytearray, sizes: list[int]) -> np.ndarray | list:
    """`decode_inputs` for a numeric or bytes batch whose inputs come joined in one writable buffer, `sizes`
    their lengths in bytes (as `clipper.rust_core.Dealer.recv_request` hands a batch over)."""
    dtype = INPUT_DTYPES.get(input_type)
    if dtype is None:
        raise ValueError(f"unknown input type code {input_type}")
    n = len(sizes)
    distinct = set(sizes)
    if any(size % dtype.itemsize for size in distinct):
        name = INPUT_TYPE_NAMES[input_type]
        raise ValueError(f"input size is not a multiple of {dtype.itemsize} bytes ({name})")
    flat = np.frombuffer(data, dtype=dtype)
    if len(distinct) <= 1:
        return flat.reshape(n, distinct.pop() // dtype.itemsize if n else 0)
    ends = np.cumsum(np.fromiter(sizes, dtype=np.int64, count=n)[:-1])
    return np.split(flat, ends // dtype.itemsize)
