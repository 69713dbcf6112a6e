"""Container managers: where a cluster's processes run. `LocalContainerManager` is the default."""

from .base import CONTAINERLESS_MODEL_IMAGE, ClusterAdapter, ContainerManager
from .local import LocalContainerManager

__all__ = ["CONTAINERLESS_MODEL_IMAGE", "ClusterAdapter", "ContainerManager", "LocalContainerManager"]
