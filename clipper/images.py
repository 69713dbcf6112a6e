"""Builds Clipper's Docker images locally, with no registry: ``python -m clipper.images build``.

Every image is built on this machine from the recipes in ``containers/`` (of the source checkout, or
the copy the installed package carries as ``clipper/containers``):

* ``clipper/base``: a Debian root filesystem made with ``debootstrap --variant=minbase`` (same suite
  and mirror as this machine's apt, with python3 and pip) and ``docker import``-ed. Needs root and the
  ``debootstrap`` package. A user with a registry can start from another image instead:
  ``base_image="python:3.11-slim"`` (or ``CLIPPER_BASE_IMAGE``); the other images use it through
  ``ARG BASE``.
* ``clipper/python-runtime``: base + clipper-serving and its dependencies, installed from wheels
  made on the host and copied into the build context, so ``docker build`` needs no network: the
  pinned ``containers/requirements.txt`` (``pip download``), and clipper-serving itself: ``pip wheel``
  of the source checkout when there is one, else the installed package packed back into a wheel
  (the same files the user runs, so the images get exactly the user's version; its compiled
  extensions need the image's Python to be the host's, which holds for the debootstrapped base).
* ``clipper/query_frontend`` and ``clipper/management_frontend`` (same layers, each with its own
  entrypoint), ``clipper/redis`` (Debian's redis-server), ``clipper/python-closure-container``
  (also tagged ``clipper/python311-closure-container``, the name the deployers pick),
  ``clipper/noop-container`` and ``clipper/sklearn-container``.
* built on first use only (or when named): the other languages' containers, ``clipper/prometheus``, and the
  framework images (``clipper/pytorch-container``, ``clipper/onnx-container``...: the closure container plus
  the framework's pinned wheels, `Recipe.wheels`), which the framework deployers (`clipper.deployers`) use.

Images are tagged with the package version and with clipper_admin's image tag (0.4.1), and carry a
label ``ai.clipper.images.hash`` of their inputs (recipe files, pinned requirements, the project's
source files, the parent image's id). A build skips every image whose label still matches, so a
second call with nothing changed only inspects images. Downloaded wheels, .deb files and the Rust
build directory are kept in ``~/.cache/clipper/images`` (``CLIPPER_IMAGES_CACHE``) between builds.

    from clipper.images import build_images, ensure_image
    build_images()                       # everything that is missing or out of date
    ref = ensure_image("query_frontend")  # "clipper/query_frontend:0.1.0", built when needed
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import image_names
from ._version import __version__
from .image_names import DEFAULT_IMAGE_VERSION, DEFAULT_REGISTRY, STAGE_LABEL, closure_image_name, short_image_name

REPOSITORY = DEFAULT_REGISTRY
VERSION = __version__
#: clipper_admin's image tag: images get it too, so the default image names of
#: `ClipperConnection.start_clipper` and the deployers resolve.
COMPAT_VERSION = DEFAULT_IMAGE_VERSION
HASH_LABEL = "ai.clipper.images.hash"
PYTHON_LABEL = "ai.clipper.images.python"
LIBC_LABEL = "ai.clipper.images.libc"
BASE_ENV = "CLIPPER_BASE_IMAGE"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], Any]


class ImageBuildError(RuntimeError):
    """An image could not be built (the message says which step failed and shows its output)."""


@dataclass(frozen=True)
class Recipe:
    """How one image is built: its recipe directory, the image it is built from, what else its
    build context holds (``"wheels"``: the runtime's wheels; ``"debs"``: the redis .deb files), the build
    argument that names its parent, and whether ``build_images()`` builds it by default (the others are
    built on first use, or when named).

    ``wheels``: a pinned requirements file of ``containers/`` (e.g. ``"requirements-pytorch.txt"``, every
    transitive dependency listed) whose wheels are downloaded on the host for the parent image's CPython
    (``pip download --no-deps``; cached) into the build context's ``wheels/``, with the file itself, so that
    the Dockerfile installs them with ``pip install --no-index`` (a framework image: see
    ``containers/pytorch-container/Dockerfile``). The file is part of the image's hash. A line whose comment starts
    with ``sdist`` names a pure-Python package published only as an sdist (``pyspark==4.3.0  # sdist``): it is
    built into a wheel on the host (``pip wheel --no-deps``) instead.

    Debian packages: each ``<list>.debs`` file in the recipe directory names packages (one per line,
    ``#`` comments) that are fetched, with what they need beyond the parent image, into the build
    context's ``debs/<list>/`` (by running the parent image once with apt ``--download-only``; cached),
    so that the Dockerfile installs them with ``dpkg -i`` and ``docker build`` needs no network.

    ``sources``: other folders of ``containers/`` copied into the build context under their own name
    (e.g. ``("cpp",)``: the C++ library as ``cpp/``) and hashed with the recipe (build outputs skipped)."""

    name: str
    parent: str | None
    context: tuple[str, ...] = ()
    parent_arg: str = "BASE"
    default: bool = True
    sources: tuple[str, ...] = ()
    wheels: str | None = None


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("base", None),
        Recipe("python-runtime", "base", ("wheels",)),
        Recipe("query_frontend", "python-runtime", parent_arg="RUNTIME"),
        Recipe("management_frontend", "python-runtime", parent_arg="RUNTIME"),
        Recipe("redis", "base", ("debs",)),
        Recipe("python-closure-container", "python-runtime", parent_arg="RUNTIME"),
        Recipe("noop-container", "python-closure-container", parent_arg="CLOSURE"),
        Recipe("sklearn-container", "python-closure-container", parent_arg="CLOSURE",
               wheels="requirements-sklearn.txt"),
        Recipe("cpp-container", "base", default=False, sources=("cpp",)),
        Recipe("java-container", "base", default=False, sources=("java",)),
        Recipe("r-container", "base", default=False, sources=("r",)),
        Recipe("prometheus", "base", default=False),
        # --- framework images (clipper.deployers.<framework>): built on first use ---
        # PyTorch / ONNX Runtime (clipper.deployers.pytorch, clipper.deployers.onnx)
        Recipe("pytorch-container", "python-closure-container", parent_arg="CLOSURE", default=False,
               wheels="requirements-pytorch.txt"),
        Recipe("onnx-container", "python-closure-container", parent_arg="CLOSURE", default=False,
               wheels="requirements-onnx.txt"),
        # XGBoost / LightGBM (clipper.deployers.xgboost, clipper.deployers.lightgbm): FROM sklearn-container
        Recipe("xgboost-container", "sklearn-container", parent_arg="SKLEARN", default=False,
               wheels="requirements-xgboost.txt"),
        Recipe("lightgbm-container", "sklearn-container", parent_arg="SKLEARN", default=False,
               wheels="requirements-lightgbm.txt"),
        # TensorFlow 2 + Keras 3 (clipper.deployers.tensorflow, clipper.deployers.keras); PySpark with a Java runtime
        Recipe("tensorflow-container", "python-closure-container", parent_arg="CLOSURE", default=False,
               wheels="requirements-tensorflow.txt"),
        Recipe("pyspark-container", "python-closure-container", parent_arg="CLOSURE", default=False,
               wheels="requirements-pyspark.txt"),
        # --- end of framework images ---
    )
}
#: What ``build_images()`` builds by default.
IMAGE_NAMES = tuple(name for name, recipe in RECIPES.items() if recipe.default)

#: The distribution this package is installed as.
DISTRIBUTION = "clipper-serving"

# files of the checkout that make the clipper-serving wheel (hashed, and copied to build it)
_SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE",
                 "Cargo.toml", "Cargo.lock")
_SOURCE_DIRS = ("clipper", "_core", "rust_core", "containers")
# files an installer adds to a .dist-info: not part of the wheel
_INSTALLER_FILES = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
# fuzz: rust_core/fuzz, its own cargo project (corpora, lock file) that no wheel needs
_SKIP_DIRS = {"__pycache__", "target", "build", "dist", ".pytest_cache", ".ruff_cache", "fuzz"}
_SKIP_SUFFIXES = (".so", ".pyc", ".pyo", ".pyd", ".o")


def image_ref(name: str, tag: str = VERSION) -> str:
    """``"clipper/<name>:<tag>"`` for a short image name such as ``"query_frontend"`` (tag: this package's
    version; `clipper.image_names.image_ref` defaults to Clipper's)."""
    return image_names.image_ref(name, tag)


# ----------------------------------------------------------------------------- locating things


def source_dir() -> Path | None:
    """The source checkout (holding ``containers/`` and ``pyproject.toml``), or None.

    ``CLIPPER_SOURCE_DIR`` when set, else the directory above this package when it is a checkout.
    """
    env = os.environ.get("CLIPPER_SOURCE_DIR")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parent.parent]
    for c in candidates:
        if (c / "containers").is_dir() and (c / "pyproject.toml").is_file():
            return c
    return None


def containers_dir() -> Path:
    """The image recipes: the checkout's ``containers/``, else the copy shipped in the package."""
    src = source_dir()
    if src is not None:
        return src / "containers"
    shipped = Path(__file__).resolve().parent / "containers"
    if (shipped / "python-runtime" / "Dockerfile").is_file():
        return shipped
    raise ImageBuildError(
        f"the image recipes were found neither in a source checkout nor in the installed package ({shipped}): "
        "reinstall clipper-serving, or set CLIPPER_SOURCE_DIR to a checkout"
    )


def cache_dir() -> Path:
    """Where wheels, .deb files and the Rust build directory are kept between builds."""
    env = os.environ.get("CLIPPER_IMAGES_CACHE")
    if env:
        path = Path(env)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipper" / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def debian_suite_and_mirror(required: bool = True, root: Path = Path("/")) -> tuple[str, str]:
    """The Debian suite of this machine (``/etc/os-release``) and the mirror its apt uses.

    ``CLIPPER_DEBIAN_SUITE`` / ``CLIPPER_DEBIAN_MIRROR`` override them (suite default: bookworm). No
    mirror is written in the code: when neither apt nor the variable names one, ImageBuildError (or ""
    when not `required`). `root` is where ``etc/`` is read from.
    """
    suite = os.environ.get("CLIPPER_DEBIAN_SUITE")
    if not suite:
        with contextlib.suppress(OSError):
            for line in (root / "etc/os-release").read_text().splitlines():
                if line.startswith("VERSION_CODENAME="):
                    suite = line.split("=", 1)[1].strip().strip('"')
        suite = suite or "bookworm"
    mirror = os.environ.get("CLIPPER_DEBIAN_MIRROR") or _apt_mirror(suite, root) or ""
    if not mirror and required:
        raise ImageBuildError(
            f"no Debian mirror for {suite}: this machine's apt names none (/etc/apt/sources.list, "
            "/etc/apt/sources.list.d/); set CLIPPER_DEBIAN_MIRROR to one, or pass base_image= / set "
            "CLIPPER_BASE_IMAGE to an image with python3"
        )
    return suite, mirror.rstrip("/")


def _apt_mirror(suite: str, root: Path = Path("/")) -> str | None:
    """The first apt source (one-line or deb822 format) under `root` that serves `suite` itself."""
    files = [root / "etc/apt/sources.list"]
    with contextlib.suppress(OSError):
        files += sorted((root / "etc/apt/sources.list.d").iterdir())
    for f in files:
        if not (f.name == "sources.list" or f.suffix in (".list", ".sources")):
            continue
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.strip().startswith("#") or ":" not in line:
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
                if ("deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split()
                        and fields.get("enabled", "yes").lower() != "no" and fields.get("uris")):
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                    return parts[1]
    return None


# ----------------------------------------------------------------------------- hashing


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _recipe_files(name: str) -> list[Path]:
    d = containers_dir() / name
    if not d.is_dir():
        raise ImageBuildError(f"no recipe for image {name!r}: {d} is missing")
    return sorted(p for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _source_files(name: str) -> list[Path]:
    """The files of ``containers/<name>`` that a recipe's ``sources`` copies: no build outputs."""
    d = containers_dir() / name
    return [p for p in _recipe_files(name)
            if not any(part in _SKIP_DIRS or part.startswith(".") for part in p.relative_to(d).parts)]


def _files_hash(root: Path, files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def project_files(src: Path) -> list[Path]:
    """The checkout's files that make the clipper-serving wheel (no build outputs)."""
    files = [src / f for f in _SOURCE_FILES if (src / f).is_file()]
    for d in _SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(src / d):
            dirnames[:] = sorted(n for n in dirnames if n not in _SKIP_DIRS and not n.startswith("."))
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if fn.startswith(".") or fn.endswith(_SKIP_SUFFIXES):
                    continue
                if fn.endswith((".c", ".cpp", ".html")) and p.with_suffix(".pyx").exists():
                    continue  # generated by cythonize (the .html: its annotation)
                files.append(p)
    return files


# ----------------------------------------------------------------------------- docker helpers


def docker_client() -> Any:
    """A docker SDK client; ImageBuildError when the engine does not answer."""
    try:
        import docker
    except ImportError as e:
        raise ImageBuildError("the docker Python package is needed: pip install 'clipper-serving[admin]'") from e
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:
        raise ImageBuildError(f"the Docker engine does not answer: {e}") from e
    return client


def _inspect(client: Any, ref: str) -> dict[str, Any] | None:
    import docker.errors

    try:
        return client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None


def _labels(info: dict[str, Any] | None) -> dict[str, str]:
    if not info:
        return {}
    return (info.get("Config") or {}).get("Labels") or {}


def _probe_python(client: Any, image: str) -> tuple[str, str]:
    """(python "X.Y", libc "glibc 2.36") of `image`, from its labels or by running it once."""
    labels = _labels(_inspect(client, image))
    if labels.get(PYTHON_LABEL) and labels.get(LIBC_LABEL):
        return labels[PYTHON_LABEL], labels[LIBC_LABEL]
    code = 'import platform, sys; print("%d.%d" % sys.version_info[:2]); print(" ".join(platform.libc_ver()))'
    try:
        out = client.containers.run(image, ["python3", "-c", code], entrypoint=[], remove=True,
                                    network_mode="none")
    except Exception as e:
        raise ImageBuildError(f"cannot run python3 in base image {image}: {e}") from e
    lines = out.decode().split("\n")
    return lines[0].strip(), lines[1].strip()


# ----------------------------------------------------------------------------- the builder


class _Builder:
    def __init__(self, client: Any, base_image: str | None, force: bool, progress: Progress,
                 missing_only: bool = False) -> None:
        self.client = client
        self.base_image = base_image
        self.force = force
        self.missing_only = missing_only
        self.say = progress
        self.src = source_dir()
        self.cache = cache_dir()
        self.hashes: dict[str, str] = {}
        self.replaced: list[str] = []  # ids of the images that builds replaced
        self._src_hash: str | None = None

    # ---- hashes

    def source_hash(self) -> str:
        """The hash of the clipper-serving that goes into the images: the checkout's files, or the installed
        distribution's RECORD (which lists every file with its hash)."""
        if self._src_hash is None:
            if self.src is not None:
                self._src_hash = _files_hash(self.src, project_files(self.src))
            else:
                dist = _installed_distribution()
                self._src_hash = _sha(dist.version, dist.read_text("RECORD") or "")
        return self._src_hash

    def parent_ref(self, recipe: Recipe) -> str:
        assert recipe.parent is not None
        if recipe.parent == "base" and self.base_image:
            return self.base_image
        return image_ref(recipe.parent)

    def wanted_hash(self, recipe: Recipe) -> str:
        """The hash of everything `recipe`'s image is made from (its parent by image id)."""
        if recipe.name in self.hashes:
            return self.hashes[recipe.name]
        root = containers_dir()
        parts: list[str] = [recipe.name, _files_hash(root, _recipe_files(recipe.name))]
        parts += [_files_hash(root, _source_files(name)) for name in recipe.sources]
        if recipe.parent is None:
            parts += [*debian_suite_and_mirror(required=False), platform.machine()]
        else:
            parent = _inspect(self.client, self.parent_ref(recipe))
            parts.append(parent["Id"] if parent else "missing")
        if "wheels" in recipe.context:
            parts += [(root / "requirements.txt").read_text(), self.source_hash()]
        if recipe.wheels:
            parts.append((root / recipe.wheels).read_text())
        value = _sha(*parts)
        self.hashes[recipe.name] = value
        return value

    def up_to_date(self, name: str) -> bool:
        info = _inspect(self.client, image_ref(name))
        if info is None:
            return False
        if self.missing_only:
            return True  # told to accept what is there
        return _labels(info).get(HASH_LABEL) == self.wanted_hash(RECIPES[name])

    # ---- the order of work

    def plan(self, names: Iterable[str]) -> list[str]:
        order: list[str] = []

        def visit(name: str) -> None:
            if name not in RECIPES:
                raise ImageBuildError(f"unknown image {name!r}; known: {', '.join(RECIPES)}")
            recipe = RECIPES[name]
            if recipe.parent and not (recipe.parent == "base" and self.base_image):
                visit(recipe.parent)
            if name not in order:
                order.append(name)

        for n in names:
            if n == "base" and self.base_image:
                continue
            visit(n)
        return order

    def run(self, names: Iterable[str]) -> list[str]:
        built: list[str] = []
        for name in self.plan(names):
            recipe = RECIPES[name]
            if not self.force and self.up_to_date(name):
                self.tag_aliases(name)
                continue
            started = time.monotonic()
            previous = _inspect(self.client, image_ref(name))
            if previous is not None:
                self.replaced.append(previous["Id"])
            if name == "base":
                self.build_base()
            else:
                if name == "redis" and self._redis_debs_missing():
                    self.say("[images] the redis-server .deb files are not in the cache: fetching them again")
                    self.build_base(import_image=False)
                self.build_from_recipe(recipe)
            self.tag_aliases(name)
            built.append(name)
            self.say(f"[images] {image_ref(name)} built in {time.monotonic() - started:.0f} s")
            # the parent changed: whatever is built from it must be rebuilt too
            for child in RECIPES.values():
                self.hashes.pop(child.name, None)
        if built:
            self.prune()
        return built

    # ---- base

    def _redis_debs_dir(self) -> Path:
        return self.cache / "redis-debs"

    def _redis_debs_missing(self) -> bool:
        if self.base_image:
            return False  # the redis recipe falls back to apt-get in a registry base image
        stamp = self._redis_debs_dir() / "base-hash"
        return not (stamp.is_file() and stamp.read_text().strip() == self.wanted_hash(RECIPES["base"])
                    and any(self._redis_debs_dir().glob("*.deb")))

    def build_base(self, import_image: bool = True) -> None:
        """Makes the root filesystem and imports it as clipper/base (keeping the redis .deb files)."""
        suite, mirror = debian_suite_and_mirror()
        if shutil.which("debootstrap") is None:
            raise ImageBuildError("debootstrap is needed to make clipper/base (apt-get install debootstrap), "
                                  "or pass base_image= / set CLIPPER_BASE_IMAGE to an image with python3")
        sudo: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                raise ImageBuildError("debootstrap needs root: run as root, or pass base_image=")
            sudo = ["sudo", "-n"]
        self.say(f"[images] debootstrap {suite} from {mirror}... (this takes a few minutes once)")
        work = Path(tempfile.mkdtemp(prefix="clipper-rootfs-", dir=self.cache))
        rootfs, debs = work / "rootfs", work / "debs"
        try:
            script = containers_dir() / "base" / "mkrootfs.sh"
            lines = self._stream(
                [*sudo, "sh", str(script), str(rootfs), str(debs), suite, mirror, str(self.cache / "debootstrap")],
                "debootstrap", _debootstrap_line,
            )
            keep = self._redis_debs_dir()
            shutil.rmtree(keep, ignore_errors=True)
            keep.mkdir(parents=True)
            for deb in sorted(debs.glob("*.deb")):
                shutil.copy2(deb, keep / deb.name)
            (keep / "base-hash").write_text(self.wanted_hash(RECIPES["base"]) + "\n")
            if import_image:
                python = next((ln.split()[1] for ln in lines if ln.startswith("python ")), "")
                libc = next((ln.split(None, 1)[1] for ln in lines if ln.startswith("libc ")), "")
                self.import_rootfs(rootfs, python, libc, sudo)
        finally:
            subprocess.run([*sudo, "rm", "-rf", str(work)], check=False)

    def import_rootfs(self, rootfs: Path, python: str, libc: str, sudo: list[str]) -> None:
        suite, _ = debian_suite_and_mirror()
        self.say(f"[images] importing the root filesystem as {image_ref('base')} (python {python}, {libc})")
        changes = [
            f"ENV PATH={DEFAULT_PATH}",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            f"LABEL {HASH_LABEL}={self.wanted_hash(RECIPES['base'])}",
            f"LABEL {PYTHON_LABEL}={python}",
            f'LABEL {LIBC_LABEL}="{libc}"',
            f"LABEL ai.clipper.images.debian={suite}",
        ]
        tar = subprocess.Popen([*sudo, "tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            result = self.client.api.import_image_from_stream(tar.stdout, repository=f"{REPOSITORY}/base",
                                                              tag=VERSION, changes=changes)
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise ImageBuildError("tar of the root filesystem failed")
        if _inspect(self.client, image_ref("base")) is None:
            raise ImageBuildError(f"docker import made no {image_ref('base')}: {result}")

    # ---- Dockerfile builds

    def build_from_recipe(self, recipe: Recipe) -> None:
        parent = self.parent_ref(recipe)
        if _inspect(self.client, parent) is None:
            if recipe.parent == "base" and self.base_image:
                self.say(f"[images] pulling {parent}")
                self.client.images.pull(parent)
            else:
                raise ImageBuildError(f"{parent} is missing")
        with tempfile.TemporaryDirectory(prefix=f"clipper-{recipe.name}-", dir=self.cache) as tmp:
            ctx = Path(tmp)
            for f in _recipe_files(recipe.name):
                dest = ctx / f.relative_to(containers_dir() / recipe.name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
            for name in recipe.sources:
                for f in _source_files(name):
                    dest = ctx / f.relative_to(containers_dir())
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest)
            if "wheels" in recipe.context:
                self.runtime_wheels(ctx / "wheels", parent)
            if recipe.wheels:
                self.dependency_wheels(recipe.wheels, ctx / "wheels", parent)
            for listing in sorted((containers_dir() / recipe.name).glob("*.debs")):
                self.fetch_debs(parent, listing, ctx / "debs" / listing.stem)
            if "debs" in recipe.context:
                (ctx / "debs").mkdir()
                if not self.base_image:
                    for deb in self._redis_debs_dir().glob("*.deb"):
                        _link_or_copy(deb, ctx / "debs" / deb.name)
            labels = {HASH_LABEL: self.wanted_hash(recipe), "ai.clipper.images.name": recipe.name,
                      "ai.clipper.images.version": VERSION}
            if recipe.name == "python-runtime":
                python, libc = _probe_python(self.client, parent)
                labels |= {PYTHON_LABEL: python, LIBC_LABEL: libc}
            self.docker_build(recipe.name, ctx, {recipe.parent_arg: parent}, labels)

    def docker_build(self, name: str, ctx: Path, buildargs: dict[str, str], labels: dict[str, str]) -> None:
        """``docker build`` of the recipe in `ctx`, its `labels` set by one ``LABEL`` line appended to the
        Dockerfile: the classic builder makes each instruction a step of its own (an intermediate container and
        a commit: about 2.5 s here), and the API's ``labels`` argument adds one step per label."""
        self.say(f"[images] docker build {image_ref(name)}")
        dockerfile = ctx / "Dockerfile"
        pairs = " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
        dockerfile.write_text(dockerfile.read_text().rstrip("\n") + f"\nLABEL {pairs}\n")
        tail: deque[str] = deque(maxlen=40)
        image_id = None
        stream = self.client.api.build(path=str(ctx), tag=image_ref(name), buildargs=buildargs,
                                       rm=True, forcerm=True, pull=False, decode=True)
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                out = "\n".join(tail)
                raise ImageBuildError(f"docker build of {image_ref(name)} failed: {detail.strip()}\n{out}")
            if "aux" in chunk and isinstance(chunk["aux"], dict):
                image_id = chunk["aux"].get("ID", image_id)
            text = chunk.get("stream", "")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                if re.match(r"Step \d+/\d+ : ", line):
                    self.say(f"[images]   {name}: {_shorten(line)}")
        if image_id is None and _inspect(self.client, image_ref(name)) is None:
            raise ImageBuildError(f"docker build of {image_ref(name)} gave no image:\n" + "\n".join(tail))

    def tag_aliases(self, name: str) -> None:
        info = _inspect(self.client, image_ref(name))
        if info is None:
            return
        refs = [(f"{REPOSITORY}/{name}", VERSION), (f"{REPOSITORY}/{name}", COMPAT_VERSION)]
        if name == "python-closure-container":
            python = _labels(info).get(PYTHON_LABEL, "")
            if python:
                alias = f"{REPOSITORY}/{closure_image_name(python)}"
                refs += [(alias, VERSION), (alias, COMPAT_VERSION)]
        have = set(info.get("RepoTags") or [])
        for repo, tag in refs:
            if f"{repo}:{tag}" not in have:
                self.client.api.tag(info["Id"], repo, tag)

    def prune(self) -> None:
        """Removes the images this run replaced, when nothing uses them any more, and build stages."""
        import docker.errors

        for image_id in reversed(self.replaced):
            info = _inspect(self.client, image_id)
            if info is None or info.get("RepoTags"):
                continue
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_image(image_id)  # refused while containers or child images use it
        with contextlib.suppress(Exception):
            self.client.images.prune(filters={"dangling": True, "label": STAGE_LABEL})

    # ---- Debian packages

    def fetch_debs(self, image: str, listing: Path, dest: Path) -> None:
        """The .deb files of the packages `listing` names, and of what they need beyond `image`, into `dest`
        (fetched by running `image` once; kept in the cache by image id and package list)."""
        packages = [word for line in listing.read_text().splitlines() for word in line.split("#", 1)[0].split()]
        info = _inspect(self.client, image)
        key = _sha(info["Id"] if info else image, *packages)[:16]
        store = self.cache / "debs" / f"{listing.parent.name}-{listing.stem}-{key}"
        if not (store / ".complete").exists():
            self.say(f"[images] fetching Debian packages for {listing.parent.name} ({listing.name}): "
                     f"{' '.join(packages)} and what they need")
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir(parents=True)
            script = ("set -e; apt-get -q update >/dev/null; apt-get -q -y --no-install-recommends install "
                      f"--download-only {' '.join(shlex.quote(p) for p in packages)} >/dev/null; "
                      "find /var/cache/apt/archives -maxdepth 1 -name '*.deb' -exec cp {} /out/ \\;")
            try:
                self.client.containers.run(image, ["sh", "-c", script], entrypoint=[], user="root", remove=True,
                                           volumes={str(store): {"bind": "/out", "mode": "rw"}})
            except Exception as e:
                raise ImageBuildError(f"fetching {' '.join(packages)} in {image} failed (the image's apt sources must "
                                      f"be reachable from a container): {e}") from e
            (store / ".complete").write_text("")
        dest.mkdir(parents=True, exist_ok=True)
        for deb in store.glob("*.deb"):
            _link_or_copy(deb, dest / deb.name)

    # ---- wheels

    def runtime_wheels(self, dest: Path, base: str) -> None:
        """Pinned dependency wheels + the clipper-serving wheel for `base`'s python, into `dest`."""
        python, libc = _probe_python(self.client, base)
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        if self.src is None:
            if python != host:
                raise ImageBuildError(
                    f"the base image has Python {python}, but the installed clipper-serving was built for Python "
                    f"{host}: pick a base image with Python {host} (e.g. python:{host}-slim), or build from a source "
                    "checkout (CLIPPER_SOURCE_DIR) with that Python on PATH"
                )
            self.dependency_wheels("requirements.txt", dest, base)
            self.say("[images] packing the installed clipper-serving into a wheel")
            installed_wheel(dest)
            return
        interpreter = sys.executable if python == host else shutil.which(f"python{python}")
        if not interpreter:
            raise ImageBuildError(
                f"the base image has Python {python} but this is Python {host}: the compiled extensions must be "
                f"built by a Python {python} (none on PATH); pick a base image with Python {host} "
                f"(e.g. python:{host}-slim)"
            )
        self.dependency_wheels("requirements.txt", dest, base)
        wheel = self.project_wheel(interpreter)
        _link_or_copy(wheel, dest / wheel.name)

    def dependency_wheels(self, requirements: str, dest: Path, base: str) -> None:
        python, libc = _probe_python(self.client, base)
        req = containers_dir() / requirements
        platforms = _manylinux_platforms(libc)
        key = _sha(req.read_text(), python, *platforms)[:16]
        store = self.cache / "wheels" / f"{req.stem}-{key}"
        if not (store / ".complete").exists():
            self.say(f"[images] pip download {requirements} for CPython {python} ({len(platforms)} platform tags)")
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir(parents=True)
            binary, sdists = _split_sdist_requirements(req.read_text())
            with tempfile.TemporaryDirectory(prefix="clipper-req-", dir=self.cache) as tmp:
                listing = Path(tmp) / req.name
                listing.write_text("".join(line + "\n" for line in binary))
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--implementation", "cp", "--python-version", python, "--abi", f"cp{python.replace('.', '')}",
                       "--abi", "abi3", "--abi", "none", "-d", str(store), "-r", str(listing)]
                for plat in platforms:
                    cmd += ["--platform", plat]
                if binary:
                    self._run(cmd, f"pip download ({requirements})")
            # --- pure-Python sdists (framework images: pyspark has no wheel on PyPI): built into wheels here
            for spec in sdists:
                self.say(f"[images] pip wheel {spec} (a pure-Python sdist, built into a wheel on this machine)")
                self._run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(store), spec],
                          f"pip wheel {spec}")
            impure = [w.name for w in store.glob("*.whl") if not w.name.endswith("-none-any.whl")
                      and any(w.name.lower().startswith(_wheel_prefix(s)) for s in sdists)]
            if impure:
                raise ImageBuildError(f"{requirements}: {', '.join(impure)} built from an sdist is not pure Python "
                                      "(only pure-Python sdists may be marked '# sdist')")
            # --- end of pure-Python sdists
            (store / ".complete").write_text("")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(req, dest / req.name)
        for whl in store.glob("*.whl"):
            _link_or_copy(whl, dest / whl.name)

    def project_wheel(self, interpreter: str) -> Path:
        """The clipper-serving wheel of this checkout (cached by its source hash)."""
        assert self.src is not None
        key = self.source_hash()[:16]
        wheels = self.cache / "wheels"
        store = wheels / f"clipper-serving-{key}"
        found = sorted(store.glob("clipper_serving-*.whl")) if store.is_dir() else []
        if found:
            return found[0]
        self.say("[images] building the clipper-serving wheel (Rust + Cython; minutes the first time)")
        for old in wheels.glob("clipper-serving-*"):
            shutil.rmtree(old, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="clipper-src-", dir=self.cache) as tmp:
            copy = Path(tmp) / "src"
            for f in project_files(self.src):
                dest = copy / f.relative_to(self.src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
            out = Path(tmp) / "out"
            # a CARGO_TARGET_DIR already set is kept: a checkout's own build directory (as in CI) holds the
            # compiled crates, and only rust_core is built again (40 s against 2 minutes here)
            env = dict(os.environ)
            env.setdefault("CARGO_TARGET_DIR", str(self.cache / "cargo-target"))
            self._run([interpreter, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(copy)],
                      "pip wheel clipper-serving", env=env)
            built = sorted(out.glob("clipper_serving-*.whl"))
            if not built:
                raise ImageBuildError("pip wheel made no clipper_serving wheel")
            store.mkdir(parents=True, exist_ok=True)
            shutil.move(str(built[0]), store / built[0].name)
        return store / built[0].name

    # ---- subprocesses

    def _run(self, cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise ImageBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")

    def _stream(self, cmd: list[str], what: str, keep: Callable[[str], bool]) -> list[str]:
        """Runs `cmd`, showing the lines `keep` selects; returns every line."""
        lines: list[str] = []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if keep(line):
                self.say(f"[images]   {what}: {_shorten(line)}")
        if proc.wait() != 0:
            tail = "\n".join(lines[-40:])
            raise ImageBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
        return lines


# --- pure-Python sdists in a requirements file (framework images)


def _split_sdist_requirements(text: str) -> tuple[list[str], list[str]]:
    """``(binary, sdists)``: the requirement lines of a pinned requirements file (comments dropped), those whose
    comment is ``# sdist`` apart: pure-Python packages published only as an sdist (pyspark), which are built into
    wheels on the host instead of downloaded as wheels for the image's Python."""
    binary: list[str] = []
    sdists: list[str] = []
    for line in text.splitlines():
        spec, _, comment = line.partition("#")
        spec = spec.strip()
        if spec:
            (sdists if re.match(r"sdist\b", comment.strip()) else binary).append(spec)
    return binary, sdists


def _wheel_prefix(spec: str) -> str:
    """The start of the wheel file names of requirement `spec` (``pyspark==4.3.0`` -> ``pyspark-``)."""
    name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "_", name).lower() + "-"


# --- end of pure-Python sdists


def _installed_distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as e:
        raise ImageBuildError(f"{DISTRIBUTION} is not installed and there is no source checkout to build it from "
                              "(pip install it, or set CLIPPER_SOURCE_DIR)") from e


def installed_wheel(dest: Path) -> Path:
    """Packs the installed clipper-serving back into a wheel in `dest`: the files its RECORD lists (the
    compiled extensions included), its own WHEEL tags, a RECORD made again; not what the installer
    added (INSTALLER, REQUESTED, direct_url.json) nor the scripts outside site-packages, which
    entry_points.txt makes again at install."""
    dist = _installed_distribution()
    wheel_info = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")]
    if not tags or not dist.files:
        raise ImageBuildError(f"the installed {DISTRIBUTION} has no WHEEL tags or RECORD: reinstall it from a wheel "
                              "or an sdist")
    root = Path(str(dist.locate_file("")))
    dist_info = next(f.parts[0] for f in dist.files if f.parts[0].endswith(".dist-info"))
    path = dest / f"{DISTRIBUTION.replace('-', '_')}-{dist.version}-{tags[0]}.whl"
    dest.mkdir(parents=True, exist_ok=True)
    record: list[str] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for f in dist.files:
            name = f.as_posix()
            if name.startswith("..") or "__pycache__" in f.parts:
                continue
            if f.parts[0].endswith(".dist-info") and f.name in _INSTALLER_FILES:
                continue
            data = (root / f).read_bytes()
            wheel.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


def _debootstrap_line(line: str) -> bool:
    if re.match(r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (?!the base system)", line):
        return False
    if re.match(r"(Get|Hit|Ign|Fetched|Reading|Building|Need to get|After this|The following|Download complete)",
                line):
        return False
    return line.startswith(("I: ", "W: ", "E: ", "rootfs ready", "python ", "debootstrap "))


def _manylinux_platforms(libc: str) -> list[str]:
    """pip ``--platform`` tags a glibc ``"glibc 2.36"`` system accepts, newest first."""
    machine = platform.machine()
    m = re.match(r"glibc (\d+)\.(\d+)", libc)
    major, minor = (int(m.group(1)), int(m.group(2))) if m else (2, 17)
    tags = [f"manylinux_{major}_{v}_{machine}" for v in range(minor, 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    tags += [f"{name}_{machine}" for name, v in legacy.items() if minor >= v]
    return [*tags, f"linux_{machine}"]


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _shorten(line: str, width: int = 110) -> str:
    line = " ".join(line.split())
    return line if len(line) <= width else line[: width - 3] + "..."


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time on this machine (per cache directory)."""
    with open(cache_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- public API


def build_images(names: Iterable[str] | None = None, *, base_image: str | None = None, force: bool = False,
                 progress: Progress | None = print) -> list[str]:
    """Builds the images in `names` (default: all) and what they are built from, when missing or out
    of date (every one with `force`); returns the names of those built.

    `base_image`: None (or ``CLIPPER_BASE_IMAGE``) makes ``clipper/base`` with debootstrap; an image
    name such as ``"python:3.11-slim"`` is used instead (pulled if needed, so it needs a registry).
    `progress` gets one line per step (None: silent).
    """
    base_image = base_image or os.environ.get(BASE_ENV) or None
    say = progress or (lambda _line: None)
    client = docker_client()
    with _lock():
        builder = _Builder(client, base_image, force, say)
        return builder.run(list(names) if names is not None else list(IMAGE_NAMES))


def ensure_image(name: str, *, base_image: str | None = None, progress: Progress | None = print,
                 rebuild_stale: bool = True) -> str:
    """The reference (``"clipper/<name>:<version>"``) of image `name`, built first when it is missing or
    (unless `rebuild_stale` is False) out of date. `name` may be a short name (``"query_frontend"``) or a
    reference to one of ours (``"clipper/python311-closure-container:0.4.1"``)."""
    short = short_image_name(name)
    if short not in RECIPES:
        raise ImageBuildError(f"unknown image {name!r}; known: {', '.join(RECIPES)}")
    base_image = base_image or os.environ.get(BASE_ENV) or None
    client = docker_client()
    with _lock():
        say = progress or (lambda _line: None)
        _Builder(client, base_image, False, say, missing_only=not rebuild_stale).run([short])
    return image_ref(short)


def list_images(*, base_image: str | None = None) -> list[dict[str, Any]]:
    """One row per image: name, ref, status (``up to date``, ``out of date``, ``missing``), size, id. The images
    built on first use only (framework, other languages) are listed when present."""
    base_image = base_image or os.environ.get(BASE_ENV) or None
    client = docker_client()
    builder = _Builder(client, base_image, False, lambda _line: None)
    rows = []
    for name, recipe in RECIPES.items():
        if name == "base" and base_image:
            continue
        info = _inspect(client, image_ref(name))
        if info is None and not recipe.default:
            continue
        if info is None:
            status = "missing"
        elif builder.src is None or builder.up_to_date(name):
            status = "up to date"
        else:
            status = "out of date"
        rows.append({"name": name, "ref": image_ref(name), "status": status,
                     "size": info["Size"] if info else None, "id": info["Id"][7:19] if info else None,
                     "tags": info.get("RepoTags", []) if info else []})
    return rows


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1e6:.0f} MB"


def _removal_refs(name: str) -> tuple[str, list[str]] | None:
    """The recipe name and the references `remove_images` looks at for `name` (None: not one of ours)."""
    short = short_image_name(name, registry_required="/" in name)
    if short not in RECIPES:
        return None
    if ":" in name.rpartition("/")[2]:  # one tag
        return short, [name if "/" in name else f"{REPOSITORY}/{name}"]
    return short, [image_ref(short), image_ref(short, COMPAT_VERSION)]


def remove_images(names: Iterable[str] | None = None) -> dict[str, str]:
    """Removes this project's images `names` (default: all): a short name (``"query_frontend"``) loses
    both its tags (the package's version and clipper_admin's; for the closure container also its
    ``pythonXY-closure-container`` aliases); a reference with a tag (``"clipper/noop-container:0.1.0"``)
    loses only that tag. An image a container uses (running or stopped) is left alone.

    Returns, per name: ``"removed"``, ``"absent"``, ``"in use by container(s) ..."`` or ``"not removed:
    <why>"``. Raises ImageBuildError for a name not of this project, or when the engine does not answer."""
    import docker.errors

    wanted = list(names) if names is not None else list(reversed(IMAGE_NAMES))  # children first
    targets = {name: _removal_refs(name) for name in wanted}
    unknown = [name for name, target in targets.items() if target is None]
    if unknown:
        raise ImageBuildError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    client = docker_client()
    results: dict[str, str] = {}
    for name, (short, refs) in ((n, t) for n, t in targets.items() if t is not None):
        infos = {ref: info for ref in refs if (info := _inspect(client, ref)) is not None}
        if not infos:
            results[name] = "absent"
            continue
        tags = set(infos)
        if len(refs) > 1:  # every tag of ours on those images
            tags |= {t for info in infos.values() for t in info.get("RepoTags") or []
                     if short_image_name(t, registry_required=True) == short
                     and t.rpartition(":")[2] in (VERSION, COMPAT_VERSION)}
            ids = {info["Id"] for info in infos.values()}
            users = sorted(c["Names"][0].lstrip("/") for c in client.api.containers(all=True)
                           if c.get("ImageID") in ids)
            if users:
                results[name] = f"in use by container(s) {', '.join(users)}; remove them first"
                continue
        try:
            for tag in sorted(tags):
                client.api.remove_image(tag)
        except docker.errors.APIError as e:  # e.g. a container uses the image (or started meanwhile)
            results[name] = f"not removed: {e.explanation or e}"
            continue
        results[name] = "removed"
    return results


#: What ``python -m clipper.images --help`` and ``clipper images --help`` say first.
DESCRIPTION = "Build, list or remove Clipper's Docker images (built locally, with no registry)."


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``build``, ``list`` and ``rm`` subcommands, for ``python -m clipper.images`` and ``clipper images``."""
    ap.set_defaults(images_prog=ap.prog)
    sub = ap.add_subparsers(dest="images_command", metavar="COMMAND", required=True)
    b = sub.add_parser("build", help="build missing or out-of-date images (all by default)")
    on_use = [name for name, recipe in RECIPES.items() if not recipe.default]
    b.add_argument("names", nargs="*", help=f"images among: {', '.join(IMAGE_NAMES)} (default: all of these); "
                                            f"built on first use, or when named: {', '.join(on_use)}")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--base-image", help=f"start from this image instead of debootstrap (default: ${BASE_ENV}, "
                                        "else clipper/base made with debootstrap)")
    ls = sub.add_parser("list", help="show the images, their state and size")
    ls.add_argument("--base-image", help=f"the base image builds start from (default: ${BASE_ENV})")
    ls.add_argument("--json", action="store_true", help="print JSON rows")
    rm = sub.add_parser("rm", help="remove images (both tags of each); one a container uses is left alone")
    rm.add_argument("names", nargs="*", metavar="NAME",
                    help=f"images among: {', '.join(RECIPES)}, or a reference such as clipper/NAME:TAG "
                         "(only that tag)")
    rm.add_argument("--all", action="store_true", help="remove every image of the project")
    rm.set_defaults(rm_parser=rm)


def run(args: argparse.Namespace) -> int:
    """Runs a parsed ``build``/``list``/``rm``: 0 when done, 1 on a failure (said in one line on stderr)."""
    try:
        if args.images_command == "build":
            started = time.monotonic()
            built = build_images(args.names or None, base_image=args.base_image, force=args.force,
                                 progress=lambda line: print(line, flush=True))
            print(f"[images] {len(built)} built ({', '.join(built) or 'all up to date'}) "
                  f"in {time.monotonic() - started:.1f} s")
            return 0
        if args.images_command == "rm":
            if bool(args.names) == args.all:
                args.rm_parser.error("name the images to remove, or pass --all")
            unknown = [name for name in args.names if _removal_refs(name) is None]
            if unknown:
                args.rm_parser.error(f"not an image of this project: {', '.join(unknown)} "
                                     f"(images: {', '.join(IMAGE_NAMES)})")
            results = remove_images(args.names or None)
            for name, outcome in results.items():
                short, refs = _removal_refs(name)  # type: ignore[misc]
                what = refs[0] if len(refs) == 1 else f"{REPOSITORY}/{short} (tags {VERSION}, {COMPAT_VERSION})"
                print(f"{what}: {'not present, nothing to remove' if outcome == 'absent' else outcome}")
            return 0 if all(o in ("removed", "absent") for o in results.values()) else 1
        rows = list_images(base_image=args.base_image)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['ref']:<45} {r['status']:<12} {_human(r['size']):>8}  {r['id'] or ''}")
        return 0
    except ImageBuildError as e:
        print(f"{args.images_prog}: error: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    from .cmdline import ArgumentParser

    ap = ArgumentParser(prog="python -m clipper.images", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
