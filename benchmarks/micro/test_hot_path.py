"""Microbenchmarks of the per-request path, through the compiled modules' public entry points.

    python -m pytest benchmarks/micro --benchmark-only

Not part of the test suite (pytest's testpaths is `tests`). Each benchmark checks its result once before it
is timed, so that it measures the real work. Groups:

* encode_input: `clipper._core.encode_input`, a decoded JSON input -> the engine's element bytes, per input
  type (what the query path does for every body the fast path leaves), and the whole slow path of a body
  (`orjson.loads` + `encode_input`) beside the fast path on the same body.
* simple_input: `clipper.rust_core.encode_simple_input`, the fast path's parser and encoder
  (`rust_core/src/simple_input.rs`; the frontend calls it with the submission in one C call, `submit_simple`,
  which has no Python entry point).
* response: `clipper._core.json_fragment` (how a selection policy's combined output is embedded in an answer)
  and `clipper._core.error_body` (the body of every 4xx/503).
* cache: `Engine.submit` on a cached input (a hit returns the answer) and on a model without replicas (a miss:
  hash, lookup, hand-over to the engine thread).
* request: one whole predict request through `clipper._core.HttpProtocol.data_received` on a stub transport:
  the Rust HTTP parser, routing, validation and encoding, the cache and the response bytes (the parser and
  the response builder have no Python entry points of their own; they are measured here). A body with a key
  besides "input" ("uid", which only apps with a selection policy read) takes the slow path; where that key
  comes after the input, the fast path has parsed the whole input before it refuses the body.
"""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from benchmarks.micro.harness import SLO_MICROS, predict_request

FOUR = [1.1, 2.2, 3.3, 4.4]
FOUR_BODY = b'{"input": [1.1, 2.2, 3.3, 4.4]}'
# An MNIST image as doubles: 784 numbers in [0, 1) with up to 4 decimals.
MNIST = [round(((i * 7919) % 1000) / 1000, 4) for i in range(784)]
MNIST_BODY = json.dumps({"input": MNIST}).encode()
INTS = [1, 2, 3, 4]
INTS_BODY = b'{"input": [1, 2, 3, 4]}'
TEXT = "the quick brown fox jumps over the lazy dog"
BLOB = bytes(range(256)) * 4  # 1 KiB
BLOB_B64 = base64.b64encode(BLOB).decode()


def _doubles(xs: list[float]) -> bytes:
    import numpy as np

    return np.asarray(xs, dtype="<f8").tobytes()


@pytest.fixture(scope="module")
def codes() -> dict[str, int]:
    from clipper import rust_core

    return dict(rust_core.INPUT_TYPES)


# ---------------------------------------------------------------------------------------------- encode_input

ENCODE_CASES = [
    pytest.param("doubles", FOUR, _doubles(FOUR), id="doubles-4"),
    pytest.param("doubles", MNIST, _doubles(MNIST), id="doubles-784"),
    pytest.param("floats", FOUR, None, id="floats-4"),
    pytest.param("integers", INTS, None, id="integers-4"),
    pytest.param("strings", TEXT, TEXT.encode(), id="strings-43B"),
    pytest.param("bytes", BLOB_B64, BLOB, id="bytes-1KiB-base64"),
]


@pytest.mark.benchmark(group="encode_input")
@pytest.mark.parametrize(("type_name", "value", "expected"), ENCODE_CASES)
def test_encode_input(benchmark, codes, type_name, value, expected):
    import numpy as np

    from clipper import _core

    code = codes[type_name]
    if expected is None:
        expected = np.asarray(value, dtype="<f4" if type_name == "floats" else "<i4").tobytes()
    assert _core.encode_input(value, code) == expected
    result = benchmark(_core.encode_input, value, code)
    assert result == expected


@pytest.mark.benchmark(group="encode_input")
@pytest.mark.parametrize(("body", "values"), [pytest.param(FOUR_BODY, FOUR, id="doubles-4"),
                                              pytest.param(MNIST_BODY, MNIST, id="doubles-784")])
def test_slow_path_body(benchmark, codes, body, values):
    """A whole body the slow way: orjson.loads, then encode_input of its "input" (what a body that the fast path
    refuses costs before submission)."""
    from clipper import _core

    code = codes["doubles"]

    def slow(body: bytes) -> bytes:
        return _core.encode_input(orjson.loads(body)["input"], code)

    assert slow(body) == _doubles(values)
    assert benchmark(slow, body) == _doubles(values)


# ---------------------------------------------------------------------------------------------- simple_input

@pytest.mark.benchmark(group="simple_input")
@pytest.mark.parametrize(("type_name", "body", "expected"), [
    pytest.param("doubles", FOUR_BODY, _doubles(FOUR), id="doubles-4"),
    pytest.param("doubles", MNIST_BODY, _doubles(MNIST), id="doubles-784"),
    pytest.param("integers", INTS_BODY, b"".join(i.to_bytes(4, "little") for i in INTS), id="integers-4"),
    pytest.param("doubles", b'{"input": [1.1, 2.2, 3.3, 4.4], "version": "1"}', None, id="refused-extra-key"),
])
def test_encode_simple_input(benchmark, codes, type_name, body, expected):
    from clipper import _core, rust_core

    code = codes[type_name]
    if expected is not None:  # the fast path and the full validator agree
        assert _core.encode_input(orjson.loads(body)["input"], code) == expected
    assert rust_core.encode_simple_input(body, code) == expected
    assert benchmark(rust_core.encode_simple_input, body, code) == expected


# ---------------------------------------------------------------------------------------------- response

@pytest.mark.benchmark(group="response")
@pytest.mark.parametrize(("output", "expected"), [
    pytest.param("6.6", b"6.6", id="number"),
    pytest.param('{"label": "cat", "scores": [0.93, 0.05, 0.02]}', b'{"label":"cat","scores":[0.93,0.05,0.02]}',
                 id="json-object"),
    pytest.param("cat", b'"cat"', id="plain-text"),
])
def test_json_fragment(benchmark, output, expected):
    from clipper import _core

    assert _core.json_fragment(output) == expected
    assert benchmark(_core.json_fragment, output) == expected


@pytest.mark.benchmark(group="response")
def test_error_body(benchmark):
    from clipper import _core

    args = ("Json error", "input[2] is a string, expected a number (input type doubles)")
    expected = {"error": args[0], "cause": args[1]}
    assert orjson.loads(_core.error_body(*args)) == expected
    assert orjson.loads(benchmark(_core.error_body, *args)) == expected


# ---------------------------------------------------------------------------------------------- cache

@pytest.mark.benchmark(group="cache")
def test_submit_cache_hit(benchmark, harness):
    """Engine.submit of an input whose answer is cached: hash, lookup, compare, copy the answer out."""
    harness.warm_cache(FOUR_BODY)
    engine, model, code, data = harness.engine, harness.sum_model, harness.doubles, _doubles(FOUR)
    assert engine.submit(1, model, code, data, SLO_MICROS) == b"11.0"
    assert benchmark(engine.submit, 1, model, code, data, SLO_MICROS) == b"11.0"


@pytest.mark.benchmark(group="cache")
def test_submit_cache_miss(benchmark, harness):
    """Engine.submit of an input with no cached answer (a model without replicas: each request is then completed
    by the engine thread with "no connected models"). Every 256th call also wakes the engine and drains its
    completions, so that they do not pile up; the median round leaves those out."""
    from clipper import rust_core

    engine, model, code, data = harness.engine, harness.orphan_model, harness.doubles, _doubles(FOUR)
    lookups, hits = engine.cache_counts()
    assert engine.submit(1, model, code, data, SLO_MICROS) is None
    assert engine.cache_counts() == (lookups + 1, hits)
    completions = harness.wait_completions(1)
    assert [(token, status) for token, status, _ in completions] == [(1, rust_core.STATUS_NO_MODEL)]
    calls = 0

    def miss() -> bytes | None:
        nonlocal calls
        calls += 1
        if calls % 256 == 0:
            harness.drain()
        return engine.submit(calls, model, code, data, SLO_MICROS)

    assert benchmark(miss) is None
    harness.drain()


# ---------------------------------------------------------------------------------------------- request

@pytest.mark.benchmark(group="request")
@pytest.mark.parametrize(("app", "body", "expected"), [
    pytest.param("sum", FOUR_BODY, b'"output":11.0,"default":false}', id="cache-hit-fast-path"),
    pytest.param("sum", b'{"uid": 0, "input": [1.1, 2.2, 3.3, 4.4]}', b'"output":11.0,"default":false}',
                 id="cache-hit-slow-path"),
    pytest.param("sum", MNIST_BODY, b',"default":false}', id="cache-hit-fast-path-784"),
    pytest.param("sum", b'{"uid": 0, ' + MNIST_BODY[1:], b',"default":false}', id="cache-hit-slow-path-784"),
    # the fast path parses every number before it finds the key it refuses, then the slow path parses them again
    pytest.param("sum", MNIST_BODY[:-1] + b', "uid": 0}', b',"default":false}', id="cache-hit-refused-late-784"),
    pytest.param("none", FOUR_BODY,
                 b'"output":-1.0,"default":true,"default_explanation":"No connected models found for query"}',
                 id="default-no-model"),
])
def test_request(benchmark, harness, app, body, expected):
    """One keep-alive predict request: bytes in, response bytes written (synchronously: a cache hit or a
    default is answered inside data_received)."""
    if app == "sum":
        harness.warm_cache(body)
    request = predict_request(app, body)
    protocol, transport = harness.connection()
    protocol.data_received(request)
    assert transport.writes == 1, "the request was not answered inside data_received"
    head, _, answer = transport.last.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(expected), transport.last
    assert b"Content-Length: %d" % len(answer) in head.split(b"\r\n")
    benchmark(protocol.data_received, request)
    assert transport.writes > 1 and transport.last.endswith(expected)
    assert protocol.requests_read == transport.writes
    protocol.connection_lost(None)
