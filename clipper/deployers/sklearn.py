"""Deploy a fitted scikit-learn estimator (anything with ``predict``) as a model.

The estimator is captured in a closure and deployed with `deploy_python_closure`: each replica
calls ``model.<method>(inputs)`` on the batch (an ``(n, features)`` array for numeric input types)
and returns ``str()`` of each row of the result. scikit-learn must be importable by the replicas
(with `LocalContainerManager` they use your interpreter; otherwise add ``"scikit-learn"`` to
`pkgs_to_install`).

    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression().fit(X, y)
    deploy_sklearn_model(clipper_conn, "iris", 1, "doubles", model)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import python as python_deployer

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection


def make_predict_function(model: Any, method: str = "predict") -> Callable[[Any], list[str]]:
    """The closure a replica runs: ``[str(p) for p in model.<method>(inputs)]``."""
    if not callable(getattr(model, method, None)):
        raise TypeError(f"{type(model).__name__} has no method {method!r}; pass a fitted scikit-learn estimator")

    def predict(inputs: Any) -> list[str]:
        preds = getattr(model, method)(inputs)
        return [str(p) for p in preds]

    return predict


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str, model: Any,
                    default_output: str = "None", version: Any = 1, slo_micros: int = 3000000,
                    labels: list[str] | None = None, registry: str | None = None, base_image: str = "default",
                    num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None,
                    method: str = "predict") -> None:
    """Registers an application called `name`, deploys `model` as model `name` and links the two."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_sklearn_model(clipper_conn, name, version, input_type, model, base_image, labels, registry,
                         num_replicas, batch_size, pkgs_to_install, method=method)
    clipper_conn.link_model_to_app(name, name)


def deploy_sklearn_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str, model: Any,
                         base_image: str = "default", labels: list[str] | None = None, registry: str | None = None,
                         num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None,
                         method: str = "predict") -> None:
    """Deploys a fitted estimator as model ``name:version``; `method` may be e.g. ``"predict_proba"``."""
    func = make_predict_function(model, method)
    python_deployer.deploy_python_closure(clipper_conn, name, version, input_type, func, base_image, labels,
                                          registry, num_replicas, batch_size, pkgs_to_install)
