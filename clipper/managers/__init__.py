"""Container managers: where a cluster's processes run. `LocalContainerManager` is the default.

`DockerContainerManager` (needs the ``docker`` package and a Docker engine) and `KubernetesContainerManager` (needs
the ``kubernetes`` extra and a cluster) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..image_names import CONTAINERLESS_MODEL_IMAGE
from .base import ClusterAdapter, ContainerManager
from .local import LocalContainerManager

if TYPE_CHECKING:
    from .docker import DockerContainerManager
    from .kubernetes import KubernetesContainerManager

__all__ = ["CONTAINERLESS_MODEL_IMAGE", "ClusterAdapter", "ContainerManager", "DockerContainerManager",
           "KubernetesContainerManager", "LocalContainerManager"]


def __getattr__(name: str) -> Any:
    if name == "DockerContainerManager":
        from .docker import DockerContainerManager

        globals()[name] = DockerContainerManager
        return DockerContainerManager
    if name == "KubernetesContainerManager":
        from .kubernetes import KubernetesContainerManager

        globals()[name] = KubernetesContainerManager
        return KubernetesContainerManager
    raise AttributeError(f"module 'clipper.managers' has no attribute {name!r}")
