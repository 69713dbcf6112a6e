"""PySpark models (`clipper.deployers.pyspark`): deployed through a real cluster, answered over real HTTP.

Each model is trained in the test by a local Spark session (no download). Predictions through
``POST /<app>/predict``, alone and as one batch, must equal the model's own output for the same inputs
(tests/framework_checks.py); a model that raises answers the app's default with the reason. With
`LocalContainerManager` the replicas use this interpreter's pyspark and start Spark in local mode: the module is
skipped where pyspark or Java is missing (pyspark is not in the ``test`` extra; see docs/frameworks.md for the
command that runs it). The test marked ``docker`` and ``heavy`` builds ``clipper/pyspark-container`` (about 1 GB:
Spark's jars and a Java runtime) and serves from it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest
from conftest import make_manager, needs_docker
from framework_checks import check_default_with_reason, check_predictions, docker_cluster

from clipper import ClipperConnection, ClipperException
from clipper.deployers import pyspark as pyspark_deployer

pyspark = pytest.importorskip("pyspark")

# The functions of this module go to the replicas by value (the replicas cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="redis-server is not installed (apt-get install redis-server)"),
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java (apt-get install default-jre-headless)"),
]

#: How long a replica may take to start (JVM, Spark session, model load).
REPLICA_START_S = 120

#: Inputs of the apps with 3 features: one app's inputs, alone and as a batch.
INPUTS = [[0.5, 1.0, -0.5], [2.0, -1.0, 0.0], [-1.5, 0.5, 1.0], [0.0, 0.0, 0.0], [3.0, 2.0, -2.0]]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("clipper-tests")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def training_frame(spark: Any) -> Any:
    """40 rows: label = 1 when 2*x0 - x1 + 0.5*x2 > 0, features as a vector column."""
    from pyspark.ml.linalg import Vectors

    rows = []
    for i in range(40):
        x = [((i * 7) % 11 - 5) / 2.0, ((i * 5) % 7 - 3) / 1.5, ((i * 3) % 5 - 2) / 1.0]
        rows.append((float(2 * x[0] - x[1] + 0.5 * x[2] > 0), Vectors.dense(x)))
    return spark.createDataFrame(rows, ["label", "features"])


def logistic_regression(spark: Any) -> Any:
    from pyspark.ml.classification import LogisticRegression

    return LogisticRegression(maxIter=20, regParam=0.01).fit(training_frame(spark))


def predict_each(spark: Any, model: Any, inputs: Any) -> list[str]:
    """Clipper's `func(spark, model, inputs)`: the model's prediction for each input (one Py4J call each)."""
    from pyspark.ml.linalg import Vectors

    return [str(model.predict(Vectors.dense(x))) for x in inputs]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    """A local cluster whose replicas may take 2 minutes to register: each starts a JVM and loads the model with
    Spark jobs (tens of seconds on a busy 2-core machine)."""
    c = ClipperConnection(make_manager(f"test-pyspark-{os.getpid()}", tmp_path_factory.mktemp("pyspark-cluster"),
                                       start_timeout=REPLICA_START_S), health_check_timeout=60)
    try:
        c.start_clipper()
        yield c
    finally:
        c.stop_all()


# ---------------------------------------------------------------------- LocalContainerManager


def test_ml_model_with_a_function_and_errors(conn: ClipperConnection, spark: Any) -> None:
    """A pyspark.ml LogisticRegressionModel with Clipper's three-argument function; Spark's own error (a row of the
    wrong width) and the function's error both answer the default with the reason."""
    from pyspark.ml.linalg import Vectors

    model = logistic_regression(spark)

    def guarded(spark: Any, model: Any, inputs: Any) -> list[str]:
        if any(x[0] > 100 for x in inputs):
            raise ValueError("feature out of range")
        return predict_each(spark, model, inputs)

    pyspark_deployer.create_endpoint(conn, "spark-lr", "doubles", guarded, model, spark.sparkContext,
                                     default_output="-1", slo_micros=20_000_000)
    check_predictions(conn, "spark-lr", INPUTS, lambda x: model.predict(Vectors.dense(x)))
    check_default_with_reason(conn, "spark-lr", [101.0, 0.0, 0.0], -1, "ValueError: feature out of range")
    check_default_with_reason(conn, "spark-lr", [1.0, 2.0], -1, "IllegalArgumentException")


def test_pipeline_with_the_default_function(conn: ClipperConnection, spark: Any) -> None:
    """A PipelineModel (scaler + linear regression) has no single-vector predict: the default function transforms a
    DataFrame of the batch."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.linalg import Vectors
    from pyspark.ml.regression import LinearRegression

    pipeline = Pipeline(stages=[StandardScaler(inputCol="features", outputCol="scaled"),
                                LinearRegression(featuresCol="scaled", maxIter=10)]).fit(training_frame(spark))
    conn.register_application("spark-pipeline", "doubles", "-1", 20_000_000)
    pyspark_deployer.deploy_pyspark_model(conn, "spark-pipeline", 1, "doubles", None, pipeline)
    conn.link_model_to_app("spark-pipeline", "spark-pipeline")

    def own(x: list[float]) -> float:
        frame = spark.createDataFrame([(Vectors.dense(x),)], ["features"])
        return pipeline.transform(frame).collect()[0]["prediction"]

    check_predictions(conn, "spark-pipeline", INPUTS, own)


def test_mllib_model_needs_the_spark_context(conn: ClipperConnection, spark: Any) -> None:
    """A pyspark.mllib model is saved with save(sc, path), as Clipper did (Spark's older API, still in Spark 4)."""
    from pyspark.mllib.classification import LogisticRegressionWithLBFGS
    from pyspark.mllib.regression import LabeledPoint

    data = spark.sparkContext.parallelize(
        [LabeledPoint(r["label"], r["features"].toArray()) for r in training_frame(spark).collect()])
    model = LogisticRegressionWithLBFGS.train(data, iterations=20)
    pyspark_deployer.create_endpoint(conn, "spark-mllib", "doubles", None, model, spark.sparkContext,
                                     default_output="-1", slo_micros=20_000_000)
    check_predictions(conn, "spark-mllib", INPUTS, lambda x: model.predict(x))


def test_what_is_not_a_spark_model_is_refused(conn: ClipperConnection) -> None:
    with pytest.raises(ClipperException, match="was not a pyspark object"):
        pyspark_deployer.deploy_pyspark_model(conn, "spark-bad", 1, "doubles", predict_each, object(), None)


# ---------------------------------------------------------------------- Docker


@pytest.mark.docker
@pytest.mark.heavy
@needs_docker
def test_pyspark_container(current_images: float, spark: Any) -> None:
    """clipper/pyspark-container built (or brought up to date) with progress, then a pyspark.ml model served from it
    (Spark in local mode in the container) by DockerContainerManager, and its error."""
    from pyspark.ml.linalg import Vectors

    from clipper import images

    started = time.monotonic()
    ref = images.ensure_image(pyspark_deployer.IMAGE, progress=print)
    size = images._inspect(images.docker_client(), ref)["Size"]
    print(f"\n[pyspark] {ref}: {size / 1e6:.0f} MB, ensure_image took {time.monotonic() - started:.0f} s")
    model = logistic_regression(spark)
    with docker_cluster("fw-spark") as dconn:
        pyspark_deployer.create_endpoint(dconn, "spark-lr", "doubles", predict_each, model, spark.sparkContext,
                                         default_output="-1", slo_micros=30_000_000)
        check_predictions(dconn, "spark-lr", INPUTS, lambda x: model.predict(Vectors.dense(x)))
        check_default_with_reason(dconn, "spark-lr", [1.0, 2.0], -1, "IllegalArgumentException")
