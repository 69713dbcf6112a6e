"""The R container (``containers/r/container.R``, through ``clipper-r-container``) serving
``containers/r/examples/conformance.R``. Needs ``Rscript`` and the R package pbdZMQ (Debian: ``r-base-core``,
``r-cran-pbdzmq``)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from . import Implementation

R_DIR = Path(__file__).resolve().parents[2] / "containers" / "r"


@functools.lru_cache(maxsize=1)
def available() -> str | None:
    """None when Rscript and pbdZMQ are here, else what is missing."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return "Rscript is not installed (Debian: apt-get install r-base-core r-cran-pbdzmq)"
    try:
        check = 'quit(status = if (requireNamespace("pbdZMQ", quietly = TRUE)) 0 else 3)'
        done = subprocess.run([rscript, "-e", check], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Rscript does not run: {e}"
    if done.returncode == 3:
        return "the R package pbdZMQ is not installed (Debian: apt-get install r-cran-pbdzmq)"
    if done.returncode != 0:
        return f"Rscript failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-300:]}"
    return None


def command(input_type: str) -> list[str]:
    """The argv of one container (the input type comes from CLIPPER_INPUT_TYPE)."""
    return ["sh", str(R_DIR / "clipper-r-container"), str(R_DIR / "examples" / "conformance.R")]


IMPLEMENTATION = Implementation(name="r", command=command, available=available)
