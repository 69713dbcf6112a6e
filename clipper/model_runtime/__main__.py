"""``python -m clipper.model_runtime``: serve a model, configured like Clipper's containers.

Environment (flags override it): CLIPPER_MODEL_NAME, CLIPPER_MODEL_VERSION (required),
CLIPPER_IP (127.0.0.1; a name stands for every query frontend it resolves to), CLIPPER_PORT (7000; a
comma-separated list for a query frontend run with --workers), CLIPPER_RESOLVE_INTERVAL (seconds between
two resolutions of a CLIPPER_IP that is a name, 2), CLIPPER_INPUT_TYPE (doubles), CLIPPER_PREDICT
(module:function), CLIPPER_MODEL_PATH (directory with func.pkl), CLIPPER_READY_FILE,
CLIPPER_HEARTBEAT_INTERVAL (seconds, 1), CLIPPER_SESSION_TIMEOUT (seconds, 10),
CLIPPER_METRICS_PORT (Prometheus metrics on GET /metrics there; unset or empty: none),
CLIPPER_METRICS_HOST (127.0.0.1), CLIPPER_SPIN (1; 0 turns off the low-load poll for the next batch).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .. import cmdline
from ..cmdline import ArgumentParser
from .loader import ModelLoadError, load_model
from .metrics import DEFAULT_HOST, ENV_HOST, ENV_PORT, MetricsServerError, metrics_port_from_env
from .runtime import serve


def build_parser() -> argparse.ArgumentParser:
    """``python -m clipper.model_runtime``'s parser: each default comes from the environment."""
    env = os.environ.get
    ap = ArgumentParser(prog="python -m clipper.model_runtime", description=__doc__)
    ap.add_argument("--predict", default=env("CLIPPER_PREDICT"), metavar="MODULE:FUNCTION",
                    help="model function (default: $CLIPPER_PREDICT, else $CLIPPER_MODEL_PATH/func.pkl)")
    ap.add_argument("--model-path", default=env("CLIPPER_MODEL_PATH"),
                    help="closure directory (default: $CLIPPER_MODEL_PATH)")
    ap.add_argument("--name", default=env("CLIPPER_MODEL_NAME"), help="model name (default: $CLIPPER_MODEL_NAME)")
    ap.add_argument("--version", default=env("CLIPPER_MODEL_VERSION"),
                    help="model version (default: $CLIPPER_MODEL_VERSION)")
    ap.add_argument("--input-type", default=env("CLIPPER_INPUT_TYPE", "doubles"), type=cmdline.input_type,
                    choices=cmdline.INPUT_TYPES,
                    help="input type; Clipper's aliases (d, ints, ...) work too (default: $CLIPPER_INPUT_TYPE, "
                         "else doubles)")
    ap.add_argument("--host", default=env("CLIPPER_IP", "127.0.0.1"),
                    help="frontend RPC host: an IP address, or a name that resolves to every query frontend (one "
                         "session with each of its IPv4 addresses) (default: $CLIPPER_IP, else 127.0.0.1)")
    ap.add_argument("--port", default=env("CLIPPER_PORT", "7000"),
                    help="frontend RPC port, or comma-separated ports (one per query frontend worker) "
                         "(default: $CLIPPER_PORT, else 7000)")
    ap.add_argument("--resolve-interval", type=cmdline.positive_float,
                    default=env("CLIPPER_RESOLVE_INTERVAL", "2.0"), metavar="SECONDS",
                    help="when --host is a name: resolve it again this often, connecting to the frontends that "
                         "appear and leaving those that are gone (default: $CLIPPER_RESOLVE_INTERVAL, else 2)")
    ap.add_argument("--heartbeat-interval", type=cmdline.positive_float,
                    default=env("CLIPPER_HEARTBEAT_INTERVAL", "1.0"),
                    metavar="SECONDS", help="heartbeat when this long passes without a message, also while a "
                    "batch runs; at most a third of the frontend's --heartbeat-timeout "
                    "(default: $CLIPPER_HEARTBEAT_INTERVAL, else 1)")
    ap.add_argument("--session-timeout", type=cmdline.positive_float, default=env("CLIPPER_SESSION_TIMEOUT", "10.0"),
                    metavar="SECONDS", help="new connection after this long without a message from the frontend "
                    "(default: $CLIPPER_SESSION_TIMEOUT, else 10)")
    ap.add_argument("--metrics-port", default=env(ENV_PORT), metavar="PORT",
                    help="serve Prometheus metrics on GET /metrics at this port (0: any free one); empty: no "
                    f"metrics server (default: ${ENV_PORT}, else none)")
    ap.add_argument("--metrics-host", default=env(ENV_HOST) or DEFAULT_HOST,
                    help=f"address of the metrics server (default: ${ENV_HOST}, else {DEFAULT_HOST})")
    ap.add_argument("--spin", action=argparse.BooleanOptionalAction,
                    default=env("CLIPPER_SPIN", "1").strip().lower() not in ("0", "false", "no", "off"),
                    help="after a small batch (spare capacity), poll for the next one for up to 200 µs before "
                         "sleeping: lower latency at low load for CPU (default: $CLIPPER_SPIN, else on)")
    ap.add_argument("--log-level", default="WARNING", type=str.upper, choices=cmdline.LOG_LEVELS, help="log level")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse flags and environment, load the model and serve until SIGTERM/SIGINT."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.name:
        ap.error("model name is required: set CLIPPER_MODEL_NAME or pass --name")
    if not args.version:
        ap.error("model version is required: set CLIPPER_MODEL_VERSION or pass --version")
    try:
        ports = [int(p) for p in str(args.port).split(",")]
        if not all(0 < p < 65536 for p in ports):
            raise ValueError
    except ValueError:
        ap.error(f"invalid port {args.port!r} (CLIPPER_PORT / --port: a port or comma-separated ports)")
    try:
        metrics_port = metrics_port_from_env(args.metrics_port)
    except ValueError:
        ap.error(f"invalid metrics port {args.metrics_port!r} ({ENV_PORT} / --metrics-port: a port, or empty)")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        predict = load_model(args.predict, args.model_path)
    except ModelLoadError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return e.exit_code

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(predict, name=args.name, version=args.version, input_type=args.input_type, host=args.host,
              port=ports, heartbeat_interval=args.heartbeat_interval,
              session_timeout=args.session_timeout, resolve_interval=args.resolve_interval, stop_event=stop,
              metrics_port=metrics_port, metrics_host=args.metrics_host, spin=args.spin)
    except MetricsServerError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
