"""The `ContainerManager` interface and the helpers Clipper's managers share.

A container manager owns the processes (or Docker containers, or Kubernetes deployments) of a
cluster: Redis, the management and query frontends and the model replicas. `ClipperConnection`
talks REST to the frontends at the addresses the manager reports and asks the manager to start,
resize and stop things.

Unlike `clipper_admin`'s class (which sets the Python 2 ``__metaclass__`` attribute, so that
nothing is abstract on Python 3), this is a real `abc.ABC`: a subclass that does not implement
every abstract method cannot be instantiated.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import management_client
from .._extras import requests
from ..exceptions import ClipperException
from ..frontend.config import DEFAULT_MANAGEMENT_PORT, DEFAULT_QUERY_PORT, DEFAULT_REDIS_PORT, DEFAULT_RPC_PORT
from ..image_names import CONTAINERLESS_MODEL_IMAGE as CONTAINERLESS_MODEL_IMAGE

#: Ports inside a container (Clipper's names): the frontends' defaults.
CLIPPER_INTERNAL_QUERY_PORT = DEFAULT_QUERY_PORT
CLIPPER_INTERNAL_MANAGEMENT_PORT = DEFAULT_MANAGEMENT_PORT
CLIPPER_INTERNAL_RPC_PORT = DEFAULT_RPC_PORT
CLIPPER_INTERNAL_METRIC_PORT = 1390
CLIPPER_INTERNAL_REDIS_PORT = DEFAULT_REDIS_PORT
CLIPPER_INTERNAL_FLUENTD_PORT = 24224

CLIPPER_DOCKER_LABEL = "ai.clipper.container.label"
CLIPPER_NAME_LABEL = "ai.clipper.name"
CLIPPER_MODEL_CONTAINER_LABEL = "ai.clipper.model_container.label"
CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL = "ai.clipper.query_frontend.label"
CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL = "ai.clipper.management_frontend.label"

CLIPPER_DOCKER_PORT_LABELS = {
    "redis": "ai.clipper.redis.port",
    "query_rest": "ai.clipper.query_frontend.query.port",
    "query_rpc": "ai.clipper.query_frontend.rpc.port",
    "management": "ai.clipper.management.port",
    "metric": "ai.clipper.metric.port",
    "fluentd": "ai.clipper.fluentd.port",
}
CLIPPER_METRIC_CONFIG_LABEL = "ai.clipper.metric.config"
CLIPPER_FLUENTD_CONFIG_LABEL = "ai.clipper.fluentd.config"

# '_' separates name and version in labels: valid in Kubernetes labels, not in model names.
_MODEL_CONTAINER_LABEL_DELIMITER = "_"


class ClusterAdapter(logging.LoggerAdapter):
    """Prefixes log messages with ``[<cluster_name>]``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['cluster_name']}] {msg}", kwargs


def create_model_container_label(name: str, version: str) -> str:
    return f"{name}{_MODEL_CONTAINER_LABEL_DELIMITER}{version}"


def parse_model_container_label(label: str) -> tuple[str, str]:
    splits = label.split(_MODEL_CONTAINER_LABEL_DELIMITER)
    if len(splits) != 2:
        raise ClipperException(f"Unable to parse model container label {label}")
    return splits[0], splits[1]


def gpu_request(value: Any) -> int | list[str] | None:
    """A model's GPU request, checked: None (none asked), a count of GPUs (0: none, and none visible), or a
    list of device ids (``[0, 2]``, ``["GPU-3f1c..."]``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ClipperException(f"Invalid GPU request {value!r}: give a number of GPUs or a list of device ids")
    if isinstance(value, int):
        if value < 0:
            raise ClipperException(f"Invalid GPU request {value}: must be >= 0")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, str)) and str(v) for v in value):
        return [str(v) for v in value]
    raise ClipperException(f"Invalid GPU request {value!r}: give a number of GPUs or a list of device ids")


class ContainerManager(abc.ABC):
    """What `ClipperConnection` needs from a cluster backend.

    Subclasses must set the attributes `cluster_identifier` (a string naming the cluster; it
    prefixes log messages and image names) and `logger`. Address getters return ``"host:port"``
    without a scheme.

    Clipper's logging attributes keep their names with this project's values: `centralize_log` is
    always False and `logging_system` / `logging_system_instance` are None, because there is no
    fluentd (Clipper's centralized logging); `get_logs` collects the logs from where each manager
    keeps them (Docker's log driver, or log files). Scripts written for Clipper, such as its
    ``test_get_logs_creates_log_files``, branch on `centralize_log`.
    """

    cluster_identifier: str
    logger: logging.LoggerAdapter
    #: Whether logs go to a central logging system (Clipper's fluentd): never here.
    centralize_log: bool = False
    #: Clipper's logging-system class (``Fluentd``) and its running instance: none here.
    logging_system: Any = None
    logging_system_instance: Any = None
    #: The bearer tokens the cluster's management API and predict/update routes require (None: none).
    #: `ClipperConnection` sends `admin_token`; an application sends `predict_token`.
    admin_token: str | None = None
    predict_token: str | None = None
    #: Whether `set_model_resources` accepts ``gpus`` (the manager can give a replica GPUs).
    supports_gpus: bool = False

    def set_model_resources(self, name: str, version: str | None = None, **resources: Any) -> None:
        """Records what the replicas of model `name` (every version, or `version`) ask for; applied to the
        replicas started from now on. ``gpus`` (see `gpu_request`) where `supports_gpus`; other keys as each
        manager documents (e.g. ``cpu_limit``, ``mem_limit``)."""
        if "gpus" in resources:
            resources["gpus"] = gpu_request(resources["gpus"])
            if not self.supports_gpus and resources["gpus"]:
                raise ClipperException(f"{type(self).__name__} cannot give model replicas GPUs")
        table = self.__dict__.setdefault("model_resources", {})
        key = name if version is None else f"{name}:{version}"
        table[key] = {**table.get(key, {}), **resources}

    def model_resources_for(self, name: str, version: str) -> dict[str, Any]:
        """What `set_model_resources` recorded for ``name:version`` (the version's entry over the model's)."""
        table = self.__dict__.get("model_resources") or {}
        return {**table.get(name, {}), **table.get(f"{name}:{version}", {})}

    def _restore_replicas(self, specs: Sequence[Mapping[str, Any]]) -> None:
        """Starts again the replicas that `stop_all(keep_state=True)` listed (`{"name", "version", "input_type",
        "image", "count"}` each); a failure is logged, not raised."""
        for spec in specs:
            name, version, count = spec["name"], str(spec["version"]), int(spec["count"])
            try:
                self.set_num_replicas(name, version, spec["input_type"], spec["image"], count)
            except ClipperException as e:
                self.logger.warning(f"Could not start the {count} replica(s) of {name}:{version} again: {e.msg}")
            else:
                self.logger.info(f"Started {count} replica(s) of {name}:{version} again")

    @abc.abstractmethod
    def start_clipper(self, query_frontend_image: str, mgmt_frontend_image: str, frontend_exporter_image: str,
                      cache_size: int, qf_http_thread_pool_size: int, qf_http_timeout_request: int,
                      qf_http_timeout_content: int, num_frontend_replicas: int) -> None:
        """Starts Redis (unless external), the management and query frontends."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Finds an already running cluster (its addresses)."""

    @abc.abstractmethod
    def deploy_model(self, name: str, version: str, input_type: str, image: str, num_replicas: int = 1) -> None:
        """Starts `num_replicas` replicas of model `name:version` from `image`."""

    @abc.abstractmethod
    def get_num_replicas(self, name: str, version: str) -> int:
        """How many replicas of `name:version` this manager runs."""

    @abc.abstractmethod
    def set_num_replicas(self, name: str, version: str, input_type: str, image: str, num_replicas: int) -> None:
        """Starts or stops replicas of `name:version` until `num_replicas` run."""

    @abc.abstractmethod
    def get_logs(self, logging_dir: str) -> list[str]:
        """Copies the cluster's logs into `logging_dir` and returns the paths written."""

    @abc.abstractmethod
    def stop_models(self, models: Mapping[str, Sequence[str]]) -> None:
        """Stops every replica of the given versions (`{name: [version, ...]}`)."""

    @abc.abstractmethod
    def stop_all_model_containers(self) -> None:
        """Stops every model replica of the cluster."""

    @abc.abstractmethod
    def stop_all(self, graceful: bool = True, keep_state: bool = False) -> None:
        """Stops everything the cluster runs (model replicas, frontends, managed Redis).

        The managed Redis's data goes too (the next `start_clipper` starts empty), unless `keep_state`:
        then the next `start_clipper` comes back with it. (`ClipperConnection` passes `keep_state` only
        when it is True, so managers written for Clipper's signature keep working.)
        """

    @abc.abstractmethod
    def get_admin_addr(self) -> str:
        """``host:port`` of the management frontend."""

    @abc.abstractmethod
    def get_query_addr(self) -> str:
        """``host:port`` of the query frontend (REST predictions and ``GET /metrics``)."""

    @abc.abstractmethod
    def get_metric_addr(self) -> str:
        """``host:port`` of the metrics server."""

    def build_model(self, name: str, version: str, model_data_path: str, base_image: str,
                    container_registry: str | None = None, pkgs_to_install: Sequence[str] | None = None) -> str:
        """Packages the directory `model_data_path` as a model "image" and returns its name.

        In `clipper_admin` this is `ClipperConnection.build_model` and always builds a Docker image;
        here each manager decides what an image is (`LocalContainerManager`: a directory). The
        default refuses.
        """
        raise ClipperException(f"{type(self).__name__} cannot build model images; build one yourself and call "
                               "ClipperConnection.deploy_model with its name")


def http_ok(url: str) -> bool:
    """True when ``GET url`` answers 200 within 2 s."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_frontend_replicas(admin_addr: str, name: str, version: str, want: int, logger: Any,
                           timeout: float = 5.0, token: str | None = None) -> None:
    """Waits (briefly) until every query frontend counts `want` replicas of ``name:version``; warns when one
    does not.

    The counts are those of the replicas each frontend has published, asked of the management API at
    `admin_addr` (`management_client.count_replicas_per_frontend`): every frontend whose announcement is live
    must count `want` (a replica serves every frontend it reaches). With no frontend announced, `want` must
    be 0 or less.
    """
    until = time.monotonic() + timeout
    counts: dict[str, int] | None = None
    while time.monotonic() < until:
        counts = management_client.count_replicas_per_frontend(admin_addr, name, version, token=token)
        if counts is not None and min(counts.values(), default=0) >= want:
            return
        time.sleep(0.05)
    short = {f: n for f, n in (counts or {}).items() if n < want}
    which = " (" + ", ".join(f"{f or '?'}: {n}" for f, n in sorted(short.items())) + ")" if short else ""
    logger.warning(f"The query frontend does not report {want} replica(s) of {name}:{version} yet{which}")
