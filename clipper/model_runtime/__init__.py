"""Clipper model-container runtime: serve a Python function to a Clipper RPC v3 frontend.

    from clipper.model_runtime import serve
    serve(lambda xs: [str(x.sum()) for x in xs], name="m", version="1", input_type="doubles")

or ``python -m clipper.model_runtime --predict package.module:function`` (see ``__main__``).
"""

from .loader import ModelLoadError, load_closure, load_function, load_model
from .protocol import (
    ERROR_PREFIX,
    HEARTBEAT_KEEPALIVE,
    HEARTBEAT_REQUEST_METADATA,
    INPUT_BYTES,
    INPUT_DOUBLES,
    INPUT_FLOATS,
    INPUT_INTS,
    INPUT_STRINGS,
    INPUT_TYPE_CODES,
    INPUT_TYPE_NAMES,
    MSG_CONTAINER_CONTENT,
    MSG_HEARTBEAT,
    MSG_NEW_CONTAINER,
    REQUEST_FEEDBACK,
    REQUEST_PREDICT,
    RPC_VERSION,
    FeedbackRequest,
    Heartbeat,
    PredictRequest,
    ProtocolError,
    decode_inputs,
    error_output,
    parse_input_type,
)
from .runtime import PredictFn, serve

__all__ = [
    "ERROR_PREFIX",
    "HEARTBEAT_KEEPALIVE",
    "HEARTBEAT_REQUEST_METADATA",
    "INPUT_BYTES",
    "INPUT_DOUBLES",
    "INPUT_FLOATS",
    "INPUT_INTS",
    "INPUT_STRINGS",
    "INPUT_TYPE_CODES",
    "INPUT_TYPE_NAMES",
    "MSG_CONTAINER_CONTENT",
    "MSG_HEARTBEAT",
    "MSG_NEW_CONTAINER",
    "REQUEST_FEEDBACK",
    "REQUEST_PREDICT",
    "RPC_VERSION",
    "FeedbackRequest",
    "Heartbeat",
    "ModelLoadError",
    "PredictFn",
    "PredictRequest",
    "ProtocolError",
    "decode_inputs",
    "error_output",
    "load_closure",
    "load_function",
    "load_model",
    "parse_input_type",
    "serve",
]
