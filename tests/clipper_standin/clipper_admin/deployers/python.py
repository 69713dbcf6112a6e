"""Stand-in for `clipper_admin.deployers.python`."""

from clipper.deployers.python import create_endpoint, deploy_python_closure

__all__ = ["create_endpoint", "deploy_python_closure"]
