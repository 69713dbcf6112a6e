"""TensorFlow 2 SavedModels (`clipper.deployers.tensorflow`) and Keras 3 models (`clipper.deployers.keras`),
deployed through a real cluster and answered over real HTTP.

Each model is built in the test (no download). Predictions through ``POST /<app>/predict``, alone and as one
batch, must equal the framework's own output for the same inputs (tests/framework_checks.py); a model that raises
answers the app's default with the reason. With `LocalContainerManager` the replicas use this interpreter's
TensorFlow: the module is skipped where TensorFlow is not installed (it is not in the ``test`` extra; see
docs/frameworks.md for the command that runs it). The test marked ``docker`` and ``heavy`` builds
``clipper/tensorflow-container`` (about 1.6 GB) and serves a SavedModel and a ``.keras`` model from it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from conftest import needs_docker
from framework_checks import check_default_with_reason, check_predictions, docker_cluster, local_cluster

from clipper import ClipperConnection, ClipperException
from clipper.deployers import keras as keras_deployer
from clipper.deployers import tensorflow as tf_deployer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

# The functions of this module go to the replicas by value (the replicas cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

RNG = np.random.default_rng(17)
#: Inputs of the apps with 4 features: one app's inputs, alone and as a batch.
INPUTS = [[float(v) for v in row] for row in RNG.normal(size=(6, 4))]


def keras_net(seed: int = 0) -> Any:
    """A small Keras 3 classifier (4 features, 3 classes), with random weights."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


class Affine(tf.Module):
    """A tf.Module with a serving signature: ``x @ w + b`` (4 -> 2), raising on a negative first feature."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.arange(8, dtype=np.float32).reshape(4, 2) / 10)
        self.b = tf.Variable([0.5, -0.5])

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x: Any) -> Any:
        tf.debugging.assert_non_negative(x[:, 0], message="negative first feature")
        return {"scores": tf.matmul(x, self.w) + self.b}


def affine_output(x: list[float]) -> list[float]:
    """What `Affine` says for one input, in numpy."""
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
    return (np.array([x], dtype=np.float32) @ w + np.array([0.5, -0.5], dtype=np.float32))[0].tolist()


def serve_rows(model: Any, inputs: Any) -> list[str]:
    """The deployed function for an exported Keras model: its ``serve`` endpoint, each row as JSON."""
    return [json.dumps(row) for row in model.serve(tf.constant(inputs, tf.float32)).numpy().tolist()]


def own_output(model: Any, x: list[float]) -> list[float]:
    """What a Keras model says for one input, here."""
    return model(np.array([x], dtype=np.float32)).numpy()[0].tolist()


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    with local_cluster("test-tensorflow", tmp_path_factory.mktemp("tensorflow-cluster")) as c:
        yield c


# ---------------------------------------------------------------------- TensorFlow: LocalContainerManager


def test_saved_model_directory_with_the_default_function(conn: ClipperConnection, tmp_path: Path) -> None:
    """A SavedModel written by tf.saved_model.save, served through its serving_default signature (doubles are
    cast to the signature's float32)."""
    tf.saved_model.save(Affine(), str(tmp_path / "affine"))
    tf_deployer.create_endpoint(conn, "tf-affine", "doubles", None, str(tmp_path / "affine"), default_output="-1",
                                slo_micros=10_000_000)
    check_predictions(conn, "tf-affine", INPUTS_NON_NEGATIVE, affine_output)
    check_default_with_reason(conn, "tf-affine", [-1.0, 0.0, 0.0, 0.0], -1, "negative first feature")


def test_keras_model_exported_as_a_saved_model(conn: ClipperConnection) -> None:
    """A Keras model given to the TensorFlow deployer is exported (model.export); `func` calls its serve endpoint."""
    net = keras_net(1)
    tf_deployer.create_endpoint(conn, "tf-keras-export", "doubles", serve_rows, net, default_output="-1",
                                slo_micros=10_000_000)
    check_predictions(conn, "tf-keras-export", INPUTS, lambda x: own_output(net, x))


def test_tensorflow_1_is_refused(conn: ClipperConnection, tmp_path: Path) -> None:
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess, \
            pytest.raises(ClipperException, match="TensorFlow 1 path .* is gone"):
        tf_deployer.deploy_tensorflow_model(conn, "tf-bad", 1, "doubles", None, sess)
    (tmp_path / "frozen.pb").write_bytes(b"")
    with pytest.raises(ClipperException, match="TensorFlow 1 path .* is gone"):
        tf_deployer.deploy_tensorflow_model(conn, "tf-bad", 1, "doubles", None, tmp_path / "frozen.pb")
    with pytest.raises(ClipperException, match="not found"):
        tf_deployer.deploy_tensorflow_model(conn, "tf-bad", 1, "doubles", None, tmp_path / "nothing")


# ---------------------------------------------------------------------- Keras: LocalContainerManager


def test_keras_model_object_with_the_default_function(conn: ClipperConnection) -> None:
    net = keras_net(2)
    keras_deployer.create_endpoint(conn, "keras-net", "doubles", None, net, default_output="-1",
                                   slo_micros=10_000_000)
    check_predictions(conn, "keras-net", INPUTS, lambda x: own_output(net, x))


def test_keras_file_with_a_function_that_raises(conn: ClipperConnection, tmp_path: Path) -> None:
    """A .keras file with Clipper's `func(model, inputs)`; the function's error answers the default with the reason,
    and so does Keras's own error for a row of the wrong width."""
    net = keras_net(3)
    path = tmp_path / "net.keras"
    net.save(path)

    def top_class(model: Any, inputs: Any) -> list[int]:
        if (inputs[:, 0] > 100).any():
            raise ValueError("feature out of range")
        return np.argmax(model.predict_on_batch(inputs), axis=1).tolist()

    keras_deployer.create_endpoint(conn, "keras-file", "doubles", top_class, path, default_output="-1",
                                   slo_micros=10_000_000)
    check_predictions(conn, "keras-file", INPUTS, lambda x: int(np.argmax(own_output(net, x))))
    check_default_with_reason(conn, "keras-file", [101.0, 0.0, 0.0, 0.0], -1, "ValueError: feature out of range")
    check_default_with_reason(conn, "keras-file", [1.0, 2.0], -1, "InvalidArgumentError")


def test_a_saved_model_is_not_a_keras_file(conn: ClipperConnection, tmp_path: Path) -> None:
    keras_net().export(str(tmp_path / "exported"), verbose=False)
    with pytest.raises(ClipperException, match="clipper.deployers.tensorflow"):
        keras_deployer.deploy_keras_model(conn, "keras-bad", 1, "doubles", None, tmp_path / "exported")
    with pytest.raises(ClipperException, match="should be either a Keras Model"):
        keras_deployer.deploy_keras_model(conn, "keras-bad", 1, "doubles", None, object())


#: Inputs whose first feature is not negative (`Affine` raises on those).
INPUTS_NON_NEGATIVE = [[abs(row[0]), *row[1:]] for row in INPUTS]


# ---------------------------------------------------------------------- Docker


@pytest.mark.docker
@pytest.mark.heavy
@needs_docker
def test_tensorflow_container(current_images: float, tmp_path: Path) -> None:
    """clipper/tensorflow-container built (or brought up to date) with progress, then a SavedModel (default
    function, and its error) and a Keras model served from it by DockerContainerManager."""
    from clipper import images

    started = time.monotonic()
    ref = images.ensure_image(tf_deployer.IMAGE, progress=print)
    size = images._inspect(images.docker_client(), ref)["Size"]
    print(f"\n[tensorflow] {ref}: {size / 1e6:.0f} MB, ensure_image took {time.monotonic() - started:.0f} s")
    tf.saved_model.save(Affine(), str(tmp_path / "affine"))
    net = keras_net(4)
    with docker_cluster("fw-tf") as dconn:
        tf_deployer.create_endpoint(dconn, "tf-affine", "doubles", None, str(tmp_path / "affine"),
                                    default_output="-1", slo_micros=20_000_000)
        check_predictions(dconn, "tf-affine", INPUTS_NON_NEGATIVE, affine_output)
        check_default_with_reason(dconn, "tf-affine", [-1.0, 0.0, 0.0, 0.0], -1, "negative first feature")
        keras_deployer.create_endpoint(dconn, "keras-net", "doubles", None, net, default_output="-1",
                                       slo_micros=20_000_000)
        check_predictions(dconn, "keras-net", INPUTS, lambda x: own_output(net, x))
