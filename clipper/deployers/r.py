"""Deploy an R function as a model: the R container (``containers/r/``, Clipper RPC v3 in R with pbdZMQ).

The model is an R function ``function(inputs)`` returning one output per input (a character vector, or any
atomic vector, to which ``as.character`` is applied). `inputs` is, by the model's input type: a list of
integer vectors (``integers``), of numeric vectors (``floats``, ``doubles``), of raw vectors (``bytes``), or a
character vector (``strings``). An R error fails the batch: every request of it gets the app's default output
with the error's message as explanation, and the container keeps serving.

The function comes as an R source file that defines ``predict`` (e.g. ``model.R``), as an ``.rds`` file
holding the function (``saveRDS(my_function, "model.rds")``), or as R source text. It is written to a
fresh model directory (``model.R`` or ``model.rds``) that `ClipperConnection.build_and_deploy_model` turns
into the model's image:

* with `LocalContainerManager`, the directory is copied into the cluster (`build_model`) and the replicas
  are the ``command:`` image that runs the R container script of this package on it
  (``clipper-r-container <model dir>``, found through `clipper.images.containers_dir`: the checkout's
  ``containers/r/`` or the installed package's ``clipper/containers/r/``); they need ``Rscript`` and the R
  package pbdZMQ on this machine (Debian: ``r-base-core``, ``r-cran-pbdzmq``);
* with `DockerContainerManager`, the image is ``FROM clipper/r-container`` (built locally on first use
  by `clipper.images`, recipe ``containers/r-container/``) with the directory copied to ``/model``.

Example::

    deploy_r_function(clipper_conn, "r-sum", 1, "doubles",
                      "predict <- function(inputs) vapply(inputs, function(x) format(sum(x)), '')")
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from ..image_names import DEFAULT_REGISTRY, REGISTRY_ENV, image_ref

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["R_CONTAINER_IMAGE", "create_endpoint", "default_r_base_image", "deploy_r_function", "r_container_script",
           "save_r_function"]

logger = logging.getLogger("clipper.deployers.r")

#: Short name of the R container image (recipe ``containers/r-container/``).
R_CONTAINER_IMAGE = "r-container"
#: File names of the model in a model directory.
MODEL_SOURCE = "model.R"
MODEL_RDS = "model.rds"


def default_r_base_image(registry: str | None = None) -> str:
    """The R container image, e.g. ``clipper/r-container:0.4.1`` (registry: `registry`, else
    ``$CLIPPER_REGISTRY``, else ``clipper``)."""
    return image_ref(R_CONTAINER_IMAGE, registry=registry or os.environ.get(REGISTRY_ENV, DEFAULT_REGISTRY))


def r_container_script() -> Path:
    """``clipper-r-container`` (runs ``container.R``) of the checkout or of the installed package."""
    from ..images import ImageBuildError, containers_dir

    try:
        script = containers_dir() / "r" / "clipper-r-container"
    except ImageBuildError as e:
        raise ClipperException(f"cannot find the R container: {e}") from e
    if not (script.is_file() and (script.parent / "container.R").is_file()):
        raise ClipperException(f"the R container is missing: {script.parent} has no clipper-r-container and "
                               "container.R (reinstall clipper-serving, or set CLIPPER_SOURCE_DIR to a checkout)")
    return script


def _is_source_text(func: str | os.PathLike[str]) -> bool:
    """True when `func` is R code rather than a path: a str holding a newline or ``<-``/``=`` and ``function``,
    that names no existing file."""
    if not isinstance(func, str):
        return False
    if "\n" not in func and Path(func).expanduser().exists():
        return False
    return "\n" in func or ("function" in func and ("<-" in func or "=" in func))


def save_r_function(func_file_or_source: str | os.PathLike[str]) -> str:
    """Writes the model to a new temporary directory (suffix ``clipper``) and returns its path.

    `func_file_or_source`: an ``.R`` file defining ``predict``, an ``.rds`` file holding the function, or R
    source text defining ``predict``.
    """
    model_dir = Path(tempfile.mkdtemp(suffix="clipper")).resolve()
    try:
        if _is_source_text(func_file_or_source):
            (model_dir / MODEL_SOURCE).write_text(str(func_file_or_source) + "\n", encoding="utf-8")
        else:
            src = Path(func_file_or_source).expanduser()
            if not src.is_file():
                raise ClipperException(f"R model {str(func_file_or_source)!r} is neither a file (an .R file defining "
                                       "predict, or an .rds of the function) nor R source text")
            dest = MODEL_RDS if src.suffix.lower() == ".rds" else MODEL_SOURCE
            shutil.copyfile(src, model_dir / dest)
    except BaseException:
        shutil.rmtree(model_dir, ignore_errors=True)
        raise
    logger.info(f"Saved the R model to {model_dir}")
    return str(model_dir)


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func_file_or_source: str | os.PathLike[str], default_output: str = "None", version: Any = 1,
                    slo_micros: int = 3000000, labels: list[str] | None = None, registry: str | None = None,
                    base_image: str = "default", num_replicas: int = 1, batch_size: int = -1) -> None:
    """Registers an application called `name`, deploys the R function as model `name` and links the two."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_r_function(clipper_conn, name, version, input_type, func_file_or_source, base_image, labels, registry,
                      num_replicas, batch_size)
    clipper_conn.link_model_to_app(name, name)


def deploy_r_function(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                      func_file_or_source: str | os.PathLike[str], base_image: str = "default",
                      labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                      batch_size: int = -1) -> None:
    """Deploys an R function as model ``name:version``; returns once its replicas have registered.

    `func_file_or_source`: an R source file defining ``predict <- function(inputs) ...``, an ``.rds`` file of
    the function, or R source text defining ``predict``. `base_image` (``"default"``: ``clipper/r-container``)
    is the image Docker model images are built from; `LocalContainerManager` records it and runs the R
    container script with the machine's ``Rscript``. The other arguments are those of
    `clipper.deployers.python.deploy_python_closure` (there are no packages to install: put R packages the
    function needs into the base image, or install them on the machine).

    Example::

        deploy_r_function(clipper_conn, name="r-len", version=1, input_type="strings",
                          func_file_or_source="predict <- function(inputs) as.character(nchar(inputs))")
    """
    from ..managers.local import LOCAL_IMAGE_PREFIX, LocalContainerManager, command_image

    if base_image == "default":
        base_image = default_r_base_image(registry)
    model_dir = save_r_function(func_file_or_source)
    try:
        if not isinstance(getattr(clipper_conn, "cm", None), LocalContainerManager):
            clipper_conn.build_and_deploy_model(name, version, input_type, model_dir, base_image, labels, registry,
                                                num_replicas, batch_size)
            return
        image = clipper_conn.build_model(name, version, model_dir, base_image, registry)
        built = image.removeprefix(LOCAL_IMAGE_PREFIX)
        clipper_conn.deploy_model(name, version, input_type, command_image(["sh", str(r_container_script()), built]),
                                  labels, num_replicas, batch_size)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
