"""Image names and their defaults, shared by `ClipperConnection.start_clipper`, the deployers, the
Docker container manager and the image builder (`clipper.images`).

Imports nothing from this package, so that every one of them can import it.
"""

from __future__ import annotations

import os
import re
import sys

#: Repository prefix of Clipper's images (``clipper/query_frontend``...); this project builds them locally
#: under the same names.
DEFAULT_REGISTRY = "clipper"
#: clipper_admin's image tag: images built here get it too, so that Clipper's default image names resolve.
DEFAULT_IMAGE_VERSION = "0.4.1"
#: `container_name` of a model registered without a container (`register_model` with no image).
CONTAINERLESS_MODEL_IMAGE = "NO_CONTAINER"
#: Label of the intermediate stages of image builds (their dangling images are pruned after a build).
STAGE_LABEL = "ai.clipper.images.stage"
#: Environment variable naming another registry for the deployers' default base image.
REGISTRY_ENV = "CLIPPER_REGISTRY"

_REF = re.compile(r"(?:([\w.-]+)/)?([\w.-]+?)(?::[\w.-]+)?")
_CLOSURE = re.compile(r"python\d+-closure-container")


def image_ref(name: str, tag: str = DEFAULT_IMAGE_VERSION, registry: str = DEFAULT_REGISTRY) -> str:
    """``"<registry>/<name>:<tag>"``, e.g. ``"clipper/query_frontend:0.4.1"``."""
    return f"{registry}/{name}:{tag}"


def closure_image_name(python: str | None = None) -> str:
    """The closure container's name for a Python version (``"3.11"``; default this interpreter's):
    ``"python311-closure-container"``."""
    version = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"python{version.replace('.', '')}-closure-container"


def default_base_image(registry: str | None = None) -> str:
    """Base image of the deployers for the running interpreter, e.g. ``clipper/python311-closure-container:0.4.1``
    (registry: `registry`, else ``$CLIPPER_REGISTRY``, else ``clipper``)."""
    reg = registry or os.environ.get(REGISTRY_ENV, DEFAULT_REGISTRY)
    return image_ref(closure_image_name(), registry=reg)


def short_image_name(ref: str, *, registry_required: bool = False) -> str | None:
    """The recipe name behind an image reference of this project's registry: ``"clipper/query_frontend:0.4.1"``
    -> ``"query_frontend"``, ``"clipper/python311-closure-container"`` -> ``"python-closure-container"``;
    None for another registry's image (or, with `registry_required`, one without ``clipper/``)."""
    m = _REF.fullmatch(ref)
    registries = (DEFAULT_REGISTRY,) if registry_required else (DEFAULT_REGISTRY, None)
    if m is None or m.group(1) not in registries:
        return None
    short = m.group(2)
    return "python-closure-container" if _CLOSURE.fullmatch(short) else short
