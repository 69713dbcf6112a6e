"""Deploy any program as a model: a model container written in another language (C++, Java, R, ...).

The program speaks Clipper RPC v3 to the query frontend (docs/containers.md) and reads Clipper's environment
(``CLIPPER_MODEL_NAME``, ``CLIPPER_MODEL_VERSION``, ``CLIPPER_IP``, ``CLIPPER_PORT``, ``CLIPPER_INPUT_TYPE``).
`LocalContainerManager` runs it from the image ``command:<command line>`` (`command_image`); a replica counts
as started once the query frontend reports it registered. Other managers refuse such images.

Example::

    deploy_command(clipper_conn, "cpp-model", 1, "doubles", ["/opt/models/conformance"], num_replicas=2)
    # the shell: clipper deploy cpp-model --input-type doubles --command /opt/models/conformance --replicas 2
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from ..managers.local import command_image

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["command_argv", "command_image", "deploy_command"]


def command_argv(command: str | Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`command` (a command line, split with `shlex`, or an argv) as the argv a replica runs.

    A relative program path that names a file here (``./bin/model``) is made absolute, since replicas do not
    run in this directory; `env` is prepended as ``env KEY=VALUE ...`` (kept in the image, so replicas started
    later, e.g. by `set_num_replicas` or a restart with the kept state, get it too).
    """
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise ClipperException("The model command is empty")
    if os.sep in argv[0] and not os.path.isabs(argv[0]) and Path(argv[0]).exists():
        argv[0] = str(Path(argv[0]).resolve())
    if env:
        bad = [k for k in env if not k or "=" in k]
        if bad:
            raise ClipperException(f"Invalid environment variable names {bad!r}")
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    return argv


def deploy_command(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                   command: str | Sequence[str], num_replicas: int = 1, env: Mapping[str, str] | None = None,
                   labels: list[str] | None = None, batch_size: int = -1) -> None:
    """Runs `command` as `num_replicas` replicas of model ``name:version`` and registers it (made current).

    Returns once every replica is registered with the query frontend; a replica that exits first, or does not
    register within the manager's start timeout, fails the deployment with the end of its log.
    """
    clipper_conn.deploy_model(name, version, input_type, command_image(command_argv(command, env)), labels=labels,
                              num_replicas=num_replicas, batch_size=batch_size)
