"""``python -m benchmarks.peers [--peers triton,ray,bentoml] [--duration 10] [--connections 64]``.

Sets up missing peer venvs, then measures the floor server, our pipeline and each peer with
the same wrk load in one run, and prints req/s, p50, p99, errors and ratios.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.peers.compare import PEERS, Options, run_peers


def _peer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(PEERS)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    p.add_argument("--peers", type=_peer_list, default=d.peers, help=f"comma-separated (default {','.join(d.peers)})")
    p.add_argument("--connections", type=int, default=d.connections, help="wrk connections (default %(default)s)")
    p.add_argument("--duration", type=int, default=d.duration, help="measured run, seconds (default %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="wrk threads (default %(default)s)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="warm-up run, seconds; 0 to skip (default %(default)s)")
    p.add_argument("--ready-timeout", type=float, default=d.ready_timeout, help="seconds to wait for a server")
    p.add_argument("--wrk-timeout", type=int, default=d.wrk_timeout, help="wrk per-request timeout, seconds")
    p.add_argument("--setup-only", action="store_true", help="only create or update the peers' venvs")
    p.add_argument("--reinstall", action="store_true", help="recreate the peers' venvs from their lock files")
    a = p.parse_args(argv)
    if a.duration < 1 or a.warmup < 0 or a.connections < 1 or not 1 <= a.threads <= a.connections:
        p.error("--duration, --connections, --threads must be >= 1 (threads <= connections); --warmup >= 0")
    return run_peers(Options(**vars(a)))


if __name__ == "__main__":
    sys.exit(main())
