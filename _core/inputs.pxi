# Input validation: a decoded JSON value is checked against its app's type and turned into RPC element bytes.

from cpython.float cimport PyFloat_AS_DOUBLE
from libc.math cimport isfinite
import binascii

DEF FLOAT32_MAX = 3.4028234663852886e38

# The input type codes, as the engine numbers them (rust_core.INPUT_TYPES).
cdef int BYTES = rust_core.INPUT_TYPES["bytes"]
cdef int INTS = rust_core.INPUT_TYPES["integers"]
cdef int FLOATS = rust_core.INPUT_TYPES["floats"]
cdef int DOUBLES = rust_core.INPUT_TYPES["doubles"]
cdef int STRINGS = rust_core.INPUT_TYPES["strings"]

#: Input type code -> canonical name.
INPUT_TYPE_NAMES = {code: name for name, code in rust_core.INPUT_TYPES.items()}
cdef dict _ELEMENT_NAMES = {BYTES: "base64 string", INTS: "integer", FLOATS: "number", DOUBLES: "number",
                            STRINGS: "string"}


class InputError(ValueError):
    """A request input that does not match its app's input type."""


cdef str _json_kind(object value):
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) is int or type(value) is float:
        return "number"
    if type(value) is str:
        return "string"
    if type(value) is list:
        return "array"
    return "object"


cdef bytes _encode_numbers(object value, int code, str where):
    if type(value) is not list:
        raise InputError(f"{where} must be an array of {_ELEMENT_NAMES[code]}s, found {_json_kind(value)}")
    cdef list items = <list>value
    cdef Py_ssize_t n = len(items), i
    cdef Py_ssize_t width = 4 if code == INTS or code == FLOATS else 8
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n * width)
    cdef char* buf = PyBytes_AS_STRING(out)
    cdef double d
    for i in range(n):
        item = items[i]
        if code == INTS:
            if type(item) is not int:
                raise InputError(f"{where}[{i}] is a {_json_kind(item)}, expected an integer (input type integers)")
            if not -2147483648 <= item <= 2147483647:
                raise InputError(f"{where}[{i}] = {item} does not fit a 32-bit integer")
            (<int32_t*>buf)[i] = <int32_t>item
            continue
        if type(item) is float:
            d = PyFloat_AS_DOUBLE(item)
        elif type(item) is int:
            # Integer literals are accepted for float and double apps (Clipper rejects them).
            try:
                d = float(item)
            except OverflowError:
                raise InputError(f"{where}[{i}] is too large for input type {INPUT_TYPE_NAMES[code]}")
        else:
            raise InputError(f"{where}[{i}] is a {_json_kind(item)}, expected a number (input type {INPUT_TYPE_NAMES[code]})")
        if code == FLOATS:
            if not isfinite(d) or d > FLOAT32_MAX or d < -FLOAT32_MAX:
                raise InputError(f"{where}[{i}] = {item!r} is out of range for 32-bit floats")
            (<float*>buf)[i] = <float>d
        else:
            (<double*>buf)[i] = d
    return out


cpdef bytes encode_input(object value, int code, str where="input"):
    """Validates one input against an input type code and returns its RPC element bytes."""
    if code == STRINGS:
        if type(value) is not str:
            raise InputError(f"{where} must be a string (input type strings), found {_json_kind(value)}")
        try:
            return (<str>value).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{where} is not valid Unicode text")
    if code == BYTES:
        if type(value) is not str:
            raise InputError(f"{where} must be a base64 string (input type bytes), found {_json_kind(value)}")
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError) as e:
            raise InputError(f"{where} is not valid base64: {e}")
    if code == INTS or code == FLOATS or code == DOUBLES:
        return _encode_numbers(value, code, where)
    raise ValueError(f"unknown input type code {code}")
