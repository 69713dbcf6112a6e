"""XGBoost models (`clipper.deployers.xgboost`): deployed through a real cluster, answered over real HTTP.

Each model is trained in the test on random data (no download). Predictions through ``POST /<app>/predict``, alone
and as one batch, must equal XGBoost's own output for the same inputs (tests/framework_checks.py); a model that
raises answers the app's default with the reason. With `LocalContainerManager` the replicas use this interpreter's
XGBoost; the test marked ``docker`` builds ``clipper/xgboost-container`` (a small layer on
``clipper/sklearn-container``) and serves from it.
"""

from __future__ import annotations

import json
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
from clipper.deployers import xgboost as xgboost_deployer

xgb = pytest.importorskip("xgboost")

# The functions of this module go to the replicas by value (the replicas cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

RNG = np.random.default_rng(11)
X = RNG.normal(size=(200, 4))
#: Inputs of the apps with 4 features: one app's inputs, alone and as a batch.
INPUTS = [[float(v) for v in row] for row in RNG.normal(size=(6, 4))]


def binary_booster() -> Any:
    """A small binary:logistic Booster (xgboost.train)."""
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, xgb.DMatrix(X, label=y),
                     num_boost_round=8)


def classifier() -> Any:
    """A 3-class XGBClassifier."""
    y = np.digitize(X[:, 0] + X[:, 2], [-0.5, 0.5])
    return xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y)


def probabilities(model: Any, inputs: Any) -> list[str]:
    """The deployed function: the class probabilities of each input, as JSON (Clipper's `func(model, inputs)`)."""
    return [json.dumps(p) for p in model.predict_proba(inputs).tolist()]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    with local_cluster("test-xgboost", tmp_path_factory.mktemp("xgboost-cluster")) as c:
        yield c


# ---------------------------------------------------------------------- LocalContainerManager


def test_booster_with_the_default_function(conn: ClipperConnection) -> None:
    booster = binary_booster()
    xgboost_deployer.create_endpoint(conn, "xgb-booster", "doubles", None, booster, default_output="-1",
                                     slo_micros=5_000_000)
    check_predictions(conn, "xgb-booster", INPUTS, lambda x: float(booster.inplace_predict(np.array([x]))[0]))


def test_classifier_with_a_function_and_with_the_default(conn: ClipperConnection) -> None:
    """An XGBClassifier comes back as an XGBClassifier (predict_proba in `func`; the default answers the class)."""
    model = classifier()
    xgboost_deployer.create_endpoint(conn, "xgb-proba", "doubles", probabilities, model, default_output="-1",
                                     slo_micros=5_000_000)
    check_predictions(conn, "xgb-proba", INPUTS, lambda x: model.predict_proba(np.array([x]))[0].tolist())
    conn.register_application("xgb-class", "doubles", "-1", 5_000_000)
    xgboost_deployer.deploy_xgboost_model(conn, "xgb-class", 1, "doubles", None, model, gpus=0)  # no GPU visible
    conn.link_model_to_app("xgb-class", "xgb-class")
    check_predictions(conn, "xgb-class", INPUTS, lambda x: int(model.predict(np.array([x]))[0]))
    assert [r.get("gpus") for r in conn.cm._read_state()["replicas"] if r["name"] == "xgb-class"] == [0]


def test_saved_model_file_with_integer_inputs(conn: ClipperConnection, tmp_path: Path) -> None:
    """A model file XGBoost wrote (JSON format) is deployed as a Booster; ``integers`` inputs reach it as ints."""
    xi = RNG.integers(0, 10, size=(200, 3))
    model = xgb.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1).fit(xi, xi @ np.array([1.0, -2.0, 0.5]))
    path = tmp_path / "regressor.json"
    model.save_model(path)
    xgboost_deployer.create_endpoint(conn, "xgb-file", "integers", None, str(path), default_output="-1",
                                     slo_micros=5_000_000)
    inputs = [[int(v) for v in row] for row in RNG.integers(0, 10, size=(5, 3))]
    check_predictions(conn, "xgb-file", inputs, lambda x: float(model.predict(np.array([x]))[0]))


def test_model_that_raises_answers_the_default_with_the_reason(conn: ClipperConnection) -> None:
    """XGBoost's own error (a row of the wrong width: ValueError) and an error of `func` both answer the default
    with the reason."""
    booster = binary_booster()
    xgboost_deployer.create_endpoint(conn, "xgb-raising", "doubles", None, booster, default_output="-1",
                                     slo_micros=5_000_000)
    check_predictions(conn, "xgb-raising", INPUTS[:1], lambda x: float(booster.inplace_predict(np.array([x]))[0]))
    check_default_with_reason(conn, "xgb-raising", [1.0, 2.0], -1, "ValueError: Feature shape mismatch")

    def refuse_negative(model: Any, inputs: Any) -> list[float]:
        if (inputs[:, 0] < 0).any():
            raise ValueError("negative first feature")
        return model.inplace_predict(inputs).tolist()

    xgboost_deployer.create_endpoint(conn, "xgb-func-raising", "doubles", refuse_negative, booster,
                                     default_output="-1", slo_micros=5_000_000)
    check_default_with_reason(conn, "xgb-func-raising", [-1.0, 0.0, 0.0, 0.0], -1, "ValueError: negative first")


def test_what_is_not_an_xgboost_model_is_refused(conn: ClipperConnection, tmp_path: Path) -> None:
    with pytest.raises(ClipperException, match="xgboost_model must be an xgboost.Booster"):
        xgboost_deployer.deploy_xgboost_model(conn, "xgb-bad", 1, "doubles", None, object())
    with pytest.raises(ClipperException, match="not found"):
        xgboost_deployer.deploy_xgboost_model(conn, "xgb-bad", 1, "doubles", None, tmp_path / "missing.ubj")


def test_the_replica_loader_gives_the_saved_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What each replica runs once: the manifest's loader returns the batch function, with a new estimator of the
    saved class (its classes kept) as the model, predicting on one thread unless CLIPPER_XGBOOST_NTHREAD says
    otherwise."""
    from clipper.deployers import framework
    from clipper.model_runtime.loader import load_closure

    model = classifier()
    model_dir = framework.save_framework_model(None, "xgboost", xgboost_deployer.LOADER,
                                               lambda d: xgboost_deployer.save_xgboost_model(d, model))
    try:
        assert json.loads((Path(model_dir) / framework.MANIFEST_FNAME).read_text())["format"] == "sklearn"
        predict = load_closure(model_dir)
        assert type(predict.model) is xgb.XGBClassifier
        assert predict.model.classes_.tolist() == model.classes_.tolist()
        assert [json.loads(o) for o in predict(np.array(INPUTS))] == model.predict(np.array(INPUTS)).tolist()
        assert predict.model.n_jobs == 1 and booster_threads(predict.model.get_booster()) == "1"
        monkeypatch.setenv(xgboost_deployer.THREADS_ENV, "2")
        assert booster_threads(load_closure(model_dir).model.get_booster()) == "2"
        monkeypatch.setenv(xgboost_deployer.THREADS_ENV, "0")  # XGBoost's default: all cores
        assert load_closure(model_dir).model.n_jobs is None
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


def booster_threads(booster: Any) -> str:
    """The ``nthread`` a Booster predicts with."""
    return json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]


# ---------------------------------------------------------------------- Docker


@pytest.mark.docker
@needs_docker
def test_xgboost_container(current_images: float) -> None:
    """clipper/xgboost-container built (or brought up to date) with progress, then a classifier and a raising model
    served from it by DockerContainerManager."""
    from clipper import images

    started = time.monotonic()
    ref = images.ensure_image(xgboost_deployer.IMAGE, progress=print)
    size = images._inspect(images.docker_client(), ref)["Size"]
    print(f"\n[xgboost] {ref}: {size / 1e6:.0f} MB, ensure_image took {time.monotonic() - started:.0f} s")
    model = classifier()
    booster = binary_booster()
    with docker_cluster("fw-xgb") as dconn:
        xgboost_deployer.create_endpoint(dconn, "xgb-proba", "doubles", probabilities, model, default_output="-1",
                                         slo_micros=10_000_000)
        check_predictions(dconn, "xgb-proba", INPUTS, lambda x: model.predict_proba(np.array([x]))[0].tolist())
        xgboost_deployer.create_endpoint(dconn, "xgb-raising", "doubles", None, booster, default_output="-1",
                                         slo_micros=10_000_000)
        check_default_with_reason(dconn, "xgb-raising", [1.0, 2.0], -1, "ValueError: Feature shape mismatch")
