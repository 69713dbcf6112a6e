"""Deployers: package a Python function or a framework model and deploy it (as Clipper's deployers).

* `clipper.deployers.python`: `deploy_python_closure`, `create_endpoint` (any Python function);
* `clipper.deployers.sklearn`: `deploy_sklearn_model`, `create_endpoint` (a fitted estimator);
* `clipper.deployers.r`: `deploy_r_function`, `create_endpoint` (an R function, served by the R container);
* `clipper.deployers.command`: `deploy_command` (any program speaking Clipper RPC, e.g. a C++ container).

Import the submodule you need, as with `clipper_admin.deployers`.
"""
