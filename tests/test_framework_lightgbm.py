"""LightGBM models (`clipper.deployers.lightgbm`): deployed through a real cluster, answered over real HTTP.

Each model is trained in the test on random data (no download). Predictions through ``POST /<app>/predict``, alone
and as one batch, must equal LightGBM's own output for the same inputs (tests/framework_checks.py); a model that
raises answers the app's default with the reason. With `LocalContainerManager` the replicas use this interpreter's
LightGBM; the test marked ``docker`` builds ``clipper/lightgbm-container`` (a small layer on
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
from clipper.deployers import lightgbm as lightgbm_deployer

lgb = pytest.importorskip("lightgbm")

# The functions of this module go to the replicas by value (the replicas cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

RNG = np.random.default_rng(13)
X = RNG.normal(size=(300, 4))
#: Inputs of the apps with 4 features: one app's inputs, alone and as a batch.
INPUTS = [[float(v) for v in row] for row in RNG.normal(size=(6, 4))]
PARAMS = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}


def binary_booster() -> Any:
    """A small binary Booster (lightgbm.train)."""
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return lgb.train({"objective": "binary", **PARAMS}, lgb.Dataset(X, label=y), num_boost_round=8)


def classifier() -> Any:
    """A 3-class LGBMClassifier with string labels (kept by the pickled estimator)."""
    y = np.array(["low", "mid", "high"])[np.digitize(X[:, 0] + X[:, 2], [-0.5, 0.5])]
    return lgb.LGBMClassifier(n_estimators=8, **PARAMS).fit(X, y)


def probabilities(model: Any, inputs: Any) -> list[str]:
    """The deployed function: the class probabilities of each input, as JSON (Clipper's `func(model, inputs)`)."""
    return [json.dumps(p) for p in model.predict_proba(inputs).tolist()]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    with local_cluster("test-lightgbm", tmp_path_factory.mktemp("lightgbm-cluster")) as c:
        yield c


# ---------------------------------------------------------------------- LocalContainerManager


def test_booster_with_the_default_function(conn: ClipperConnection) -> None:
    booster = binary_booster()
    lightgbm_deployer.create_endpoint(conn, "lgb-booster", "doubles", None, booster, default_output="-1",
                                      slo_micros=5_000_000)
    check_predictions(conn, "lgb-booster", INPUTS, lambda x: float(booster.predict(np.array([x]))[0]))


def test_classifier_with_a_function_and_with_the_default(conn: ClipperConnection) -> None:
    """An LGBMClassifier comes back as one (predict_proba in `func`; the default answers the class label)."""
    model = classifier()
    lightgbm_deployer.create_endpoint(conn, "lgb-proba", "doubles", probabilities, model, default_output="-1",
                                      slo_micros=5_000_000)
    check_predictions(conn, "lgb-proba", INPUTS, lambda x: model.predict_proba(np.array([x]))[0].tolist())
    conn.register_application("lgb-class", "doubles", "-1", 5_000_000)
    lightgbm_deployer.deploy_lightgbm_model(conn, "lgb-class", 1, "doubles", None, model)
    conn.link_model_to_app("lgb-class", "lgb-class")
    check_predictions(conn, "lgb-class", INPUTS, lambda x: str(model.predict(np.array([x]))[0]))


def test_saved_text_model_with_float_inputs(conn: ClipperConnection, tmp_path: Path) -> None:
    """A text model LightGBM wrote is deployed as a Booster; ``floats`` inputs reach it as float32."""
    model = lgb.LGBMRegressor(n_estimators=8, **PARAMS).fit(X, X @ np.array([1.0, -2.0, 0.5, 0.0]))
    path = tmp_path / "regressor.txt"
    model.booster_.save_model(str(path))
    lightgbm_deployer.create_endpoint(conn, "lgb-file", "floats", None, path, default_output="-1",
                                      slo_micros=5_000_000)
    check_predictions(conn, "lgb-file", INPUTS,
                      lambda x: float(model.predict(np.array([x], dtype=np.float32))[0]))


def test_model_that_raises_answers_the_default_with_the_reason(conn: ClipperConnection) -> None:
    """LightGBM's own error (a row of the wrong width) and an error of `func` both answer the default with the
    reason."""
    booster = binary_booster()
    lightgbm_deployer.create_endpoint(conn, "lgb-raising", "doubles", None, booster, default_output="-1",
                                      slo_micros=5_000_000)
    check_predictions(conn, "lgb-raising", INPUTS[:1], lambda x: float(booster.predict(np.array([x]))[0]))
    check_default_with_reason(conn, "lgb-raising", [1.0, 2.0], -1, "LightGBMError")

    def refuse_negative(model: Any, inputs: Any) -> list[float]:
        if (inputs[:, 0] < 0).any():
            raise ValueError("negative first feature")
        return model.predict(inputs).tolist()

    lightgbm_deployer.create_endpoint(conn, "lgb-func-raising", "doubles", refuse_negative, booster,
                                      default_output="-1", slo_micros=5_000_000)
    check_default_with_reason(conn, "lgb-func-raising", [-1.0, 0.0, 0.0, 0.0], -1, "ValueError: negative first")


def test_what_is_not_a_lightgbm_model_is_refused(conn: ClipperConnection, tmp_path: Path) -> None:
    with pytest.raises(ClipperException, match="lightgbm_model must be a lightgbm.Booster"):
        lightgbm_deployer.deploy_lightgbm_model(conn, "lgb-bad", 1, "doubles", None, object())
    with pytest.raises(ClipperException, match="not fitted"):
        lightgbm_deployer.deploy_lightgbm_model(conn, "lgb-bad", 1, "doubles", None, lgb.LGBMRegressor())
    with pytest.raises(ClipperException, match="not found"):
        lightgbm_deployer.deploy_lightgbm_model(conn, "lgb-bad", 1, "doubles", None, tmp_path / "missing.txt")


def test_the_replica_loader_reads_the_text_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What each replica runs once: a Booster is saved as LightGBM's text model and read back as a Booster, which
    predicts on one thread unless CLIPPER_LIGHTGBM_NUM_THREADS says otherwise."""
    from clipper.deployers import framework
    from clipper.model_runtime.loader import load_closure

    booster = binary_booster()
    model_dir = framework.save_framework_model(None, "lightgbm", lightgbm_deployer.LOADER,
                                               lambda d: lightgbm_deployer.save_lightgbm_model(d, booster))
    try:
        assert (Path(model_dir) / "model.txt").read_text().startswith("tree\n")
        predict = load_closure(model_dir)
        assert type(predict.model) is lgb.Booster
        got = [json.loads(o) for o in predict(np.array(INPUTS))]
        assert np.allclose(got, booster.predict(np.array(INPUTS)), rtol=1e-12)
        assert predict.model.predict.keywords == {"num_threads": 1}
        monkeypatch.setenv(lightgbm_deployer.THREADS_ENV, "0")  # LightGBM's default: all cores
        assert not hasattr(load_closure(model_dir).model.predict, "keywords")
        monkeypatch.setenv(lightgbm_deployer.THREADS_ENV, "two")
        with pytest.raises(Exception, match="CLIPPER_LIGHTGBM_NUM_THREADS must be a number"):
            load_closure(model_dir)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


# ---------------------------------------------------------------------- Docker


@pytest.mark.docker
@needs_docker
def test_lightgbm_container(current_images: float) -> None:
    """clipper/lightgbm-container built (or brought up to date) with progress, then a classifier and a raising
    model served from it by DockerContainerManager."""
    from clipper import images

    started = time.monotonic()
    ref = images.ensure_image(lightgbm_deployer.IMAGE, progress=print)
    size = images._inspect(images.docker_client(), ref)["Size"]
    print(f"\n[lightgbm] {ref}: {size / 1e6:.0f} MB, ensure_image took {time.monotonic() - started:.0f} s")
    model = classifier()
    booster = binary_booster()
    with docker_cluster("fw-lgb") as dconn:
        lightgbm_deployer.create_endpoint(dconn, "lgb-proba", "doubles", probabilities, model, default_output="-1",
                                          slo_micros=10_000_000)
        check_predictions(dconn, "lgb-proba", INPUTS, lambda x: model.predict_proba(np.array([x]))[0].tolist())
        lightgbm_deployer.create_endpoint(dconn, "lgb-raising", "doubles", None, booster, default_output="-1",
                                          slo_micros=10_000_000)
        check_default_with_reason(dconn, "lgb-raising", [1.0, 2.0], -1, "LightGBMError")
