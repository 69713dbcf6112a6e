"""Clipper's `KubernetesContainerManager`: this project has no Kubernetes manager."""

from __future__ import annotations

from typing import Any

from clipper.exceptions import ClipperException


class KubernetesContainerManager:
    """Importable (Clipper's ``test_utils.py`` imports it), never constructible."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ClipperException("clipper-serving has no Kubernetes container manager (use DockerContainerManager)")
