# What the compiled layer takes from the engine (clipper.rust_core): the C interface of its HTTP parser and
# simple-input submission (rust_core/include/clipper_capi.h), and the engine's constants, read once at import
# into C variables so that hot-path comparisons stay C comparisons. No engine number is written here.

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.ref cimport PyObject, Py_DECREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memchr, memcmp, memcpy, strlen
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from clipper import rust_core

cdef extern from "clipper_capi.h":
    ctypedef struct clipper_span:
        const char* ptr
        size_t len
    ctypedef struct clipper_request:
        clipper_span method, target, authorization, accept, request_id, body
        uint8_t keep_alive, too_large
    ctypedef struct clipper_http_parser:
        pass
    ctypedef struct clipper_capi:
        size_t api_size
        size_t request_size
        clipper_http_parser* (*parser_new)(size_t, size_t) noexcept nogil
        void (*parser_free)(clipper_http_parser*) noexcept nogil
        void (*feed)(clipper_http_parser*, const char*, size_t) noexcept nogil
        int (*next)(clipper_http_parser*, clipper_request*, uint16_t*) noexcept nogil
        int (*submit_simple)(PyObject*, const char*, size_t, uint32_t, uint32_t, uint64_t, uint64_t,
                             PyObject**) noexcept
    enum:
        CLIPPER_HTTP_NEED_MORE
        CLIPPER_HTTP_CONTINUE
        CLIPPER_HTTP_REQUEST
        CLIPPER_HTTP_ERROR

# The HTTP parser and the simple-input submission compiled in rust_core, called without Python objects.
cdef const clipper_capi* RUST = <const clipper_capi*>PyCapsule_GetPointer(rust_core.c_api, b"clipper.rust_core.c_api")
if RUST.api_size != sizeof(clipper_capi) or RUST.request_size != sizeof(clipper_request):
    raise ImportError("clipper.rust_core and clipper._core were built from different versions of clipper_capi.h")

# How a request to the engine ended (the `status` of Engine.drain).
cdef int STATUS_OK = rust_core.STATUS_OK
cdef int STATUS_TIMEOUT = rust_core.STATUS_TIMEOUT
cdef int STATUS_NO_MODEL = rust_core.STATUS_NO_MODEL
cdef int STATUS_MODEL_ERROR = rust_core.STATUS_MODEL_ERROR
cdef int STATUS_OVERLOADED = rust_core.STATUS_OVERLOADED
#: How many status codes there are (each app counts its answers per code).
cdef Py_ssize_t N_STATUSES = len(rust_core.STATUS_NAMES)
#: How many recent latencies an app keeps (the engine's window for its own samples).
cdef Py_ssize_t SAMPLE_WINDOW = rust_core.SAMPLE_WINDOW
for _code in (STATUS_OK, STATUS_TIMEOUT, STATUS_NO_MODEL, STATUS_MODEL_ERROR, STATUS_OVERLOADED):
    if not 0 <= _code < N_STATUSES:
        raise ImportError(f"clipper.rust_core status code {_code} is outside STATUS_NAMES")
if SAMPLE_WINDOW < 1:
    raise ImportError("clipper.rust_core.SAMPLE_WINDOW must be positive")


cdef inline int64_t now_micros() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000 + ts.tv_nsec // 1000
