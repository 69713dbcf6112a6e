"""Small framework models for the throughput harness: ``python -m benchmarks.framework_models FRAMEWORK DIR``.

Writes a framework model directory (`clipper.deployers.framework`: func.pkl, the artefact, clipper_model.json) for
the harness's inputs (4 doubles) and prints the command line to measure it through the pipeline::

    python -m benchmarks.framework_models pytorch /tmp/bench-pytorch
    python -m benchmarks throughput --duration 10 \\
        --container-command "python -m clipper.model_runtime --model-path /tmp/bench-pytorch"

The networks (PyTorch, ONNX, TensorFlow, Keras) are the same small MLP, 4 -> 16 (ReLU) -> 3; XGBoost and LightGBM
get 20 trees of depth 4, PySpark a logistic regression, each on a fixed random data set; all with the deployer's
default function (each output as JSON). Add a framework by adding a function to `MAKERS`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path


def _mlp():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


def pytorch_model() -> str:
    """The MLP as a PyTorch module (state dict), served by `clipper.deployers.pytorch`."""
    from clipper.deployers import framework, pytorch

    net = _mlp()
    return framework.save_framework_model(None, "pytorch", pytorch.LOADER, lambda d: pytorch.save_pytorch_model(d, net))


def onnx_model() -> str:
    """The MLP exported to ONNX (torch.onnx.export), served by ONNX Runtime (`clipper.deployers.onnx`)."""
    import torch

    from clipper.deployers import framework, onnx

    net = _mlp()

    def save(model_dir: Path) -> dict[str, str]:
        onnx.export_pytorch_model(net, torch.zeros(1, 4), model_dir / onnx.MODEL_RELATIVE_PATH)
        return {"model": onnx.MODEL_RELATIVE_PATH}

    return framework.save_framework_model(None, "onnx", onnx.LOADER, save)


#: Framework -> a function writing its model directory (a new temporary one) and returning its path.
MAKERS: dict[str, Callable[[], str]] = {"pytorch": pytorch_model, "onnx": onnx_model}


# --- tabular and other frameworks (XGBoost, LightGBM, TensorFlow, Keras, PySpark): the same 4 inputs; the tree
# models are 20 trees of depth 4 on a fixed random data set, the networks the same 4 -> 16 -> 3 MLP.


def _tabular_data():  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4))
    return x, (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)


def xgboost_model() -> str:
    """A binary:logistic Booster (20 trees, depth 4), served by `clipper.deployers.xgboost`."""
    import xgboost

    from clipper.deployers import framework
    from clipper.deployers import xgboost as xgb_deployer

    x, y = _tabular_data()
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 4}, xgboost.DMatrix(x, label=y), 20)
    return framework.save_framework_model(None, "xgboost", xgb_deployer.LOADER,
                                          lambda d: xgb_deployer.save_xgboost_model(d, booster))


def lightgbm_model() -> str:
    """A binary Booster (20 trees, depth 4), served by `clipper.deployers.lightgbm`."""
    import lightgbm

    from clipper.deployers import framework
    from clipper.deployers import lightgbm as lgb_deployer

    x, y = _tabular_data()
    booster = lightgbm.train({"objective": "binary", "max_depth": 4, "num_leaves": 15, "verbose": -1},
                             lightgbm.Dataset(x, label=y), 20)
    return framework.save_framework_model(None, "lightgbm", lgb_deployer.LOADER,
                                          lambda d: lgb_deployer.save_lightgbm_model(d, booster))


def _keras_mlp():  # type: ignore[no-untyped-def]
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def tensorflow_model() -> str:
    """The MLP (Keras 3) exported as a SavedModel, served by `clipper.deployers.tensorflow` (serving_default)."""
    from clipper.deployers import framework
    from clipper.deployers import tensorflow as tf_deployer

    net = _keras_mlp()
    return framework.save_framework_model(None, "tensorflow", tf_deployer.LOADER,
                                          lambda d: tf_deployer.save_tensorflow_model(d, net))


def keras_model() -> str:
    """The MLP as a .keras file, served by `clipper.deployers.keras` (predict_on_batch)."""
    from clipper.deployers import framework
    from clipper.deployers import keras as keras_deployer

    net = _keras_mlp()
    return framework.save_framework_model(None, "keras", keras_deployer.LOADER,
                                          lambda d: keras_deployer.save_keras_model(d, net))


def pyspark_model() -> str:
    """A pyspark.ml LogisticRegressionModel, served by `clipper.deployers.pyspark` (one predict call per input)."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    from clipper.deployers import framework
    from clipper.deployers import pyspark as spark_deployer

    x, y = _tabular_data()
    spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    try:
        rows = [(float(b), Vectors.dense(a)) for a, b in zip(x.tolist(), y.tolist(), strict=True)]
        frame = spark.createDataFrame(rows, ["label", "features"])
        model = LogisticRegression(maxIter=20).fit(frame)
        return framework.save_framework_model(None, "pyspark", spark_deployer.LOADER,
                                              lambda d: spark_deployer.save_pyspark_model(d, model))
    finally:
        spark.stop()


MAKERS.update({"xgboost": xgboost_model, "lightgbm": lightgbm_model, "tensorflow": tensorflow_model,
               "keras": keras_model, "pyspark": pyspark_model})
# --- end of tabular and other frameworks


def main(argv: list[str] | None = None) -> int:
    """Writes the model directory of a framework to DIR and prints the harness's command line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.framework_models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("framework", choices=sorted(MAKERS))
    ap.add_argument("dir", type=Path, help="where to write the model directory (replaced)")
    args = ap.parse_args(argv)
    made = MAKERS[args.framework]()
    dest = args.dir.resolve()
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(made, dest)
    print(f'python -m benchmarks throughput --duration 10 --container-command '
          f'"{sys.executable} -m clipper.model_runtime --model-path {dest}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
