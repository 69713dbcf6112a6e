"""The admin side's third-party imports (the ``admin`` extra), with an error that says how to get them.

The frontends and the model containers run without ``requests`` and ``docker``; `ClipperConnection`, the
container managers and the ``clipper`` command import ``requests`` from here.
"""

from __future__ import annotations

INSTALL_HINT = "pip install 'clipper-serving[admin]'"

try:
    import requests
except ModuleNotFoundError as e:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        f"{e.name} is not installed: ClipperConnection, the container managers and the `clipper` command need "
        f"clipper-serving's admin extra ({INSTALL_HINT})", name=e.name
    ) from e

__all__ = ["INSTALL_HINT", "requests"]
