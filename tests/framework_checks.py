"""What every framework's tests check (tests/test_framework_<framework>.py), over real processes and real HTTP.

* `local_cluster`: a `LocalContainerManager` cluster (Redis, both frontends; replicas run by this interpreter),
  for a module-scoped fixture; `docker_cluster`: the same with `DockerContainerManager` (free ports, its own
  network), everything of it removed at the end.
* `check_predictions`: ``POST /<app>/predict`` of each input alone, then all of them as one ``input_batch``;
  every output must equal the framework's own output for that input (`expected`, computed in the test), compared
  with `close` (floats: to a relative 1e-5, as batches of other sizes may round differently).
* `check_default_with_reason`: the app answers its default output, and the explanation carries the model's
  exception.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests
from conftest import make_manager

from clipper import ClipperConnection

HTTP_TIMEOUT_S = 30.0
#: How long a new app/link takes at most to reach the query frontend (through Redis).
PROPAGATION_S = 30.0


@contextlib.contextmanager
def local_cluster(name: str, cluster_dir: Path) -> Iterator[ClipperConnection]:
    """A started local cluster (free ports, state under `cluster_dir`), stopped at the end."""
    conn = ClipperConnection(make_manager(f"{name}-{os.getpid()}", cluster_dir), health_check_timeout=60)
    try:
        conn.start_clipper()
        yield conn
    finally:
        conn.stop_all()


@contextlib.contextmanager
def docker_cluster(prefix: str) -> Iterator[ClipperConnection]:
    """A started Docker cluster with its own name, network and free host ports; at the end its containers,
    network, volumes and model images (``<cluster>-<model>:<version>``) are removed, whatever happened."""
    import docker

    from clipper import DockerContainerManager
    from clipper.managers.base import CLIPPER_DOCKER_LABEL
    from clipper.ports import free_ports

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    network = f"{name}-net"
    query, mgmt, rpc, redis = free_ports(4)
    cm = DockerContainerManager(cluster_name=name, clipper_query_port=query, clipper_management_port=mgmt,
                                clipper_rpc_port=rpc, redis_port=redis, docker_network=network,
                                use_prometheus=False)
    conn = ClipperConnection(cm, health_check_timeout=120)
    try:
        conn.start_clipper()
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.stop_all(graceful=False)
        client = docker.from_env(timeout=120)
        for c in client.containers.list(all=True, filters={"label": f"{CLIPPER_DOCKER_LABEL}={name}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for net in client.networks.list(names=[network]):
            with contextlib.suppress(Exception):
                net.remove()
        for volume in client.volumes.list(filters={"label": f"{CLIPPER_DOCKER_LABEL}={name}"}):
            with contextlib.suppress(Exception):
                volume.remove(force=True)
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{name.lower()}-"):
                    with contextlib.suppress(Exception):
                        client.images.remove(tag, noprune=False)


def post(conn: ClipperConnection, app: str, body: dict[str, Any]) -> requests.Response:
    """``POST /<app>/predict`` with a JSON body."""
    return requests.post(f"http://{conn.get_query_addr()}/{app}/predict", json=body, timeout=HTTP_TIMEOUT_S)


def wait_served(conn: ClipperConnection, app: str, value: Any, timeout: float = PROPAGATION_S) -> dict[str, Any]:
    """POSTs `value` until the app answers with a prediction that is not a "no connected models" default (the
    app, the link and the replica reach the query frontend through Redis); returns that answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        r = post(conn, app, {"input": value})
        last = r.text
        if r.status_code == 200:
            body = r.json()
            if not body["default"] or "No connected models" not in body.get("default_explanation", ""):
                return body
        assert time.monotonic() < deadline, f"{app}: not served after {timeout} s: {last}"
        time.sleep(0.1)


def close(got: Any, want: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """`got` (parsed from the answer's JSON) equals `want`: numbers and nested lists to rtol/atol, else ==."""
    if isinstance(want, (float, int, list, tuple, np.ndarray, np.number)) and not isinstance(want, bool):
        try:
            return bool(np.allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=rtol,
                                    atol=atol))
        except (TypeError, ValueError):
            return False
    return got == want


def check_predictions(conn: ClipperConnection, app: str, inputs: Sequence[Any], expected: Callable[[Any], Any],
                      compare: Callable[[Any, Any], bool] = close) -> None:
    """Each input alone, then all of them as one batch: every answer is the model's (not a default) and
    ``compare(output, expected(input))``."""
    wait_served(conn, app, inputs[0])
    for x in inputs:
        body = post(conn, app, {"input": x}).json()
        assert body["default"] is False, (x, body)
        assert compare(body["output"], expected(x)), (x, body["output"], expected(x))
    r = post(conn, app, {"input_batch": list(inputs)})
    assert r.status_code == 200, r.text
    answers = r.json()["batch_predictions"]
    assert len(answers) == len(inputs)
    for x, body in zip(inputs, answers, strict=True):
        assert body["default"] is False, (x, body)
        assert compare(body["output"], expected(x)), (x, body["output"], expected(x))


def check_default_with_reason(conn: ClipperConnection, app: str, value: Any, default_output: Any,
                              reason: str) -> dict[str, Any]:
    """The app answers `default_output` for `value`, explaining that the model failed with `reason` in it."""
    body = wait_served(conn, app, value)
    assert body["default"] is True, body
    assert body["output"] == default_output, body
    explanation = body.get("default_explanation", "")
    assert explanation.startswith("Model failed to predict"), body
    assert reason in explanation, body
    return body
