"""Deploy an XGBoost model (a `Booster` or a scikit-learn estimator of XGBoost), with an optional Python function.

Clipper had no XGBoost deployer; this one has the shape of Clipper's framework deployers:
``deploy_xgboost_model(clipper_conn, name, version, input_type, func, xgboost_model, ...)`` and
``create_endpoint``. `func(model, inputs)` gets the loaded model and a batch of inputs (a 2-D numpy array for
equal-length numeric inputs) and returns one output per input (sent as ``str()``; a JSON string is embedded as
JSON in the answer). `func` None: `default_predict` (the model's prediction for each input, as JSON)::

    import xgboost
    from clipper.deployers.xgboost import create_endpoint

    model = xgboost.XGBClassifier(n_estimators=50).fit(X, y)
    create_endpoint(clipper_conn, "churn", "doubles", None, model)        # answers the predicted class
    create_endpoint(clipper_conn, "churn-p", "doubles",
                    lambda m, xs: [json.dumps(p) for p in m.predict_proba(xs).tolist()], model)

How the model is saved: XGBoost's own format (``save_model`` to ``model.ubj``, Universal Binary JSON, which any
later XGBoost reads). `xgboost_model` may be:

* an ``xgboost.Booster`` (``xgboost.train``): the replica gets a Booster; `default_predict` is
  ``booster.inplace_predict(inputs)`` (the objective's output: probabilities, margins or values);
* a scikit-learn estimator of XGBoost (``XGBClassifier``, ``XGBRegressor``, ``XGBRanker``, ...): saved with its own
  ``save_model`` (which keeps what the estimator needs, e.g. the classes) and loaded into a new estimator of the same
  class, so ``predict``/``predict_proba`` work in `func`; `default_predict` is ``model.predict(inputs)``;
* the path of a model file XGBoost wrote (``.ubj``, ``.json``, or the old binary format), loaded as a Booster.

Each replica loads the model once (`load_model`, named in the model's manifest) and predicts on **one thread**
(``nthread``/``n_jobs`` 1): for the small batches of serving, XGBoost's OpenMP threads cost more than they bring
(three times the throughput on one thread in docs/frameworks.md); Clipper scales with replicas instead.
``CLIPPER_XGBOOST_NTHREAD`` sets another number (0: XGBoost's default, all cores).

Images: the default base image is
``clipper/xgboost-container`` (PyPI's ``xgboost-cpu`` wheel, a few MB; built locally on first use by
`clipper.images`). With `LocalContainerManager` the replicas use your interpreter, which must have XGBoost
(``pip install 'clipper-serving[xgboost]'``, or ``xgboost`` itself).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework
from ._batch import as_matrix, json_rows, replica_threads

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["IMAGE", "LOADER", "THREADS_ENV", "as_matrix", "create_endpoint", "default_predict", "deploy_xgboost_model",
           "load_model", "save_xgboost_model"]

logger = logging.getLogger("clipper.deployers.xgboost")

#: The image recipe (`clipper.images`) the models are built from by default.
IMAGE = "xgboost-container"
#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.xgboost:load_model"
#: File of the model in a model directory (XGBoost's Universal Binary JSON).
MODEL_RELATIVE_PATH = "model.ubj"
#: Environment variable with the threads of each replica's model (default 1; 0: XGBoost's default, all cores).
THREADS_ENV = "CLIPPER_XGBOOST_NTHREAD"


# ----------------------------------------------------------------------------- admin side


def save_xgboost_model(model_dir: Path, xgboost_model: Any) -> dict[str, Any]:
    """Writes `xgboost_model` (a Booster, an XGBoost scikit-learn estimator, or the path of a saved model) into
    `model_dir` and returns the manifest fields that say how to load it."""
    if isinstance(xgboost_model, (str, os.PathLike)):
        src = Path(xgboost_model)
        if not src.is_file():
            raise ClipperException(f"XGBoost model file {src} not found")
        dest = "model" + (src.suffix if src.suffix in (".ubj", ".json") else ".bin")
        shutil.copyfile(src, model_dir / dest)
        return {"format": "booster", "model": dest}
    import xgboost

    if isinstance(xgboost_model, xgboost.Booster):
        xgboost_model.save_model(str(model_dir / MODEL_RELATIVE_PATH))
        return {"format": "booster", "model": MODEL_RELATIVE_PATH}
    if isinstance(xgboost_model, xgboost.XGBModel):
        cls = type(xgboost_model)
        xgboost_model.save_model(str(model_dir / MODEL_RELATIVE_PATH))
        return {"format": "sklearn", "model": MODEL_RELATIVE_PATH, "estimator": f"{cls.__module__}:{cls.__qualname__}"}
    raise ClipperException("xgboost_model must be an xgboost.Booster, an XGBoost scikit-learn estimator "
                           f"(XGBClassifier, XGBRegressor, ...) or the path of a saved model, got "
                           f"{type(xgboost_model).__name__}")


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func: Callable[[Any, Any], Any] | None, xgboost_model: Any, default_output: str = "None",
                    version: Any = 1, slo_micros: int = 3000000, labels: list[str] | None = None,
                    registry: str | None = None, base_image: str = "default", num_replicas: int = 1,
                    batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys `xgboost_model` with `func` as model `name` and links them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_xgboost_model(clipper_conn, name, version, input_type, func, xgboost_model, base_image, labels, registry,
                         num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_xgboost_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                         func: Callable[[Any, Any], Any] | None, xgboost_model: Any, base_image: str = "default",
                         labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                         batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                         gpus: int | list[int | str] | None = None) -> None:
    """Deploys `xgboost_model` with `func` (``func(model, inputs) -> outputs``; None: `default_predict`) as model
    ``name:version``.

    `base_image` ``"default"``: ``clipper/xgboost-container`` (built locally on first use). Returns once the
    replicas have registered and the version is current. Errors saving the model raise ClipperException.

    `gpus`: the GPUs each replica gets (as `ClipperConnection.deploy_model`'s). The image is a CPU build
    (``xgboost-cpu``): a model whose ``device`` is ``cuda`` needs the ``xgboost`` wheel where it runs (a `base_image`
    of yours, or `LocalContainerManager`)."""
    model_dir = framework.save_framework_model(func, "xgboost", LOADER,
                                               lambda d: save_xgboost_model(d, xgboost_model))
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image,
                                     labels, registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def default_predict(model: Any, inputs: Any) -> list[str]:
    """The batch function when `func` is None, each prediction as JSON: ``model.predict(inputs)`` for a
    scikit-learn estimator (e.g. the class), ``model.inplace_predict(inputs)`` for a Booster (the objective's
    output; a list for multi-class probabilities)."""
    import xgboost

    x = as_matrix(inputs)
    if isinstance(model, xgboost.Booster):
        return json_rows(model.inplace_predict(x))
    return json_rows(model.predict(x))


def load_model(model_dir: Path, func: Callable[[Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): the Booster, or a new estimator of the saved class with the model
    loaded into it, and the batch function ``func(model, inputs)`` (`default_predict` when `func` is None)."""
    import xgboost

    from ..model_runtime.loader import load_function

    path = str(model_dir / manifest["model"])
    if manifest.get("format") == "sklearn":
        model = load_function(manifest["estimator"])()
        model.load_model(path)
    elif manifest.get("format") == "booster":
        model = xgboost.Booster(model_file=path)
    else:
        raise ValueError(f"unknown XGBoost model format {manifest.get('format')!r} in the manifest")
    threads = replica_threads(THREADS_ENV)
    if threads:
        booster = model if isinstance(model, xgboost.Booster) else model.get_booster()
        booster.set_param({"nthread": threads})
        if not isinstance(model, xgboost.Booster):
            model.set_params(n_jobs=threads)
    logger.info(f"XGBoost {xgboost.__version__}: {type(model).__name__} loaded from {path} "
                f"({threads or 'all'} threads)")
    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        return call(model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    return predict
