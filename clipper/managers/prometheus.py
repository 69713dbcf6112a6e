"""Prometheus with the cluster: its configuration and the target files the managers keep up to date.

Both managers run one Prometheus server per cluster (`LocalContainerManager`: Debian's ``prometheus``
binary as a process; `DockerContainerManager`: the image ``clipper/prometheus``) with two scrape jobs:

* ``query_frontend``: every query frontend's ``GET /metrics`` (Prometheus asks for text, so the
  frontend answers in the Prometheus text format);
* ``model_container``: every model replica's metrics endpoint, served at
  ``$CLIPPER_METRICS_HOST:$CLIPPER_METRICS_PORT``, which the managers assign to each replica they
  start while the cluster runs Prometheus.

Targets are found through file-based service discovery (``file_sd_configs``): one JSON file per job
that the manager rewrites (atomically: a new file renamed over the old) whenever the frontends or
replicas change; Prometheus watches the files and picks up changes within a second, without a restart.
Every target carries the labels ``job``, ``cluster`` and, for replicas, ``model``, ``version`` and
``replica``. The configuration is written as JSON, which is valid YAML, so nothing here needs a YAML
library.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._extras import requests

#: Where Prometheus listens unless told otherwise (its usual port; Clipper's `prometheus_port`).
DEFAULT_PROMETHEUS_PORT = 9090
#: How often Prometheus scrapes every target, in seconds (Clipper's configuration said 5 s).
DEFAULT_SCRAPE_INTERVAL_S = 2.0
#: The Debian package (and binary) of the Prometheus server.
PROMETHEUS_PACKAGE = "prometheus"
#: Job names (the ``job`` label).
QUERY_FRONTEND_JOB = "query_frontend"
MODEL_CONTAINER_JOB = "model_container"
JOBS = (QUERY_FRONTEND_JOB, MODEL_CONTAINER_JOB)
#: The variables that ask a model replica to serve its metrics (`docs/monitoring` contract).
METRICS_PORT_ENV = "CLIPPER_METRICS_PORT"
METRICS_HOST_ENV = "CLIPPER_METRICS_HOST"
#: How often Prometheus re-reads the target files even without a change notification.
_SD_REFRESH = "5s"


def duration(seconds: float) -> str:
    """A Prometheus duration of `seconds`: ``"2s"``, or ``"1500ms"`` (at least 1 ms)."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def targets_file(targets_dir: str | os.PathLike[str], job: str) -> str:
    """The file_sd file of `job` in `targets_dir` (a path as Prometheus will see it)."""
    return f"{str(targets_dir).rstrip('/')}/{job}.json"


def config(targets_dir: str | os.PathLike[str], scrape_interval: float = DEFAULT_SCRAPE_INTERVAL_S) -> str:
    """The Prometheus configuration (JSON, valid YAML): both jobs, their targets from the files in
    `targets_dir` (as Prometheus sees that folder), scraped every `scrape_interval` seconds."""
    if not scrape_interval or scrape_interval <= 0:
        raise ValueError(f"Invalid scrape interval {scrape_interval!r}: must be > 0 seconds")
    interval = duration(scrape_interval)
    cfg = {
        "global": {"scrape_interval": interval, "scrape_timeout": duration(min(scrape_interval, 10.0)),
                   "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "honor_labels": False,
             "file_sd_configs": [{"files": [targets_file(targets_dir, job)], "refresh_interval": _SD_REFRESH}]}
            for job in JOBS
        ],
    }
    return json.dumps(cfg, indent=2) + "\n"


def frontend_group(address: str, cluster: str) -> dict[str, Any]:
    """The target group of a query frontend at `address` (``host:port``)."""
    return {"targets": [address], "labels": {"cluster": cluster}}


def replica_group(address: str, cluster: str, model: str, version: str, replica: str) -> dict[str, Any]:
    """The target group of a model replica's metrics endpoint at `address` (``host:port``)."""
    return {"targets": [address],
            "labels": {"cluster": cluster, "model": model, "version": str(version), "replica": str(replica)}}


def render_targets(groups: Iterable[Mapping[str, Any]]) -> bytes:
    """A file_sd file's content (sorted, so that an unchanged list gives the same bytes)."""
    rows = sorted((dict(g) for g in groups), key=lambda g: (g["targets"], sorted(g["labels"].items())))
    return (json.dumps(rows, indent=2) + "\n").encode()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes `data` to `path` through a temporary file renamed over it (a reader never sees half a file);
    leaves the file alone when it already holds `data`."""
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ready(address: str, timeout: float = 2.0) -> bool:
    """True when the Prometheus server at `address` answers ``GET /-/ready`` with 200."""
    try:
        return requests.get(f"http://{address}/-/ready", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def query(address: str, promql: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query against the server at `address` (``/api/v1/query``);
    raises `RuntimeError` with Prometheus's error when the query fails."""
    r = requests.get(f"http://{address}/api/v1/query", params={"query": promql, "time": f"{time.time():.3f}"},
                     timeout=timeout)
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus query {promql!r} failed: {body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]
