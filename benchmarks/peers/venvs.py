"""One virtual environment per peer under ``benchmarks/peers/.venvs/`` (git-ignored).

Each is installed from its lock file ``benchmarks/peers/requirements/<peer>.txt`` (``pip
freeze`` of a working install, Python 3.11), so the peers never touch the project's packages.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from benchmarks.procs import log

HERE = Path(__file__).resolve().parent
VENVS_DIR = HERE / ".venvs"
REQUIREMENTS_DIR = HERE / "requirements"
_MARKER = ".peers-requirements.sha256"


def requirements_file(peer: str) -> Path:
    """The lock file of ``peer``."""
    return REQUIREMENTS_DIR / f"{peer}.txt"


def venv_python(peer: str) -> Path:
    """The interpreter of ``peer``'s virtual environment (it may not exist yet)."""
    return VENVS_DIR / peer / "bin" / "python"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(cmd: list[str], what: str) -> None:
    """Run ``cmd`` with its output on our stderr; RuntimeError if it fails."""
    log(f"{what}: {' '.join(cmd)}")
    proc = subprocess.run(cmd, check=False, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {proc.returncode}")


def ensure(peer: str, reinstall: bool = False) -> Path:
    """Create or update ``peer``'s venv unless it matches its lock file; return its python."""
    reqs = requirements_file(peer)
    if not reqs.is_file():
        raise RuntimeError(f"no lock file {reqs}")
    venv = VENVS_DIR / peer
    python = venv_python(peer)
    marker = venv / _MARKER
    digest = _digest(reqs)
    if not reinstall and python.exists() and marker.is_file() and marker.read_text().strip() == digest:
        log(f"{peer}: venv up to date ({venv})")
        return python
    if reinstall or not python.exists():
        log(f"{peer}: creating venv {venv} with {sys.executable}")
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"{peer}: venv")
    marker.unlink(missing_ok=True)
    log(f"{peer}: installing {reqs.relative_to(HERE.parent.parent)} (may take minutes)")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "--progress-bar", "off"]
    _run([*pip, "-r", str(reqs)], f"{peer}: pip install")
    marker.write_text(digest + "\n")
    log(f"{peer}: venv ready")
    return python
