"""Builds the Java container library and its examples (``containers/java``) once, with its build.sh, into a cache.

    from tests.conformance import java_build
    reason = java_build.unavailable()        # None, or why it cannot be built here
    argv = java_build.command("ai.clipper.examples.ConformanceModel")   # builds first if needed

``python -m tests.conformance.java_build`` builds and prints the jars' directory. The jars go to
``$CLIPPER_JAVA_BUILD_DIR``, else ``~/.cache/clipper/java-build/<hash of the sources>`` (a rebuild only when
a source changes); builds are serialized with a file lock. The ZeroMQ binding: ``$CLIPPER_ZMQ_JAR``, else
libzmq-java (JNI over libzmq) when its native library is installed, else JeroMQ.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "containers" / "java"
JARS = ("clipper-container.jar", "clipper-examples.jar")
ENTRY_POINT = "ai.clipper.container.ModelContainer"


class JavaBuildError(RuntimeError):
    """build.sh (javac, jar) failed (the message holds the tail of its output)."""


def zmq_jar() -> Path | None:
    """The ZeroMQ binding to build and run with: CLIPPER_ZMQ_JAR, else libzmq-java with its JNI library, else JeroMQ."""
    env = os.environ.get("CLIPPER_ZMQ_JAR")
    if env:
        return Path(env) if Path(env).is_file() else None
    jni = glob.glob("/usr/lib/*/jni/libjzmq.so") + glob.glob("/usr/lib/jni/libjzmq.so")
    if jni and Path("/usr/share/java/zmq.jar").is_file():
        return Path("/usr/share/java/zmq.jar")
    jeromq = Path("/usr/share/java/jeromq.jar")
    return jeromq if jeromq.is_file() else None


def _sources() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*") if p.is_file() and "build" not in p.relative_to(SOURCE).parts)


def build_dir() -> Path:
    env = os.environ.get("CLIPPER_JAVA_BUILD_DIR")
    if env:
        return Path(env)
    h = hashlib.sha256(str(zmq_jar()).encode())
    for p in _sources():
        h.update(str(p.relative_to(SOURCE)).encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "clipper" / "java-build" / h.hexdigest()[:16]


@cache
def unavailable() -> str | None:
    """None when java, javac, jar and a ZeroMQ Java binding are here; else what is missing (apt packages)."""
    missing = []
    if shutil.which("java") is None or shutil.which("javac") is None or shutil.which("jar") is None:
        missing.append("default-jdk-headless")
    if zmq_jar() is None:
        if os.environ.get("CLIPPER_ZMQ_JAR"):
            return f"CLIPPER_ZMQ_JAR={os.environ['CLIPPER_ZMQ_JAR']} is not a file"
        missing.append("libzmq-java")
    if missing:
        return f"the Java container cannot be built here: apt-get install {' '.join(missing)}"
    return None


@cache
def build() -> Path:
    """Builds containers/java (unless this version of its sources is built already); returns the jars' directory."""
    reason = unavailable()
    if reason:
        raise JavaBuildError(reason)
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((out / jar).is_file() for jar in JARS) and not os.environ.get("CLIPPER_JAVA_BUILD_DIR"):
            return out
        env = {**os.environ, "CLIPPER_ZMQ_JAR": str(zmq_jar())}
        proc = subprocess.run(["sh", str(SOURCE / "build.sh"), str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise JavaBuildError(f"containers/java/build.sh failed (exit {proc.returncode}):\n{tail}")
    return out


def classpath(*extra: str | Path) -> str:
    """The class path of a container: the library, the examples, the ZeroMQ binding and `extra` (builds first)."""
    out = build()
    return os.pathsep.join([str(out / JARS[0]), str(out / JARS[1]), str(zmq_jar()), *map(str, extra)])


def command(model_class: str | None = None) -> list[str]:
    """The argv of a container serving `model_class` (else CLIPPER_MODEL_CLASS / CLIPPER_MODEL_PATH decide)."""
    return ["java", "-cp", classpath(), ENTRY_POINT, *([model_class] if model_class else [])]


if __name__ == "__main__":
    try:
        print(build())
    except JavaBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
