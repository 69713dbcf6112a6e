"""Pushing images to a registry a Kubernetes cluster pulls from (Kubernetes cannot build images).

This project's images are built on this machine (``python -m clipper.images build``); a cluster's nodes pull them
from a registry: `push_cluster_images` tags ``clipper/<name>:<version>`` as ``<registry>/clipper/<name>:<version>``
(`objects.cluster_image`, the name the manifests use) and pushes it. `push` pushes one reference. Both take a
``docker.DockerClient`` (``clipper.images.docker_client()``), which uses the Docker engine's own registry login
(``docker login``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .objects import CLUSTER_IMAGES, cluster_image, default_image


class PushError(RuntimeError):
    """An image could not be tagged or pushed (the message says which and why)."""


def push(client: Any, ref: str, progress: Callable[[str], Any] | None = None) -> None:
    """``docker push ref``; an error the registry reports raises `PushError`."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = ref, "latest"
    try:
        stream = client.images.push(repo, tag=tag, stream=True, decode=True)
        for chunk in stream:
            if "error" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                raise PushError(f"docker push {ref} failed: {detail}")
            if progress is not None and chunk.get("status") in ("Pushed", "Layer already exists"):
                progress(f"[push] {ref}: {chunk.get('id', '')} {chunk['status']}")
    except PushError:
        raise
    except Exception as e:  # noqa: BLE001 - the engine's errors (no such image, not logged in, ...)
        raise PushError(f"docker push {ref} failed: {e}") from e
    if progress is not None:
        progress(f"[push] pushed {ref}")


def cluster_image_pairs(registry: str, names: Iterable[str] = CLUSTER_IMAGES) -> list[tuple[str, str]]:
    """``(local image, its name in the registry)`` for each of this project's images `names`."""
    return [(default_image(n), cluster_image(default_image(n), registry)) for n in names]


def push_cluster_images(client: Any, registry: str, names: Iterable[str] = CLUSTER_IMAGES,
                        progress: Callable[[str], Any] | None = None) -> list[str]:
    """Tags each local ``clipper/<name>:<version>`` for `registry` and pushes it; returns the pushed references.
    A missing local image raises `PushError` (build it first: ``clipper images build NAME``)."""
    pushed = []
    for local, remote in cluster_image_pairs(registry, names):
        try:
            image = client.images.get(local)
        except Exception as e:  # noqa: BLE001 - docker.errors.ImageNotFound and the engine's other errors
            raise PushError(f"{local} is not on this machine ({e}); build it first: "
                            f"clipper images build {local.split('/')[1].split(':')[0]}") from e
        repo, _, tag = remote.rpartition(":")
        if not image.tag(repo, tag=tag):
            raise PushError(f"cannot tag {local} as {remote}")
        push(client, remote, progress)
        pushed.append(remote)
    return pushed
