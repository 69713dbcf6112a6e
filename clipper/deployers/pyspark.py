"""Deploy a PySpark model with a Python function, like `clipper_admin.deployers.pyspark`.

Same functions and arguments as Clipper: ``deploy_pyspark_model(clipper_conn, name, version, input_type, func,
pyspark_model, sc, ...)`` and ``create_endpoint``. As in Clipper, `func` takes three arguments, ``func(spark, model,
inputs)``: the replica's ``SparkSession``, the loaded model and a batch of inputs (a 2-D numpy array for
equal-length numeric inputs, a list of ``str`` for strings); it returns one output per input (sent as ``str()``; a
JSON string is embedded as JSON in the answer). `func` None: `default_predict`::

    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors
    from clipper.deployers.pyspark import deploy_pyspark_model

    model = LogisticRegression(maxIter=10).fit(training_df)

    def predict(spark, model, inputs):
        return [str(model.predict(Vectors.dense(x))) for x in inputs]

    deploy_pyspark_model(clipper_conn, "spark-lr", 1, "doubles", predict, model, spark.sparkContext)

How the model is saved, the framework's own way (as Clipper did): a ``pyspark.ml`` model or ``PipelineModel``
with ``model.write().save(path)``, a ``pyspark.mllib`` model with ``model.save(sc, path)``, to
``pyspark_model_data/`` of the model directory, and its class in the manifest (Clipper's ``metadata.json``
``model_class`` too). `sc` is needed for ``pyspark.mllib`` models only (None: the active SparkContext). The Spark
session that saves must write to this machine's file system (local mode, as in Clipper's examples).

Each replica starts Spark in local mode (``local[*]``; ``CLIPPER_SPARK_MASTER`` overrides it), with the web UI off
and the driver on 127.0.0.1, then loads the model once (`load_model`, named in the model's manifest): the JVM
starts in the replica, so a replica takes some seconds (and a few hundred MB) more to start than a Python one.

Images: the default base image is ``clipper/pyspark-container`` (PyPI's ``pyspark``, which carries Spark's jars,
and Debian's Java runtime; about 0.9 GB, built locally on first use by `clipper.images`). With
`LocalContainerManager` the replicas use your interpreter, which must have pyspark
(``pip install 'clipper-serving[pyspark]'``), and a Java runtime (17 or later for Spark 4) on ``PATH`` or in
``JAVA_HOME`` (Debian: ``default-jre-headless``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework
from ._batch import plain_rows

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["IMAGE", "LOADER", "MASTER_ENV", "create_endpoint", "default_predict", "deploy_pyspark_model",
           "load_model", "save_pyspark_model", "spark_session"]

logger = logging.getLogger("clipper.deployers.pyspark")

#: The image recipe (`clipper.images`) the models are built from by default.
IMAGE = "pyspark-container"
#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.pyspark:load_model"
#: Folder of the saved model in a model directory, and Clipper's metadata file (Clipper's names).
MODEL_RELATIVE_PATH = "pyspark_model_data"
METADATA_FNAME = "metadata.json"
#: Environment variable with the replicas' Spark master (default ``local[*]``).
MASTER_ENV = "CLIPPER_SPARK_MASTER"


# ----------------------------------------------------------------------------- admin side


def _model_class(pyspark_model: Any) -> str:
    cls = type(pyspark_model)
    if not cls.__module__.startswith("pyspark."):
        raise ClipperException(f"pyspark_model argument was not a pyspark object: {cls.__module__}.{cls.__qualname__}")
    return f"{cls.__module__}.{cls.__qualname__}"


def save_pyspark_model(model_dir: Path, pyspark_model: Any, sc: Any = None) -> dict[str, Any]:
    """Saves `pyspark_model` (``pyspark.ml``: ``write().save``; ``pyspark.mllib``: ``save(sc, path)``) to
    ``model_dir/pyspark_model_data``, writes Clipper's ``metadata.json`` and returns the manifest fields."""
    model_class = _model_class(pyspark_model)
    path = str(model_dir / MODEL_RELATIVE_PATH)
    from pyspark.ml.util import MLWritable

    if isinstance(pyspark_model, MLWritable):
        pyspark_model.write().overwrite().save(path)
        kind = "ml"
    elif callable(getattr(pyspark_model, "save", None)):
        if sc is None:
            from pyspark import SparkContext

            sc = SparkContext._active_spark_context
        if sc is None:
            raise ClipperException(f"saving a {model_class} needs the SparkContext: pass sc")
        pyspark_model.save(sc, path)
        kind = "mllib"
    else:
        raise ClipperException(f"{model_class} cannot be saved (it has neither write() nor save(sc, path))")
    (model_dir / METADATA_FNAME).write_text(json.dumps({"model_class": model_class}))
    return {"format": kind, "model": MODEL_RELATIVE_PATH, "model_class": model_class}


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func: Callable[[Any, Any, Any], Any] | None, pyspark_model: Any, sc: Any = None,
                    default_output: str = "None", version: Any = 1, slo_micros: int = 3000000,
                    labels: list[str] | None = None, registry: str | None = None, base_image: str = "default",
                    num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys `pyspark_model` with `func` as model `name` and links them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_pyspark_model(clipper_conn, name, version, input_type, func, pyspark_model, sc, base_image, labels,
                         registry, num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_pyspark_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                         func: Callable[[Any, Any, Any], Any] | None, pyspark_model: Any, sc: Any = None,
                         base_image: str = "default", labels: list[str] | None = None, registry: str | None = None,
                         num_replicas: int = 1, batch_size: int = -1,
                         pkgs_to_install: list[str] | None = None, *,
                         gpus: int | list[int | str] | None = None) -> None:
    """Deploys `pyspark_model` with `func` (``func(spark, model, inputs) -> outputs``; None: `default_predict`) as
    model ``name:version``; `sc` (the SparkContext) is needed to save ``pyspark.mllib`` models.

    `base_image` ``"default"``: ``clipper/pyspark-container`` (built locally on first use). Returns once the
    replicas have registered and the version is current. Errors saving the model raise ClipperException.

    `gpus`: the GPUs each replica gets (as `ClipperConnection.deploy_model`'s). Spark in local mode uses the CPUs."""
    _model_class(pyspark_model)
    model_dir = framework.save_framework_model(func, "pyspark", LOADER,
                                               lambda d: save_pyspark_model(d, pyspark_model, sc))
    logger.info("Spark model saved")
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image,
                                     labels, registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def spark_session(app_name: str = "clipper-pyspark") -> Any:
    """The replica's SparkSession: master ``$CLIPPER_SPARK_MASTER`` (default ``local[*]``), no web UI, the driver on
    127.0.0.1, Spark's own log at WARN."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (SparkSession.builder.master(os.environ.get(MASTER_ENV) or "local[*]").appName(app_name)
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def default_predict(spark: Any, model: Any, inputs: Any) -> list[str]:
    """The batch function when `func` is None, each prediction as JSON: ``model.predict(vector)`` per input for a
    model that predicts single vectors (``pyspark.ml`` classifiers and regressors, ``pyspark.mllib`` models); else
    (a ``PipelineModel``...) ``model.transform`` of a DataFrame with the inputs as its ``features`` column
    (vectors) and the ``prediction`` column of the result."""
    import numpy as np
    from pyspark.ml.linalg import Vectors

    rows = [np.asarray(x, dtype=np.float64) for x in inputs]
    if callable(getattr(model, "predict", None)):
        if type(model).__module__.startswith("pyspark.mllib"):
            return [json.dumps(r) for r in plain_rows([model.predict(x) for x in rows])]
        return [json.dumps(r) for r in plain_rows([model.predict(Vectors.dense(x)) for x in rows])]
    frame = spark.createDataFrame([(i, Vectors.dense(x)) for i, x in enumerate(rows)], ["clipper_row", "features"])
    out = {r["clipper_row"]: r["prediction"] for r in model.transform(frame).select("clipper_row", "prediction")
           .collect()}
    return [json.dumps(r) for r in plain_rows([out[i] for i in range(len(rows))])]


def load_model(model_dir: Path, func: Callable[[Any, Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): Spark in local mode (`spark_session`), the model loaded with its
    class's ``load`` (``load(path)`` for ``pyspark.ml``, ``load(sc, path)`` for ``pyspark.mllib``), and the batch
    function ``func(spark, model, inputs)`` (`default_predict` when `func` is None)."""
    model_class = manifest["model_class"]
    module, _, class_name = model_class.rpartition(".")
    cls = getattr(importlib.import_module(module), class_name)
    spark = spark_session()
    path = str(model_dir / manifest["model"])
    if manifest.get("format") == "ml":
        model = cls.load(path)
    elif manifest.get("format") == "mllib":
        model = cls.load(spark.sparkContext, path)
    else:
        raise ValueError(f"unknown PySpark model format {manifest.get('format')!r} in the manifest")
    logger.info(f"Spark {spark.version} ({spark.sparkContext.master}): {model_class} loaded from {path}")
    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        return call(spark, model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    predict.spark = spark  # type: ignore[attr-defined]
    return predict
