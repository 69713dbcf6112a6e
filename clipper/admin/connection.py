"""`ClipperConnection`: the admin client of a cluster (Clipper's `clipper_admin` API, `docs/compatibility.md`).

Same methods, arguments, return values and HTTP requests as `clipper_admin.ClipperConnection`
0.4.1: every REST call is a ``POST http://<admin addr>/admin/<route>`` with header
``Content-type: application/json`` and a JSON body, and a non-200 answer raises
``ClipperException("Received error status code: <code> and message: <text>")``.

Differences, all deliberate:

* `build_model` asks the container manager to build the model "image" (`ContainerManager.build_model`);
  `clipper_admin` always builds and pushes a Docker image. With `LocalContainerManager` an image is
  a directory (see `clipper.managers.local`).
* `start_clipper` fails with a `ClipperException` naming the address and the last error when the
  frontends do not become healthy in time (`clipper_admin` raises a bare `RequestException`).
* A management frontend that cannot be reached raises `ClipperException` rather than a
  `requests` exception, and every request has a timeout.
* `deploy_model` stops the replicas it has just started when the model cannot be registered
  (e.g. the version already exists) and no replica of that version ran before.
* Importing the module does not configure logging; use `logging.basicConfig(level=logging.INFO)`
  to see the messages `clipper_admin` prints.
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle
import numpy as np

from .. import management_client
from .._extras import requests
from ..exceptions import ClipperException, UnconnectedException
from ..frontend.config import DEFAULT_CACHE_BYTES
from ..image_names import CONTAINERLESS_MODEL_IMAGE, DEFAULT_IMAGE_VERSION, DEFAULT_REGISTRY, image_ref
from ..managers.base import ClusterAdapter, ContainerManager

__all__ = ["CLIPPER_TEMP_DIR", "CONTAINERLESS_MODEL_IMAGE", "DEFAULT_IMAGE_VERSION", "DEFAULT_LABEL",
           "DEFAULT_PREDICTION_CACHE_SIZE_BYTES", "DEFAULT_REGISTRY", "ClipperConnection",
           "validate_versioned_model_name"]

DEFAULT_LABEL: list[str] = []
#: Clipper's name for the query frontend's default prediction cache size.
DEFAULT_PREDICTION_CACHE_SIZE_BYTES = DEFAULT_CACHE_BYTES
CLIPPER_TEMP_DIR = "/tmp/clipper"

logger = logging.getLogger("clipper.admin")

deploy_regex_str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z"
deployment_regex = re.compile(deploy_regex_str)


def validate_versioned_model_name(name: str, version: str) -> None:
    """Model names and versions must be DNS-1123 labels (Clipper's check, same messages)."""
    if deployment_regex.match(name) is None:
        raise ClipperException(
            f"Invalid value: {name}: a model name must be a valid DNS-1123 "
            " subdomain. It must consist of lower case "
            "alphanumeric characters, '-' or '.', and must start and end with "
            "an alphanumeric character (e.g. 'example.com', regex used for "
            f"validation is '{deploy_regex_str}'"
        )
    if deployment_regex.match(version) is None:
        raise ClipperException(
            f"Invalid value: {version}: a model version must be a valid DNS-1123 "
            " subdomain. It must consist of lower case "
            "alphanumeric characters, '-' or '.', and must start and end with "
            "an alphanumeric character (e.g. 'example.com', regex used for "
            f"validation is '{deploy_regex_str}'"
        )


class ClipperConnection:
    """A connection to a Clipper cluster run by `container_manager`.

    Create it, then either `start_clipper()` (starts a cluster and connects) or `connect()`
    (to a running one)::

        from clipper import ClipperConnection, LocalContainerManager
        conn = ClipperConnection(LocalContainerManager())
        conn.start_clipper()

    `health_check_timeout` bounds how long `start_clipper` waits for the frontends (Clipper: 300 s);
    `request_timeout` bounds each REST request.
    """

    def __init__(self, container_manager: ContainerManager, *, health_check_timeout: float = 300.0,
                 request_timeout: float = 60.0) -> None:
        self.connected = False
        self.cm = container_manager
        self.health_check_timeout = health_check_timeout
        self.request_timeout = request_timeout
        self.logger = ClusterAdapter(logger, {"cluster_name": self.cm.cluster_identifier})

    # ------------------------------------------------------------------ helpers

    def _require_connection(self) -> None:
        if not self.connected:
            raise UnconnectedException()

    def _post(self, route: str, body: dict[str, Any]) -> requests.Response:
        """POSTs `body` to ``/admin/<route>``; non-200 raises Clipper's `ClipperException`."""
        return management_client.post(self.cm.get_admin_addr(), route, body, timeout=self.request_timeout,
                                      logger=self.logger, token=self.cm.admin_token)

    def _get_json(self, route: str, body: dict[str, Any]) -> Any:
        return management_client.get_json(self.cm.get_admin_addr(), route, body, timeout=self.request_timeout,
                                          logger=self.logger, token=self.cm.admin_token)

    # ------------------------------------------------------------------ cluster lifecycle

    def start_clipper(
        self,
        query_frontend_image: str = image_ref("query_frontend"),
        mgmt_frontend_image: str = image_ref("management_frontend"),
        frontend_exporter_image: str = image_ref("frontend-exporter"),
        cache_size: int = DEFAULT_PREDICTION_CACHE_SIZE_BYTES,
        qf_http_thread_pool_size: int = 1,
        qf_http_timeout_request: int = 5,
        qf_http_timeout_content: int = 300,
        num_frontend_replicas: int = 1,
    ) -> None:
        """Starts a new cluster with the container manager, waits until it is healthy, connects.

        Healthy: ``GET http://<query addr>/metrics`` and ``GET http://<admin addr>/admin/ping``
        both answer 200. Raises `ClipperException` if the manager fails or the frontends are not
        healthy within `health_check_timeout` seconds.
        """
        try:
            self.cm.start_clipper(query_frontend_image, mgmt_frontend_image, frontend_exporter_image, cache_size,
                                  qf_http_thread_pool_size, qf_http_timeout_request, qf_http_timeout_content,
                                  num_frontend_replicas)
        except ClipperException as e:
            self.logger.warning(f"Error starting Clipper: {e.msg}")
            raise
        self._wait_healthy()
        self.logger.info("Clipper is running")
        self.connected = True

    def _wait_healthy(self) -> None:
        checks = [
            ("query frontend", f"http://{self.cm.get_query_addr()}/metrics"),
            ("management frontend", f"http://{self.cm.get_admin_addr()}/admin/ping"),
        ]
        deadline = time.monotonic() + self.health_check_timeout
        last_error = ""
        while True:
            for name, url in checks:
                try:
                    r = requests.get(url, timeout=5)
                except requests.RequestException as e:
                    last_error = f"{name} end point {url}: {e}"
                    break
                if r.status_code != requests.codes.ok:
                    last_error = f"{name} end point {url} health check failed with status {r.status_code}"
                    break
            else:
                return
            if time.monotonic() >= deadline:
                raise ClipperException(
                    f"Clipper did not become healthy within {self.health_check_timeout:g} s; last error: {last_error}"
                )
            self.logger.info(f"Clipper still initializing: {last_error}")
            time.sleep(0.2)

    def connect(self) -> None:
        """Connects to a running cluster (through the container manager; no HTTP)."""
        self.cm.connect()
        self.connected = True
        self.logger.info(f"Successfully connected to Clipper cluster at {self.cm.get_query_addr()}")

    def stop_all(self, graceful: bool = True, keep_state: bool = False) -> None:
        """Stops everything the container manager started; needs no connection.

        As in Clipper, the next `start_clipper()` then starts empty: the managed Redis's data is removed.
        `keep_state=True` keeps it (apps, models, versions, links, selection state; the managers also
        note the model replicas that ran), and the next `start_clipper()` comes back with it. An external
        Redis (`redis_ip`) is never touched.
        """
        if keep_state:
            self.cm.stop_all(graceful=graceful, keep_state=True)
        else:
            self.cm.stop_all(graceful=graceful)
        self.connected = False
        self.logger.info("Stopped all Clipper cluster and all model containers")

    # ------------------------------------------------------------------ applications

    def register_application(self, name: str, input_type: str, default_output: str, slo_micros: int,
                             selection_policy: str | None = None) -> None:
        """Creates the REST endpoint ``/<name>/predict`` (``POST /admin/add_app``).

        `selection_policy` ("exp3", "exp4", "epsilon_greedy", "ucb"; absent: one model, Clipper's
        default) lets the app link several models and learn from ``/<name>/update`` feedback.
        """
        self._require_connection()
        body: dict[str, Any] = {"name": name, "input_type": input_type, "default_output": default_output,
                                "latency_slo_micros": slo_micros}
        if selection_policy is not None:
            body["selection_policy"] = selection_policy
        self._post("add_app", body)
        self.logger.info(f"Application {name} was successfully registered")

    def delete_application(self, name: str) -> None:
        """Deprecated alias of `unregister_application`."""
        self.logger.warning("[DEPRECATED] Use 'unregister_application' API instead of this.")
        self.unregister_application(name)

    def unregister_application(self, name: str) -> None:
        """Removes an application (``POST /admin/delete_app``)."""
        self._require_connection()
        self._post("delete_app", {"name": name})
        self.logger.info(f"Application {name} was successfully unregistered")

    def link_model_to_app(self, app_name: str, model_name: str) -> None:
        """Routes the app's requests to the model (``POST /admin/add_model_links``)."""
        self._require_connection()
        self._post("add_model_links", {"app_name": app_name, "model_names": [model_name]})
        self.logger.info(f"Model {model_name} is now linked to application {app_name}")

    def unlink_model_from_app(self, app_name: str, model_name: str) -> None:
        """Removes the link (``POST /admin/delete_model_links``)."""
        self._require_connection()
        self._post("delete_model_links", {"app_name": app_name, "model_names": [model_name]})
        self.logger.info(f"Model {model_name} is now removed to application {app_name}")

    def get_all_apps(self, verbose: bool = False) -> list[Any]:
        """App names, or (verbose) app info dicts."""
        self._require_connection()
        return self._get_json("get_all_applications", {"verbose": verbose})

    def get_app_info(self, name: str) -> dict[str, Any] | None:
        """The app's info dict, or None when there is no such app."""
        self._require_connection()
        app_info = self._get_json("get_application", {"name": name})
        if len(app_info) == 0:
            self.logger.warning(f"Application {name} is not registered with Clipper")
            return None
        return app_info

    def get_selection_state(self, app_name: str, uid: int = 0) -> dict[str, Any]:
        """What the app's selection policy has learned for user `uid` (``{}`` before any feedback)."""
        self._require_connection()
        return self._get_json("get_selection_state", {"app_name": app_name, "uid": uid})

    def reset_selection_state(self, app_name: str, uid: int | None = None) -> None:
        """Forgets what the app's selection policy learned, for one user or (None) for all."""
        self._require_connection()
        body: dict[str, Any] = {"app_name": app_name}
        if uid is not None:
            body["uid"] = uid
        self._post("reset_selection_state", body)

    def get_linked_models(self, app_name: str) -> list[str]:
        """Names of the models linked to the app."""
        self._require_connection()
        return self._get_json("get_linked_models", {"app_name": app_name})

    # ------------------------------------------------------------------ models

    def build_and_deploy_model(self, name: str, version: Any, input_type: str, model_data_path: str,
                               base_image: str, labels: list[str] | None = None,
                               container_registry: str | None = None, num_replicas: int = 1,
                               batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                               gpus: int | list[int | str] | None = None) -> None:
        """`build_model`, then `deploy_model` with the image it returns."""
        self._require_connection()
        image = self.build_model(name, version, model_data_path, base_image, container_registry, pkgs_to_install)
        self.deploy_model(name, version, input_type, image, labels, num_replicas, batch_size, gpus=gpus)

    def build_model(self, name: str, version: Any, model_data_path: str, base_image: str,
                    container_registry: str | None = None, pkgs_to_install: list[str] | None = None) -> str:
        """Packages `model_data_path` as a model image through the container manager; returns its name.

        Needs no connection. With `LocalContainerManager` the image is a copy of the directory
        (``local:<path>``) and `pkgs_to_install` are pip-installed into its ``modules/``.
        """
        version = str(version)
        validate_versioned_model_name(name, version)
        return self.cm.build_model(name, version, model_data_path, base_image, container_registry, pkgs_to_install)

    def deploy_model(self, name: str, version: Any, input_type: str, image: str, labels: list[str] | None = None,
                     num_replicas: int = 1, batch_size: int = -1, *,
                     gpus: int | list[int | str] | None = None) -> None:
        """Starts `num_replicas` replicas of `image` and registers ``name:version`` (made current).

        `gpus` (not in Clipper): the GPUs each replica gets, a count or a list of device ids; 0 hides every GPU
        from it; None (default) asks for nothing. The manager passes it on its own way: Docker device requests,
        a Swarm generic resource, ``nvidia.com/gpu`` on Kubernetes, ``CUDA_VISIBLE_DEVICES`` for local processes.
        One application may link models with and without GPUs."""
        self._require_connection()
        version = str(version)
        validate_versioned_model_name(name, version)
        if gpus is not None:
            self.cm.set_model_resources(name, version, gpus=gpus)
        try:
            replicas_before: int | None = self.cm.get_num_replicas(name, version)
        except Exception:  # a manager that cannot count: leave its replicas alone on failure
            replicas_before = None
        self.cm.deploy_model(name=name, version=version, input_type=input_type, image=image,
                             num_replicas=num_replicas)
        try:
            self.register_model(name, version, input_type, image=image, labels=labels, batch_size=batch_size)
        except ClipperException:
            if replicas_before == 0:
                self.logger.warning(f"Stopping the replicas of {name}:{version} that could not be registered")
                self.cm.stop_models({name: [version]})
            raise
        self.logger.info(f"Done deploying model {name}:{version}.")

    def register_model(self, name: str, version: Any, input_type: str, image: str | None = None,
                       labels: list[str] | None = None, batch_size: int = -1) -> None:
        """Registers a model version without starting replicas (``POST /admin/add_model``)."""
        self._require_connection()
        version = str(version)
        self._post("add_model", {
            "model_name": name,
            "model_version": version,
            "labels": labels if labels is not None else DEFAULT_LABEL,
            "input_type": input_type,
            "container_name": image if image is not None else CONTAINERLESS_MODEL_IMAGE,
            "model_data_path": "DEPRECATED",
            "batch_size": batch_size,
        })
        self.logger.info(f"Successfully registered model {name}:{version}")

    def get_current_model_version(self, name: str) -> str:
        """The current version of the model; ClipperException when none is registered."""
        self._require_connection()
        for m in self.get_all_models(verbose=True):
            if m["model_name"] == name and m["is_current_version"]:
                return m["model_version"]
        raise ClipperException(f"No versions of model {name} registered with Clipper")

    def get_num_replicas(self, name: str, version: Any = None) -> int:
        """Replicas the container manager runs for the version (default: the current one)."""
        self._require_connection()
        version = self.get_current_model_version(name) if version is None else str(version)
        return self.cm.get_num_replicas(name, version)

    def set_num_replicas(self, name: str, num_replicas: int, version: Any = None) -> None:
        """Starts or stops replicas of the version (default: the current one)."""
        self._require_connection()
        version = self.get_current_model_version(name) if version is None else str(version)
        model_data = self.get_model_info(name, version)
        if model_data is None:
            msg = f"Cannot add container for non-registered model {name}:{version}"
            self.logger.error(msg)
            raise ClipperException(msg)
        image = model_data["container_name"]
        if image == CONTAINERLESS_MODEL_IMAGE:
            msg = f"Cannot resize the replica set for containerless model {name}:{version}"
            self.logger.error(msg)
            raise ClipperException(msg)
        self.cm.set_num_replicas(name, version, model_data["input_type"], image, num_replicas)

    def get_all_models(self, verbose: bool = False) -> list[Any]:
        """``"name:version"`` strings, or (verbose) model info dicts."""
        self._require_connection()
        return self._get_json("get_all_models", {"verbose": verbose})

    def get_model_info(self, name: str, version: Any) -> dict[str, Any] | None:
        """The model version's info dict, or None."""
        self._require_connection()
        version = str(version)
        model_info = self._get_json("get_model", {"model_name": name, "model_version": version})
        if len(model_info) == 0:
            self.logger.warning(f"Model {name}:{version} is not registered with Clipper.")
            return None
        return model_info

    def get_all_model_replicas(self, verbose: bool = False) -> list[Any]:
        """``"name:version:replica_id"`` strings, or (verbose) replica info dicts."""
        self._require_connection()
        return self._get_json("get_all_containers", {"verbose": verbose})

    def get_model_replica_info(self, name: str, version: Any, replica_id: int) -> dict[str, Any] | None:
        """One replica's info dict, or None."""
        self._require_connection()
        version = str(version)
        info = self._get_json("get_container", {"model_name": name, "model_version": version,
                                                "replica_id": replica_id})
        if len(info) == 0:
            self.logger.warning(f"No model replica with ID {replica_id} found for model {name}:{version}")
            return None
        return info

    def set_model_version(self, name: str, version: Any, num_replicas: int | None = None) -> None:
        """Makes `version` current (roll back or forward); optionally resizes it."""
        self._require_connection()
        version = str(version)
        self._post("set_model_version", {"model_name": name, "model_version": version})
        if num_replicas is not None:
            self.set_num_replicas(name, num_replicas, version)

    # ------------------------------------------------------------------ observability

    def get_clipper_logs(self, logging_dir: str = "clipper_logs/") -> list[str]:
        """Copies the cluster's logs into `logging_dir`; returns the files written."""
        self._require_connection()
        return self.cm.get_logs(logging_dir)

    def inspect_instance(self) -> Any:
        """The query frontend's metrics (``GET /metrics``), parsed."""
        self._require_connection()
        url = f"http://{self.cm.get_query_addr()}/metrics"
        try:
            r = requests.get(url, timeout=self.request_timeout)
        except requests.RequestException as e:
            raise ClipperException(f"Cannot reach the Clipper query frontend at {url}: {e}") from e
        self.logger.debug(r.text)
        if r.status_code == requests.codes.ok:
            return r.json()
        msg = f"Received error status code: {r.status_code} and message: {r.text}"
        self.logger.error(msg)
        raise ClipperException(msg)

    def get_query_addr(self) -> str:
        self._require_connection()
        return self.cm.get_query_addr()

    def get_metric_addr(self) -> str:
        self._require_connection()
        return self.cm.get_metric_addr()

    @property
    def predict_token(self) -> str | None:
        """The bearer token ``POST /<app>/predict`` and ``/update`` require (``Authorization: Bearer <token>``),
        None when they require none (the default on 127.0.0.1)."""
        return self.cm.predict_token

    # ------------------------------------------------------------------ stopping models

    def _unregister_versioned_models(self, model_versions_dict: Mapping[str, Sequence[str]]) -> None:
        self._require_connection()
        for model_name, versions in model_versions_dict.items():
            for model_version in versions:
                self._post("delete_versioned_model", {"model_name": model_name, "model_version": model_version})
                self.logger.info(f"Model {model_name}:{model_version} was successfully deleted")

    def _versions(self, model_names: Sequence[str] | None, only_inactive: bool = False) -> dict[str, list[str]]:
        model_dict: dict[str, list[str]] = {}
        for m in self.get_all_models(verbose=True):
            if model_names is not None and m["model_name"] not in model_names:
                continue
            if only_inactive and m["is_current_version"]:
                continue
            model_dict.setdefault(m["model_name"], []).append(m["model_version"])
        return model_dict

    def stop_models(self, model_names: Sequence[str]) -> None:
        """Stops the replicas of every version of the models and unregisters the versions."""
        self._require_connection()
        model_dict = self._versions(model_names)
        self.cm.stop_models(model_dict)
        self._unregister_versioned_models(model_dict)
        self.logger.info(f"Stopped all containers for these models and versions: {model_dict}")

    def stop_versioned_models(self, model_versions_dict: Mapping[str, Sequence[str]]) -> None:
        """Stops the replicas of the given versions (`{name: [version, ...]}`) and unregisters them."""
        self._require_connection()
        self.cm.stop_models(model_versions_dict)
        self._unregister_versioned_models(model_versions_dict)
        self.logger.info(f"Stopped all containers for these models and versions: {dict(model_versions_dict)}")

    def stop_inactive_model_versions(self, model_names: Sequence[str]) -> None:
        """Like `stop_models`, but only for the versions that are not current."""
        self._require_connection()
        model_dict = self._versions(model_names, only_inactive=True)
        self.cm.stop_models(model_dict)
        self._unregister_versioned_models(model_dict)
        self.logger.info(f"Stopped all containers for these models and versions: {model_dict}")

    def stop_all_model_containers(self) -> None:
        """Stops every model replica and unregisters every model version."""
        self._require_connection()
        model_dict = self._versions(None)
        self.cm.stop_all_model_containers()
        self._unregister_versioned_models(model_dict)
        self.logger.info(f"Stopped all Clipper model containers: {model_dict}")

    # ------------------------------------------------------------------ local testing

    def test_predict_function(self, query: dict[str, Any], func: Callable[[Any], Any], input_type: str) -> Any:
        """Runs `func` locally on a request body, as a container would after unpickling it.

        `query` is ``{"input": [...]}`` or ``{"input_batch": [[...], ...]}``. Returns the function's
        output, or an error string (``"Invalid input type"``, ``"Invalid input type or JSON key"``)
        as `clipper_admin` does. Input types are Clipper's names; ``"strings"`` is accepted as
        well as `clipper_admin`'s ``"string"``.
        """
        if not self.connected:
            self.connect()
        query_data = list(query.values())
        query_key = list(query.keys())
        if query_key and query_key[0] == "input_batch":
            query_data = query_data[0]
        try:
            flattened_data = [item for sublist in query_data for item in sublist]
        except TypeError:
            return "Invalid input type or JSON key"

        numpy_data: list[Any] | None = None
        if input_type == "bytes":
            numpy_data = [np.int8(x) for x in query_data]
            if any(type(x) is not bytes for x in flattened_data):
                return "Invalid input type"
        if input_type == "integers":
            numpy_data = [np.int32(x) for x in query_data]
            if any(type(x) is not int for x in flattened_data):
                return "Invalid input type"
        if input_type in ("floats", "doubles"):
            dtype = np.float32 if input_type == "floats" else np.float64
            numpy_data = [dtype(x) for x in query_data]
            if any(type(x) is not float for x in flattened_data):
                return "Invalid input type"
        if input_type in ("string", "strings"):
            numpy_data = [np.str_(x) for x in query_data]
            if any(type(x) is not str for x in flattened_data):
                return "Invalid input type"

        reloaded_func = pickle.loads(cloudpickle.dumps(func, protocol=2))
        if not reloaded_func:
            self.logger.error("Function does not properly serialize and reload")
            return "Function does not properly serialize and reload"
        return reloaded_func(numpy_data)
