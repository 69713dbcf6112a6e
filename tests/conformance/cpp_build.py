"""Builds the C++ container library and its examples (``containers/cpp``) once, with CMake, into a cache.

    from tests.conformance import cpp_build
    reason = cpp_build.unavailable()          # None, or why it cannot be built here
    noop = cpp_build.binary("clipper-noop")   # builds first if needed (incremental), returns the path

``python -m tests.conformance.cpp_build`` builds and prints the binaries' directory. The build directory
is ``$CLIPPER_CPP_BUILD_DIR``, else ``~/.cache/clipper/cpp-build/<checkout hash>`` (one per checkout);
builds are serialized with a file lock and run ``cmake --build -j2``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "containers" / "cpp"
BINARIES = ("clipper-noop", "clipper-conformance", "clipper-sleep")


class CppBuildError(RuntimeError):
    """CMake or the compiler failed (the message holds the tail of their output)."""


def build_dir() -> Path:
    env = os.environ.get("CLIPPER_CPP_BUILD_DIR")
    if env:
        return Path(env)
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(SOURCE).encode()).hexdigest()[:12]
    return cache_root / "clipper" / "cpp-build" / key


@cache
def unavailable() -> str | None:
    """None when cmake, a C++20 compiler, libzmq and cppzmq are here; else what is missing (apt packages)."""
    missing = [tool for tool in ("cmake", "pkg-config") if shutil.which(tool) is None]
    if shutil.which("c++") is None and shutil.which("g++") is None:
        missing.append("g++")
    if shutil.which("pkg-config") and subprocess.run(["pkg-config", "--exists", "libzmq"]).returncode != 0:
        missing.append("libzmq3-dev")
    if not Path("/usr/include/zmq.hpp").is_file() and not Path("/usr/local/include/zmq.hpp").is_file():
        missing.append("cppzmq-dev")
    if missing:
        return f"the C++ container cannot be built here: apt-get install {' '.join(missing)}"
    return None


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise CppBuildError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")


@cache
def build() -> Path:
    """Configures (once) and builds containers/cpp; returns the directory holding the binaries."""
    reason = unavailable()
    if reason:
        raise CppBuildError(reason)
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "CMakeCache.txt").is_file():
            _run(["cmake", "-S", str(SOURCE), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"])
        _run(["cmake", "--build", str(out), "-j2"])
    return out


def binary(name: str) -> Path:
    """The path of a built example (``clipper-noop``, ``clipper-conformance``), built first if needed."""
    path = build() / name
    if not path.is_file():
        raise CppBuildError(f"{path} was not built")
    return path


def built_binary(name: str) -> Path | None:
    """The path of an example if it was built already (builds nothing)."""
    path = build_dir() / name
    return path if path.is_file() else None


if __name__ == "__main__":
    try:
        print(build())
    except CppBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
