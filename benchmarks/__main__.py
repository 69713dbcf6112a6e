"""Benchmark harness entry point: ``python -m benchmarks throughput [options]``."""

from __future__ import annotations

import argparse
import sys

from benchmarks.throughput import Options, run_throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tp = sub.add_parser(
        "throughput",
        help="predict req/s and p50/p99: floor server vs. full pipeline (no-op model)",
    )
    d = Options()
    tp.add_argument(
        "--connections",
        type=int,
        default=d.connections,
        help="wrk connections (default %(default)s)",
    )
    tp.add_argument(
        "--duration",
        type=int,
        default=d.duration,
        help="measured run, seconds (default %(default)s)",
    )
    tp.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="wrk threads (default %(default)s)",
    )
    tp.add_argument(
        "--warmup",
        type=int,
        default=d.warmup,
        help="warm-up run, seconds; 0 to skip (default %(default)s)",
    )
    tp.add_argument(
        "--cache",
        action="store_true",
        help="repeat one fixed input (cache hits) instead of unique inputs",
    )
    tp.add_argument(
        "--pipeline",
        choices=["clipper", "floor"],
        default=d.pipeline,
        help="what to measure as the pipeline; 'floor' tests the harness alone",
    )
    tp.add_argument(
        "--app", default=d.app, help="application name (default %(default)s)"
    )
    tp.add_argument(
        "--ready-timeout",
        type=float,
        default=d.ready_timeout,
        help="seconds to wait for a server to answer (default %(default)s)",
    )
    tp.add_argument(
        "--wrk-timeout",
        type=int,
        default=d.wrk_timeout,
        help="wrk per-request timeout, seconds (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --connections, --threads must be >= 1; --warmup >= 0")
    opts = Options(**{k: v for k, v in vars(args).items() if k != "command"})
    return run_throughput(opts)


if __name__ == "__main__":
    sys.exit(main())
