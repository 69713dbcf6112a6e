"""Deployers: package a Python function or a framework model and deploy it (as Clipper's deployers).

* `clipper.deployers.python`: `deploy_python_closure`, `create_endpoint` (any Python function);
* `clipper.deployers.sklearn`: `deploy_sklearn_model`, `create_endpoint` (a fitted estimator);
* `clipper.deployers.pytorch`: `deploy_pytorch_model`, `create_endpoint` (a PyTorch module, TorchScript or
  ``torch.export`` program, served from ``clipper/pytorch-container``);
* `clipper.deployers.onnx`: `deploy_pytorch_model`, `create_pytorch_endpoint` (PyTorch through ONNX export, as
  Clipper's ``onnx`` deployer), `deploy_onnx_model`, `create_endpoint` (any ONNX model; ONNX Runtime, from
  ``clipper/onnx-container``);
* `clipper.deployers.tensorflow`: `deploy_tensorflow_model`, `create_endpoint` (a TensorFlow 2 SavedModel; Clipper's
  TF1 Session path is gone) and `clipper.deployers.keras`: `deploy_keras_model`, `create_endpoint` (a Keras 3 model
  or ``.keras``/``.h5`` file), both served from ``clipper/tensorflow-container``;
* `clipper.deployers.pyspark`: `deploy_pyspark_model`, `create_endpoint` (a ``pyspark.ml``/``pyspark.mllib``
  model, Spark in local mode in each replica; ``clipper/pyspark-container``);
* `clipper.deployers.xgboost`: `deploy_xgboost_model`, `create_endpoint` and `clipper.deployers.lightgbm`:
  `deploy_lightgbm_model`, `create_endpoint` (a Booster or scikit-learn estimator of either; Clipper had neither;
  ``clipper/xgboost-container``, ``clipper/lightgbm-container``);
* `clipper.deployers.r`: `deploy_r_function`, `create_endpoint` (an R function, served by the R container);
* `clipper.deployers.command`: `deploy_command` (any program speaking Clipper RPC, e.g. a C++ container).

Import the submodule you need, as with `clipper_admin.deployers`. The framework deployers share
`clipper.deployers.framework` (the model directory with the framework's artefact and the loader each replica
calls once); docs/frameworks.md describes each framework.
"""
