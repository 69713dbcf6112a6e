"""Writes the seed corpora: a few valid (and a few classic invalid) inputs per target.

    python -m fuzz.seeds          # (re)writes fuzz/corpus/<target>/seed_* and rust_core/fuzz/corpus/*/seed_*

Inputs that fuzzing found and `python -m fuzz --merge` kept sit beside the seeds, named by their SHA-1.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from . import CORPUS, ROOT
from .common import join_frames

RUST_CORPUS = ROOT.parent / "rust_core" / "fuzz" / "corpus"


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def u64s(*xs: int) -> bytes:
    return struct.pack(f"<{len(xs)}Q", *xs)


def http(method: str, path: str, body: bytes | None = None, *, version: str = "1.1", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nHost: x\r\n{headers}"
    if body is not None and "chunked" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def predict(app: str, doc: object, **kw) -> bytes:
    return http("POST", f"/{app}/predict", json.dumps(doc).encode(), **kw)


def http_seeds() -> dict[str, bytes]:
    b64 = base64.b64encode
    seeds = {
        "predict_doubles": predict("d", {"input": [1.0, 2.0]}),
        "predict_ints": predict("i", {"input": [1, -2, 2147483647]}),
        "predict_floats": predict("f", {"input": [1.5, -2, 3e38]}),
        "predict_strings": predict("s", {"input": "hello"}),
        "predict_bytes": predict("b", {"input": b64(b"\x00\x01\xff").decode()}),
        "predict_batch": predict("d", {"input_batch": [[1.0], [2.0, 3.0], []]}),
        "predict_version": predict("dead", {"input": [1.0], "version": "2"}),
        "predict_echo_json": predict("echo_s", {"input": '{"a": [1, 2]}'}),
        "predict_echo_text": predict("echo_s", {"input_batch": ["cat", "1", "[1,2]"]}),
        "predict_echo_bytes": predict("echo_b", {"input": b64(b'"x"').decode()}),
        "predict_vote": predict("vote", {"input": "1", "uid": 3}),
        "predict_greedy": predict("greedy", {"input_batch": ["0.5", "x"]}),
        "update_vote": http("POST", "/vote/update", b'{"uid": 0, "input": "1", "label": 1}'),
        "update_greedy": http("POST", "/greedy/update/", b'{"uid": 7, "input": "2", "label": "2"}'),
        "update_json_label": http("POST", "/vote/update", b'{"uid": 1, "input": "[1]", "label": "[[1], 2]"}'),
        "update_nested_label": http("POST", "/greedy/update", b'{"uid": 2, "input": "1", "label": "[[[[[[1]]]]]]"}'),
        "update_plain": http("POST", "/d/update", b'{"uid": 0, "input": [1.0], "label": 1.0}'),
        "metrics": http("GET", "/metrics"),
        "pipelined": http("GET", "/metrics") + predict("d", {"input": [1.0]}) + http("GET", "/nope"),
        "http10": predict("s", {"input": "a"}, version="1.0"),
        "connection_close": predict("i", {"input": [1]}, headers="Connection: close\r\n"),
        "expect_continue": predict("d", {"input": [2.0]}, headers="Expect: 100-continue\r\n"),
        "chunked": http("POST", "/s/predict", b"e\r\n{\"input\": \"x\"}\r\n0\r\n\r\n",
                        headers="Transfer-Encoding: chunked\r\n"),
        "query_string": http("POST", "/d/predict?x=1", b'{"input": [1.0]}'),
        "wrong_method": http("GET", "/d/predict"),
        "bad_json": http("POST", "/d/predict", b'{"input": [1.0,'),
        "wrong_type": predict("i", {"input": [1.5]}),
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    out = {f"seed_{k}": b"\x00" + v for k, v in seeds.items()}
    out["seed_split_predict"] = b"\x03" + seeds["predict_echo_json"]  # 4-byte chunks
    out["seed_disconnect"] = b"\x10" + seeds["predict_echo_text"]  # client leaves before the answers
    # control 64: the bearer token "fuzz" is required; 128: the client half-closes after sending
    bearer = "Authorization: Bearer fuzz\r\n"
    out["seed_token_missing"] = b"\x40" + seeds["predict_doubles"]
    out["seed_token_given"] = b"\x40" + predict("echo_s", {"input": "t"}, headers=bearer)
    out["seed_half_close"] = b"\x80" + predict("echo_s", {"input": "h"}, headers="Connection: close\r\n")
    out["seed_half_close_pipelined"] = b"\x80" + seeds["pipelined"] + seeds["predict_echo_text"]
    # control 32: the management frontend's routes (stand-in handlers)
    admin = {
        "ping": http("GET", "/admin/ping"),
        "add_app": http("POST", "/admin/add_app", b'{"name": "a", "input_type": "doubles", "default_output": "0", '
                                                  b'"latency_slo_micros": 1000}'),
        "wrong_method": http("GET", "/admin/add_app"),
        "unknown": http("POST", "/admin/nope", b"{}"),
        "trailing_slash": http("GET", "/admin/ping/"),
        "pipelined": http("POST", "/admin/get_all_models", b'{"verbose": true}') + http("GET", "/admin/ping")
        + http("POST", "/admin/get_model", b"{}", headers="X-Request-Id: r1\r\n"),
        "expect_continue": http("POST", "/admin/get_state", b'{"app_name": "a", "uid": 0}',
                                headers="Expect: 100-continue\r\n"),
        "too_large": http("POST", "/admin/add_model", b"x" * 5000),
    }
    out.update({f"seed_admin_{k}": b"\x20" + v for k, v in admin.items()})
    out["seed_admin_token"] = b"\x60" + admin["pipelined"] + http("POST", "/admin/get_model", b"{}", headers=bearer)
    out["seed_admin_half_close"] = b"\xa0" + admin["pipelined"] + http("GET", "/admin/ping",
                                                                        headers="Connection: close\r\n")
    return out


def encode_input_seeds() -> dict[str, bytes]:
    return {
        "seed_ints": b"\x01[1,-2,2147483647]",
        "seed_floats": b"\x02[1.5,-2,3.4028234663852886e38]",
        "seed_doubles": b"\x03[1e308,-0.0,5]",
        "seed_strings": b'\x04"h\\u00e9llo"',
        "seed_bytes": b'\x00"aGVsbG8="',
        "seed_surrogate": b'\x0c"\\ud800"',  # Python's json lets a lone surrogate through
        "seed_bigint": b"\x0b[123456789012345678901234567890]",
        "seed_invalid_code": b"\x05[]",
    }


def rpc_container_seeds() -> dict[str, bytes]:
    v3 = u32(3)
    content = [b"", v3, u32(1), u32(7), u32(0)]
    doubles = [struct.pack("<2d", 1.0, 2.0), struct.pack("<2d", 3.0, 4.0)]
    seeds = {
        "heartbeat": (3, [b"", v3, u32(2), u32(0)]),
        "heartbeat_register": (3, [b"", v3, u32(2), u32(1)]),
        "predict_doubles": (3, [*content, u64s(32), u64s(3, 2, 16, 16), *doubles]),  # the example of `docs/protocol.md`
        "predict_strings": (4, [*content, u64s(32), u64s(4, 2, 2, 3), b"ab", b"cde"]),
        "predict_bytes_ragged": (0, [*content, u64s(32), u64s(0, 2, 1, 3), b"\x00", b"\x01\x02\xff"]),
        "predict_ints": (1, [*content, u64s(24), u64s(1, 1, 8), struct.pack("<2i", 1, -1)]),
        "predict_floats_mismatch": (2, [*content, u64s(24), u64s(3, 1, 8), struct.pack("<d", 1.0)]),
        "predict_empty": (3, [*content, u64s(16), u64s(3, 0)]),
        "feedback": (3, [b"", v3, u32(1), u32(9), u32(1)]),
    }
    return {f"seed_{k}": bytes([code]) + join_frames(frames) for k, (code, frames) in seeds.items()}


def admin_seeds() -> dict[str, bytes]:
    from .target_admin import routes

    index = {path.rsplit("/", 1)[1]: i for i, path in enumerate(routes())}
    bodies = {
        "add_app": {"name": "new", "input_type": "ints", "default_output": "-1", "latency_slo_micros": 20000},
        "add_app_policy": {"name": "new", "input_type": "s", "default_output": "x", "latency_slo_micros": 1,
                           "selection_policy": "exp4"},
        "delete_app": {"name": "a"},
        "add_model": {"model_name": "n", "model_version": "1", "labels": ["a", "b"], "input_type": "doubles",
                      "container_name": "img", "model_data_path": "/p", "batch_size": -1},
        "set_model_version": {"model_name": "m", "model_version": "2"},
        "delete_versioned_model": {"model_name": "m", "model_version": "1"},
        "add_model_links": {"app_name": "b", "model_names": ["s"]},
        "delete_model_links": {"app_name": "a", "model_names": ["m"]},
        "get_all_applications": {"verbose": True},
        "get_application": {"name": "a"},
        "get_linked_models": {"app_name": "a"},
        "get_all_models": {"verbose": False},
        "get_model": {"model_name": "m", "model_version": "1"},
        "get_all_containers": {"verbose": True},
        "get_container": {"model_name": "m", "model_version": "1", "replica_id": 0},
        "get_state": {"app_name": "a", "uid": 0},
        "get_selection_state": {"app_name": "b", "uid": 0},
        "reset_selection_state": {"app_name": "b"},
    }
    out = {}
    for name, body in bodies.items():
        route = name.removesuffix("_policy")
        out[f"seed_{name}"] = bytes([index[route]]) + json.dumps(body).encode()
    out["seed_bad_json"] = bytes([index["add_app"]]) + b'{"name": "x", "input_type": '
    out["seed_wrong_type"] = bytes([index["get_container"]]) + b'{"model_name":"m","model_version":"1","replica_id":1.}'
    return out


def decode_inbound_seeds() -> dict[str, bytes]:
    seeds = {
        "heartbeat": [b"", u32(2)],
        "registration": [b"", u32(0), b"m", b"v1", b"3", u32(3)],  # as Clipper's rpc.py sends it
        "registration_no_version": [b"", u32(0), b"m", b"1", b"3"],
        "response": [b"", u32(1), u32(7), u64s(24), u64s(2, 3, 3), b"0.3", b"0.7"],  # the example of `docs/protocol.md`
        "response_error": [b"", u32(1), u32(1), u64s(16), u64s(1, 11), b"\x00error:boom"],
        "response_long_frame": [b"", u32(1), u32(2), u64s(16), u64s(1, 2), b"abc"],
        "response_empty": [b"", u32(1), u32(3), u64s(8), u64s(0)],
    }
    return {f"seed_{k}": join_frames(v) for k, v in seeds.items()}


def decode_request_seeds() -> dict[str, bytes]:
    head = [b"", u32(3), u32(1), u32(7), u32(0)]
    seeds = {
        "keepalive": [b"", u32(3), u32(2), u32(0)],
        "register": [b"", u32(3), u32(2), u32(1)],
        # the example of `docs/protocol.md`: doubles [1.0, 2.0] and [3.0, 4.0]
        "predict_doubles": [*head, u64s(32), u64s(3, 2, 16, 16), struct.pack("<2d", 1, 2), struct.pack("<2d", 3, 4)],
        "predict_strings": [*head, u64s(32), u64s(4, 2, 2, 3), b"ab", b"\xc3\xa9\xff"],
        "predict_empty": [*head, u64s(16), u64s(3, 0)],
        "predict_wrong_size": [*head, u64s(24), u64s(3, 1, 9), bytes(8)],
        "feedback": [b"", u32(3), u32(1), u32(7), u32(1)],
        "version_2": [b"", u32(2), u32(2), u32(0)],
    }
    return {f"seed_{k}": join_frames(v) for k, v in seeds.items()}


def zmtp_frame(body: bytes, flags: int = 0) -> bytes:
    """One ZMTP frame: flags (1 more, 2 long, 4 command), its length, its body."""
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def zmtp_command(name: bytes, data: bytes) -> bytes:
    return zmtp_frame(bytes([len(name)]) + name + data, 4)


def zmtp_ready(socket_type: bytes, identity: bytes = b"") -> bytes:
    props = b"".join(bytes([len(k)]) + k + struct.pack(">I", len(v)) + v
                     for k, v in ((b"Socket-Type", socket_type), (b"Identity", identity)))
    return zmtp_command(b"READY", props)


def zmtp_message(*frames: bytes) -> bytes:
    return b"".join(zmtp_frame(f, 1 if i < len(frames) - 1 else 0) for i, f in enumerate(frames))


def zmtp_decoder_seeds() -> dict[str, bytes]:
    """The first byte's low bit: the greeting taken as given; then chunks fed one by one (`join_frames`)."""
    greeting = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL" + bytes(16) + bytes(32)
    registration = zmtp_message(b"", u32(0), b"m", b"1", b"3", u32(3))
    response = zmtp_message(b"", u32(1), u32(7), u64s(24), u64s(2, 3, 3), b"0.3", b"0.7")
    handshake = zmtp_ready(b"DEALER") + zmtp_message(b"", u32(2)) + registration
    seeds = {
        "whole": (0, greeting + handshake + response),
        "named_ping_long": (0, greeting + zmtp_ready(b"DEALER", b"replica-1") + zmtp_command(b"PING", b"\x00\x0actx")
                            + zmtp_message(b"", b"x" * 300)),
        "given_greeting": (1, handshake + zmtp_command(b"PONG", b"") + response),
        "wrong_socket_type": (1, zmtp_ready(b"PUB") + response),
        "error_command": (1, zmtp_ready(b"REQ") + zmtp_command(b"ERROR", b"\x04boom")),
    }
    out = {}
    for name, (flag, stream) in seeds.items():
        for cut in (255, 7):
            chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]
            out[f"seed_{name}_{cut}"] = bytes([flag]) + join_frames(chunks)
    return out


def json_fragment_seeds() -> dict[str, bytes]:
    seeds = [b"1", b"0.25", b'{"a": [1, 2]}', b"[1,2]", b"DEFAULT", b' "x" ', b"null", b"true", b"\x00error:boom",
             b"", b"1e30", b"nan", b'"caf\xc3\xa9"', b"\xe2\x82"]
    return {f"seed_{i}": s for i, s in enumerate(seeds)}


def write(folder: Path, seeds: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed_*"):
        old.unlink()
    for name, data in seeds.items():
        (folder / name).write_bytes(data)


def main() -> None:
    write(CORPUS / "http_request", http_seeds())
    write(CORPUS / "encode_input", encode_input_seeds())
    write(CORPUS / "rpc_container", rpc_container_seeds())
    write(CORPUS / "admin_json", admin_seeds())
    write(RUST_CORPUS / "decode_inbound", decode_inbound_seeds())
    write(RUST_CORPUS / "decode_request", decode_request_seeds())
    write(RUST_CORPUS / "json_fragment", json_fragment_seeds())
    write(RUST_CORPUS / "zmtp_decoder", zmtp_decoder_seeds())
    print("seed corpora written")


if __name__ == "__main__":
    main()
