"""Deployers: package a Python function or a framework model and deploy it (REFERENCE §7.6).

* `clipper.deployers.python`: `deploy_python_closure`, `create_endpoint` (any Python function);
* `clipper.deployers.sklearn`: `deploy_sklearn_model`, `create_endpoint` (a fitted estimator).

Import the submodule you need, as with `clipper_admin.deployers`.
"""
