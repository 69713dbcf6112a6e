"""BentoML service with a batchable no-op API (adaptive batching).

Runs in the ``bentoml`` venv: ``bentoml serve bentoml_noop:Noop --host 127.0.0.1 --port P``.
``POST /predict`` with ``{"inputs": [[a, b, c, d]]}`` (a batch of one) answers ``[1.0]``.
"""

from __future__ import annotations

import bentoml


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Noop:
    """One worker, no access log; the API merges concurrent requests into one call."""

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def predict(self, inputs: list[list[float]]) -> list[float]:
        return [1.0] * len(inputs)
