"""Deploy a LightGBM model (a `Booster` or a scikit-learn estimator of LightGBM), with an optional Python function.

Clipper had no LightGBM deployer; this one has the shape of Clipper's framework deployers:
``deploy_lightgbm_model(clipper_conn, name, version, input_type, func, lightgbm_model, ...)`` and
``create_endpoint``. `func(model, inputs)` gets the loaded model and a batch of inputs (a 2-D numpy array for
equal-length numeric inputs) and returns one output per input (sent as ``str()``; a JSON string is embedded as
JSON in the answer). `func` None: `default_predict` (the model's prediction for each input, as JSON)::

    import lightgbm
    from clipper.deployers.lightgbm import create_endpoint

    booster = lightgbm.train({"objective": "binary"}, lightgbm.Dataset(X, y), num_boost_round=50)
    create_endpoint(clipper_conn, "fraud", "doubles", None, booster)   # answers the probability

How the model is saved, the framework's own way:

* an ``lightgbm.Booster`` (``lightgbm.train``): LightGBM's text model format (``save_model`` to ``model.txt``,
  which other LightGBM versions and languages read), loaded with ``lightgbm.Booster(model_file=...)``;
  `default_predict` is ``booster.predict(inputs)`` (the objective's output);
* a scikit-learn estimator of LightGBM (``LGBMClassifier``, ``LGBMRegressor``, ``LGBMRanker``): LightGBM saves
  those as scikit-learn estimators are saved, pickled (cloudpickle, to ``model.pkl``; its booster is pickled as
  the text model), so that ``predict``/``predict_proba`` and the classes work in `func`; `default_predict` is
  ``model.predict(inputs)``. The pickle needs a LightGBM (and scikit-learn) close to yours where the replicas run;
  deploy ``model.booster_`` for the version-independent text format;
* the path of a text model file LightGBM wrote (``booster.save_model(path)``), loaded as a Booster.

Each replica loads the model once (`load_model`, named in the model's manifest) and predicts on **one thread**
(a Booster's ``predict`` gets ``num_threads=1`` by default, an estimator ``n_jobs=1``): for the small batches of
serving, OpenMP's threads cost more than they bring (docs/frameworks.md); Clipper scales with replicas instead.
``CLIPPER_LIGHTGBM_NUM_THREADS`` sets another number (0: LightGBM's default, all cores).

Images: the default base image is
``clipper/lightgbm-container`` (PyPI's ``lightgbm`` wheel and Debian's ``libgomp1``, the OpenMP runtime it links;
built locally on first use by `clipper.images`). With `LocalContainerManager` the replicas use your interpreter,
which must have LightGBM (``pip install 'clipper-serving[lightgbm]'``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework
from ._batch import as_matrix, json_rows, replica_threads
from .python import serialize_object

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["IMAGE", "LOADER", "THREADS_ENV", "as_matrix", "create_endpoint", "default_predict", "deploy_lightgbm_model",
           "load_model", "save_lightgbm_model"]

logger = logging.getLogger("clipper.deployers.lightgbm")

#: The image recipe (`clipper.images`) the models are built from by default.
IMAGE = "lightgbm-container"
#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.lightgbm:load_model"
#: Files of the model in a model directory: a Booster's text model, or a pickled scikit-learn estimator.
MODEL_RELATIVE_PATH = "model.txt"
ESTIMATOR_RELATIVE_PATH = "model.pkl"
#: Environment variable with the threads of each replica's model (default 1; 0: LightGBM's default, all cores).
THREADS_ENV = "CLIPPER_LIGHTGBM_NUM_THREADS"


# ----------------------------------------------------------------------------- admin side


def save_lightgbm_model(model_dir: Path, lightgbm_model: Any) -> dict[str, Any]:
    """Writes `lightgbm_model` (a Booster, a LightGBM scikit-learn estimator, or the path of a text model) into
    `model_dir` and returns the manifest fields that say how to load it."""
    if isinstance(lightgbm_model, (str, os.PathLike)):
        src = Path(lightgbm_model)
        if not src.is_file():
            raise ClipperException(f"LightGBM model file {src} not found")
        shutil.copyfile(src, model_dir / MODEL_RELATIVE_PATH)
        return {"format": "booster", "model": MODEL_RELATIVE_PATH}
    import lightgbm

    if isinstance(lightgbm_model, lightgbm.Booster):
        lightgbm_model.save_model(str(model_dir / MODEL_RELATIVE_PATH))
        return {"format": "booster", "model": MODEL_RELATIVE_PATH}
    if isinstance(lightgbm_model, lightgbm.LGBMModel):
        if not getattr(lightgbm_model, "fitted_", False):
            raise ClipperException(f"the {type(lightgbm_model).__name__} is not fitted")
        (model_dir / ESTIMATOR_RELATIVE_PATH).write_bytes(serialize_object(lightgbm_model))
        return {"format": "sklearn", "model": ESTIMATOR_RELATIVE_PATH, "lightgbm_version": lightgbm.__version__}
    raise ClipperException("lightgbm_model must be a lightgbm.Booster, a LightGBM scikit-learn estimator "
                           f"(LGBMClassifier, LGBMRegressor, ...) or the path of a text model, got "
                           f"{type(lightgbm_model).__name__}")


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func: Callable[[Any, Any], Any] | None, lightgbm_model: Any, default_output: str = "None",
                    version: Any = 1, slo_micros: int = 3000000, labels: list[str] | None = None,
                    registry: str | None = None, base_image: str = "default", num_replicas: int = 1,
                    batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys `lightgbm_model` with `func` as model `name` and links
    them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_lightgbm_model(clipper_conn, name, version, input_type, func, lightgbm_model, base_image, labels,
                          registry, num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_lightgbm_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                          func: Callable[[Any, Any], Any] | None, lightgbm_model: Any, base_image: str = "default",
                          labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                          batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                          gpus: int | list[int | str] | None = None) -> None:
    """Deploys `lightgbm_model` with `func` (``func(model, inputs) -> outputs``; None: `default_predict`) as model
    ``name:version``.

    `base_image` ``"default"``: ``clipper/lightgbm-container`` (built locally on first use). Returns once the
    replicas have registered and the version is current. Errors saving the model raise ClipperException.

    `gpus`: the GPUs each replica gets (as `ClipperConnection.deploy_model`'s). PyPI's LightGBM is a CPU build."""
    model_dir = framework.save_framework_model(func, "lightgbm", LOADER,
                                               lambda d: save_lightgbm_model(d, lightgbm_model))
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image,
                                     labels, registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def default_predict(model: Any, inputs: Any) -> list[str]:
    """The batch function when `func` is None: ``model.predict(inputs)``, each prediction as JSON (a Booster: the
    objective's output, e.g. the probability, a list for multi-class; an estimator: e.g. the class)."""
    return json_rows(model.predict(as_matrix(inputs)))


def load_model(model_dir: Path, func: Callable[[Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): the Booster (or the unpickled estimator) and the batch function
    ``func(model, inputs)`` (`default_predict` when `func` is None)."""
    import cloudpickle
    import lightgbm

    path = model_dir / manifest["model"]
    if manifest.get("format") == "booster":
        model = lightgbm.Booster(model_file=str(path))
    elif manifest.get("format") == "sklearn":
        saved_with = manifest.get("lightgbm_version")
        if saved_with and saved_with != lightgbm.__version__:
            logger.warning(f"the estimator was pickled with LightGBM {saved_with}; this is {lightgbm.__version__}")
        with open(path, "rb") as f:
            model = cloudpickle.load(f)
    else:
        raise ValueError(f"unknown LightGBM model format {manifest.get('format')!r} in the manifest")
    threads = replica_threads(THREADS_ENV)
    if threads:
        if isinstance(model, lightgbm.Booster):
            # Booster.predict takes its threads per call (num_threads), else OpenMP's default: bind it here
            model.predict = functools.partial(model.predict, num_threads=threads)  # type: ignore[method-assign]
        else:
            model.set_params(n_jobs=threads)
    logger.info(f"LightGBM {lightgbm.__version__}: {type(model).__name__} loaded from {path} "
                f"({threads or 'all'} threads)")
    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        return call(model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    return predict
