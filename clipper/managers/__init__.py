"""Container managers: where a cluster's processes run. `LocalContainerManager` is the default.

`DockerContainerManager` (needs the ``docker`` package and a Docker engine) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..image_names import CONTAINERLESS_MODEL_IMAGE
from .base import ClusterAdapter, ContainerManager
from .local import LocalContainerManager

if TYPE_CHECKING:
    from .docker import DockerContainerManager

__all__ = ["CONTAINERLESS_MODEL_IMAGE", "ClusterAdapter", "ContainerManager", "DockerContainerManager",
           "LocalContainerManager"]


def __getattr__(name: str) -> Any:
    if name == "DockerContainerManager":
        from .docker import DockerContainerManager

        globals()[name] = DockerContainerManager
        return DockerContainerManager
    raise AttributeError(f"module 'clipper.managers' has no attribute {name!r}")
