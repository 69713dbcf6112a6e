"""Clipper-compatible low-latency prediction serving.

The admin API is re-exported here and imported lazily, so that the frontends and the container
runtime (which import this package) do not pay for `requests` and friends:

    from clipper import ClipperConnection, LocalContainerManager, ClipperException
    from clipper import DockerContainerManager  # Docker containers instead of local processes
    from clipper import KubernetesContainerManager  # Deployments on a Kubernetes cluster (docs/kubernetes.md)
    from clipper import SwarmContainerManager  # services on a Docker Swarm of several machines
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .exceptions import ClipperException, UnconnectedException

__all__ = ["ClipperConnection", "ClipperException", "DockerContainerManager", "KubernetesContainerManager",
           "LocalContainerManager", "SwarmContainerManager", "UnconnectedException", "__version__"]

_LAZY = {
    "ClipperConnection": "clipper.admin.connection",
    "LocalContainerManager": "clipper.managers.local",
    "DockerContainerManager": "clipper.managers.docker",
    "KubernetesContainerManager": "clipper.managers.kubernetes",
    "SwarmContainerManager": "clipper.managers.swarm",
}

if TYPE_CHECKING:
    from .admin.connection import ClipperConnection
    from .managers.docker import DockerContainerManager
    from .managers.kubernetes import KubernetesContainerManager
    from .managers.local import LocalContainerManager
    from .managers.swarm import SwarmContainerManager


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clipper' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
