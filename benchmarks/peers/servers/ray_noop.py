"""Ray Serve serving a no-op model through ``@serve.batch``.

Runs in the ``ray`` venv: ``python ray_noop.py --port P``. One replica, one local Ray node, no access log.
``POST /predict`` with ``{"input": [a, b, c, d]}`` answers ``{"output": 1.0}``.
"""

from __future__ import annotations

import argparse
import signal
import threading

import ray
from ray import serve
from ray.serve.schema import LoggingConfig
from starlette.requests import Request


@serve.deployment(num_replicas=1, max_ongoing_requests=256)
class Noop:
    """Batches concurrent requests, then returns a constant per input."""

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def predict(self, inputs: list[list[float]]) -> list[float]:
        return [1.0] * len(inputs)

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return {"output": await self.predict(body["input"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--num-cpus", type=int, default=2)
    a = p.parse_args()
    ray.init(num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False)
    quiet = LoggingConfig(enable_access_log=False)
    serve.start(http_options={"host": a.host, "port": a.port}, logging_config=quiet)
    serve.run(Noop.bind(), name="noop", route_prefix="/predict", logging_config=quiet)
    # After ray.init, whose native handler would swallow SIGTERM and leave the node running.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ray serve ready", flush=True)
    stop.wait()
    ray.shutdown()  # the harness signals the whole process group, so the Serve actors are going down already


if __name__ == "__main__":
    main()
