"""A basic query client, after Clipper's examples/basic_query: start a cluster, deploy a model, query it in a loop.

    python examples/basic_query.py                 # until Ctrl-C
    python examples/basic_query.py --count 20      # 20 predictions, then stop
    python examples/basic_query.py --batch-size 8  # input_batch requests of 8 inputs

Starts a local cluster (Redis, the management frontend, the query frontend: `LocalContainerManager`, on
Clipper's ports 1337/1338/7000/6379, or free ones with `--free-ports`), registers the app `simple-example`
(doubles), deploys a Python closure that sums each input as model `simple-example` and links the two
(`create_endpoint`). Then it sends random inputs of `--input-size` doubles, one request at a time, and prints
each answer with its latency (client side, keep-alive connection). Ctrl-C (or SIGTERM) stops the loop; the
cluster is always stopped on the way out, leaving no process behind.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time

import numpy as np
import requests

from clipper import ClipperConnection, LocalContainerManager
from clipper.deployers import python as python_deployer

APP = "simple-example"


def feature_sum(xs):
    """The model: one output per input of the batch, the sum of its elements."""
    return [str(sum(x)) for x in xs]


def wait_for_model(session: requests.Session, url: str, timeout_s: float = 30.0) -> None:
    """Until the app's answers come from the model, not the default (the link takes up to a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = session.post(url, json={"input": [1.0, 2.0]}, timeout=10)
        if r.status_code == 200 and not r.json()["default"]:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the model did not answer within {timeout_s} s: {r.status_code} {r.text}")
        time.sleep(0.1)


def predict(session: requests.Session, url: str, inputs: list[list[float]], batch: bool) -> tuple[dict, float]:
    """One request; returns its JSON answer and its latency in milliseconds."""
    body = {"input_batch": inputs} if batch else {"input": inputs[0]}
    start = time.perf_counter()
    r = session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)
    latency_ms = (time.perf_counter() - start) * 1000.0
    r.raise_for_status()
    return r.json(), latency_ms


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=0, help="predictions to send (default 0: until Ctrl-C)")
    ap.add_argument("--batch-size", type=int, default=1, help="inputs per request; > 1 sends input_batch")
    ap.add_argument("--input-size", type=int, default=200, help="doubles per input (default 200)")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between requests (default 0.2)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random inputs")
    ap.add_argument("--free-ports", action="store_true", help="free ports instead of Clipper's 1337/1338/7000/6379")
    ap.add_argument("--cluster-name", default="basic-query", help="the local cluster's name (default basic-query)")
    ap.add_argument("--cluster-dir", default=None, help="where the cluster keeps its state and logs")
    args = ap.parse_args(argv)

    ports = {}
    if args.free_ports:
        ports = {"clipper_query_port": None, "clipper_management_port": None, "clipper_rpc_port": None,
                 "redis_port": None}
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    clipper_conn = ClipperConnection(LocalContainerManager(cluster_name=args.cluster_name,
                                                           cluster_dir=args.cluster_dir, **ports))
    rng = np.random.default_rng(args.seed)
    latencies: list[float] = []
    defaults = 0
    try:
        clipper_conn.start_clipper()
        python_deployer.create_endpoint(clipper_conn, APP, "doubles", feature_sum, default_output="-1.0",
                                        slo_micros=100_000)
        url = f"http://{clipper_conn.get_query_addr()}/{APP}/predict"
        print(f"Serving {APP} at {url}", flush=True)
        with requests.Session() as session:
            wait_for_model(session, url)
            sent = 0
            while args.count <= 0 or sent < args.count:
                inputs = [rng.random(args.input_size).round(6).tolist() for _ in range(args.batch_size)]
                answer, latency_ms = predict(session, url, inputs, batch=args.batch_size > 1)
                latencies.append(latency_ms)
                answers = answer["batch_predictions"] if args.batch_size > 1 else [answer]
                defaults += sum(a["default"] for a in answers)
                expected = ", ".join(f"{sum(x):.6f}" for x in inputs)
                print(f"{json.dumps(answer)}  expected {expected}  {latency_ms:.3f} ms", flush=True)
                sent += 1
                if args.interval > 0:
                    time.sleep(args.interval)
    except KeyboardInterrupt:
        print("Interrupted", flush=True)
    finally:
        if latencies:
            print(f"{len(latencies)} requests, {defaults} default answers, latency p50 "
                  f"{statistics.median(latencies):.3f} ms, max {max(latencies):.3f} ms", flush=True)
        print("Stopping Clipper...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
        clipper_conn.stop_all()
        print("Stopped", flush=True)
    return 0 if defaults == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
