"""Container managers: where a cluster's processes run. `LocalContainerManager` is the default.

`DockerContainerManager`, `SwarmContainerManager` (they need the ``docker`` package and a Docker engine) and
`KubernetesContainerManager` (needs the ``kubernetes`` extra and a cluster) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..image_names import CONTAINERLESS_MODEL_IMAGE
from .base import ClusterAdapter, ContainerManager
from .local import LocalContainerManager

if TYPE_CHECKING:
    from .docker import DockerContainerManager
    from .kubernetes import KubernetesContainerManager
    from .swarm import SwarmContainerManager

__all__ = ["CONTAINERLESS_MODEL_IMAGE", "ClusterAdapter", "ContainerManager", "DockerContainerManager",
           "KubernetesContainerManager", "LocalContainerManager", "SwarmContainerManager"]

_LAZY = {"DockerContainerManager": ".docker", "KubernetesContainerManager": ".kubernetes",
         "SwarmContainerManager": ".swarm"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clipper.managers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
