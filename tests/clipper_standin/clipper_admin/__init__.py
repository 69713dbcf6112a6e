"""Stand-in for Clipper's `clipper_admin` package: this project's objects under Clipper's names.

Only for running Clipper's own integration tests against this project (see ``../README.md``); it holds
no logic beyond re-exports. `__version__` and `__registry__` name the images `clipper.images` builds
(``clipper/<image>:0.4.1``), as Clipper's tests format ``"{registry}/noop-container:{version}"``.
"""

from __future__ import annotations

import os

from clipper.admin.connection import *  # noqa: F403 - Clipper's `from .clipper_admin import *`
from clipper.admin.connection import CLIPPER_TEMP_DIR, ClipperConnection
from clipper.exceptions import ClipperException, UnconnectedException
from clipper.image_names import DEFAULT_IMAGE_VERSION, DEFAULT_REGISTRY, REGISTRY_ENV
from clipper.managers.docker import DockerContainerManager

from . import deployers
from .kubernetes import KubernetesContainerManager

__version__ = DEFAULT_IMAGE_VERSION
__registry__ = os.environ.get(REGISTRY_ENV, DEFAULT_REGISTRY)

__all__ = ["CLIPPER_TEMP_DIR", "ClipperConnection", "ClipperException", "DockerContainerManager",
           "KubernetesContainerManager", "UnconnectedException", "__registry__", "__version__", "deployers"]
