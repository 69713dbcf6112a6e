"""What a user who only `pip install`s gets: the sdist's contents, the split between the core package
and the `admin` extra, the Debian mirror taken from apt's configuration. (`scripts/check_package.sh`
goes further: it builds and installs the sdist and the wheel in clean environments.)"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_frontends_and_runtime_import_without_the_admin_extra() -> None:
    """With requests and docker absent, the frontends and the model runtime import; the admin side says
    which extra it needs."""
    code = (
        "import sys\n"
        "sys.modules['requests'] = None\n"
        "sys.modules['docker'] = None\n"
        "import clipper.frontend.query, clipper.frontend.management.server, clipper.model_runtime.runtime\n"
        "import clipper\n"
        "try:\n"
        "    clipper.ClipperConnection\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "pip install 'clipper-serving[admin]'" in out.stdout


def test_the_image_requirements_leave_the_admin_side_out() -> None:
    pinned = (REPO / "containers" / "requirements.txt").read_text().lower()
    names = {line.split("==")[0].strip() for line in pinned.splitlines() if "==" in line}
    assert {"numpy", "uvloop"} <= names
    assert "pyzmq" not in names, "the runtime speaks ZMTP itself (rust_core)"
    assert not names & {"requests", "docker", "urllib3"}


def test_claims_hold() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floor = project["requires-python"].removeprefix(">=")
    assert sys.version_info[:2] >= tuple(int(x) for x in floor.split(".")), "the suite runs on the floor it names"
    versions = [c.rsplit(":: ", 1)[1] for c in project["classifiers"]
                if c.startswith("Programming Language :: Python :: 3.")]
    assert versions == [floor], "classifiers name only the tested version"
    assert (REPO / project["license-files"][0]).read_text().startswith("\n                                 Apache")
    assert not any(d.startswith("pyzmq") for d in project["dependencies"]), "ZMTP is rust_core's: no ZeroMQ library"
    assert not any(d.startswith(("requests", "docker")) for d in project["dependencies"])
    assert {d.split(">")[0] for d in project["optional-dependencies"]["admin"]} == {"requests", "docker"}


@pytest.mark.slow
def test_the_sdist_holds_what_a_build_needs(tmp_path: Path) -> None:
    """The sdist carries the Rust crate, the Cargo files, the C header, the Cython sources and the image
    recipes (scripts/check_package.sh then builds a wheel from it alone)."""
    out = subprocess.run([sys.executable, "-m", "build", "--sdist", "-o", str(tmp_path), str(REPO)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (sdist,) = tmp_path.glob("clipper_serving-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    expected = {"Cargo.toml", "Cargo.lock", "LICENSE", "setup.py", "pyproject.toml", "rust_core/Cargo.toml",
                "rust_core/include/clipper_capi.h", "_core/_core.pyx", "containers/requirements.txt",
                "containers/python-runtime/Dockerfile", "containers/base/mkrootfs.sh"}
    expected |= {f"rust_core/src/{p.name}" for p in (REPO / "rust_core/src").glob("*.rs")}
    expected |= {f"_core/{p.name}" for p in (REPO / "_core").glob("*.pxi")}
    assert expected <= names, sorted(expected - names)
    assert not any(n.endswith((".so", ".pyc")) or n.startswith("target/") for n in names)
