# cython: language_level=3, boundscheck=False, wraparound=False
"""The query frontend's compiled request path: HTTP protocol, input validation and encoding."""

include "inputs.pxi"
include "protocol.pxi"
