"""The frontends' settings and their defaults, defined once (as uvicorn's `Config`).

`QueryFrontendConfig` holds every setting of the query frontend with its default and help text; its
command line (`python -m clipper.frontend.query`) is made from it, `QueryFrontend` takes one, and the
container managers, `ClipperConnection` and the ``clipper`` command read their defaults from this
module. What the engine owns (cache size, heartbeat timeout, queue length) comes from `rust_core`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .. import cmdline, rust_core

#: Where the frontends listen unless told otherwise (Clipper's ports).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_QUERY_PORT = 1337
DEFAULT_MANAGEMENT_PORT = 1338
DEFAULT_RPC_PORT = 7000
DEFAULT_REDIS_PORT = 6379

#: HTTP limits shared by the query and management frontends.
DEFAULT_MAX_BODY_BYTES = 10 << 20
DEFAULT_MAX_HEADER_BYTES = 64 << 10
#: Inputs one `input_batch` may hold.
DEFAULT_MAX_BATCH_INPUTS = 10_000

#: Owned by the engine.
DEFAULT_CACHE_BYTES: int = rust_core.DEFAULT_CACHE_BYTES
DEFAULT_HEARTBEAT_TIMEOUT_S: float = rust_core.DEFAULT_HEARTBEAT_TIMEOUT_S
DEFAULT_MAX_QUEUE: int = rust_core.DEFAULT_MAX_QUEUE

#: How long a query frontend's announcement in Redis lasts without renewal.
DEFAULT_ANNOUNCE_TTL_S = 15.0

DEFAULT_LOG_LEVEL = "WARNING"
#: The environment variable the command line reads the predict token from.
PREDICT_TOKEN_ENV = "CLIPPER_PREDICT_TOKEN"


def _setting(default: Any, help: str, *flags: str, env: str | None = None, switch: bool = False,
             metavar: str | None = None, type: Callable[[str], Any] | None = None,
             choices: Sequence[str] | None = None) -> Any:
    """A field of a config dataclass and how the command line shows it: `flags` (the first is the canonical
    one, the others aliases), `help`, an environment variable that gives the command line's default,
    `switch` for an on/off flag, and the argparse `type` (default: the default's type) and `choices`."""
    return field(default=default, metadata={"flags": flags, "help": help, "env": env, "switch": switch,
                                            "metavar": metavar, "type": type, "choices": choices})


@dataclass
class QueryFrontendConfig:
    """Every setting of the query frontend, with its default.

    `add_arguments` makes the command line from the fields (in this order) and `from_args` reads it back.
    A port of 0 means any free port.
    """

    config_file: str | None = _setting(None, "JSON file with apps and models to serve (instead of Redis)",
                                       "--config", metavar="CONFIG")
    redis_host: str = _setting(DEFAULT_HOST, "Redis holding the apps and models", "--redis-host", "--redis_ip")
    redis_port: int = _setting(DEFAULT_REDIS_PORT, "Redis port", "--redis-port", "--redis_port", type=cmdline.port)
    host: str = _setting(DEFAULT_HOST, "HTTP bind address", "--host")
    port: int = _setting(DEFAULT_QUERY_PORT, "HTTP port: predictions, /metrics", "--port", type=cmdline.port)
    advertise_address: str | None = _setting(
        None, "HOST[:PORT] where other processes reach this frontend's HTTP routes, announced in Redis for the "
              "management frontend's status page (default: --host and the bound port; a --host of 0.0.0.0 or :: "
              "announces this machine's hostname, which Docker resolves to the container)", "--advertise-address")
    announce_ttl: float = _setting(
        DEFAULT_ANNOUNCE_TTL_S,
        "seconds this frontend's announcement in Redis lasts without renewal (renewed every third of it); once "
        "it has expired, the other frontends remove the replica records this one left",
        "--announce-ttl", type=cmdline.positive_float, metavar="SECONDS")
    rpc_host: str = _setting(DEFAULT_HOST, "RPC bind address (model containers connect there)", "--rpc-host")
    rpc_port: int = _setting(DEFAULT_RPC_PORT, "RPC port", "--rpc-port", type=cmdline.port)
    cache_size: int = _setting(DEFAULT_CACHE_BYTES, "prediction cache size in bytes", "--cache-size",
                               "--prediction_cache_size", type=cmdline.non_negative_int)
    heartbeat_timeout: float = _setting(DEFAULT_HEARTBEAT_TIMEOUT_S,
                                        "seconds of silence after which a model replica is dropped",
                                        "--heartbeat-timeout", type=cmdline.positive_float)
    max_body_bytes: int = _setting(DEFAULT_MAX_BODY_BYTES, "request body limit in bytes; 413 above", "--max-body-bytes",
                                   type=cmdline.positive_int)
    max_header_bytes: int = _setting(DEFAULT_MAX_HEADER_BYTES, "request line + headers limit in bytes; 431 above",
                                     "--max-header-bytes", type=cmdline.positive_int)
    max_batch_inputs: int = _setting(DEFAULT_MAX_BATCH_INPUTS, "inputs one input_batch may hold; 400 above",
                                     "--max-batch-inputs", type=cmdline.positive_int)
    max_queue: int = _setting(DEFAULT_MAX_QUEUE,
                              "requests a model's queue holds; past it, predict answers 503 with Retry-After",
                              "--max-queue", type=cmdline.positive_int)
    predict_token: str | None = _setting(None, "require 'Authorization: Bearer <token>' on predict and update",
                                         "--predict-token", env=PREDICT_TOKEN_ENV)
    no_spin: bool = _setting(False, "never poll for a model's answer instead of sleeping: while only small batches "
                                    "are in flight the engine polls for up to one round trip, which lowers the "
                                    "latency at low load for CPU", "--no-spin", switch=True)
    workers: int = _setting(1, "query frontend processes sharing the HTTP port; worker i takes containers on "
                               "--rpc-port + i", "--workers", type=cmdline.positive_int)
    reuse_port: bool = _setting(False, "bind the HTTP port with SO_REUSEPORT, shared with other processes",
                                "--reuse-port", switch=True)
    insecure: bool = _setting(False, "serve predict and update without a token on a --host other machines can reach",
                              "--insecure", switch=True)
    log_level: str = _setting(DEFAULT_LOG_LEVEL, "level of the JSON log lines on stderr", "--log-level",
                              type=str.upper, choices=cmdline.LOG_LEVELS)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one option per field. A `cmdline.ArgumentParser` ends each help line with the default; for a
        secret read from the environment the help names the variable, never its value."""
        for f in fields(cls):
            meta = f.metadata
            default = f.default
            help = meta["help"]
            if meta["env"]:
                default = os.environ.get(meta["env"], default)
                help += f" (default: ${meta['env']}, else {'none' if f.default is None else f.default})"
            kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help}
            if meta["switch"]:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = meta["type"] or (type(f.default) if f.default is not None else str)
                for key in ("metavar", "choices"):
                    if meta[key]:
                        kwargs[key] = meta[key]
            parser.add_argument(*meta["flags"], **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> QueryFrontendConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def validate(self) -> None:
        """Refuses settings no frontend can run with (the messages name the flags)."""
        if self.cache_size < 0:
            raise ValueError("--cache-size must not be negative")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.workers > 1 and (self.port == 0 or self.rpc_port == 0):
            raise ValueError("--workers > 1 needs fixed --port and --rpc-port (not 0)")
        refuse_open_without_token(self.host, self.predict_token, self.insecure, "predict and update",
                                  f"--predict-token (or ${PREDICT_TOKEN_ENV})")

    def advertised_http(self, bound_port: int) -> str:
        """`host:port` to announce: `advertise_address` (its port defaulting to `bound_port`), else the bind
        address (this machine's hostname for a wildcard one) and `bound_port`."""
        if addr := self.advertise_address:
            if addr.count(":") > 1 and not addr.startswith("["):  # a bare IPv6 address
                return f"[{addr}]:{bound_port}"
            host, sep, port = addr.rpartition(":")
            if sep and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
                return addr
            return f"{addr}:{bound_port}"
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"{host}:{bound_port}"

    @property
    def rpc_endpoint(self) -> str:
        """The engine's ZeroMQ endpoint, ``tcp://<rpc_host>:<rpc_port>``."""
        return f"tcp://{self.rpc_host}:{self.rpc_port}"


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only: ``localhost``, 127.0.0.0/8 or ``::1``. Any other
    name counts as open (it may resolve to anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_open_without_token(host: str, token: str | bytes | None, insecure: bool, routes: str,
                              token_flag: str) -> None:
    """The secure default of both frontends: a `host` other machines can reach needs a bearer token for
    `routes`, or `insecure` to say that none is wanted. Raises ValueError naming both ways out."""
    if token or insecure or is_loopback(host):
        return
    raise ValueError(
        f"--host {host} accepts connections from other machines, and {routes} would answer anyone: "
        f"give a bearer token with {token_flag}, or pass --insecure to serve without one "
        f"(or bind to {DEFAULT_HOST})"
    )
