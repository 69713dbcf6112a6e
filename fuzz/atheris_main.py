"""Runs one Python target under atheris (libFuzzer):

    python -m fuzz.atheris_main <target> [libFuzzer options] [corpus dirs]

e.g. `python -m fuzz.atheris_main http_request -max_total_time=60 /tmp/work fuzz/corpus/http_request`.
The first corpus directory receives the new inputs; crashes go to -artifact_prefix. `python -m fuzz`
runs every target this way with sensible options.

FUZZ_IGNORE="text1|text2": failures whose message contains one of these texts are not crashes, so
that fuzzing can go on past a known bug that is not fixed yet (never set it in CI).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys

import atheris

from . import PYTHON_TARGETS
from .common import FEATURES

_EXIT_HANDLERS = []


def _on_c_exit(callback) -> None:
    """Runs `callback` at C exit(): libFuzzer ends the process with exit(), skipping Python's atexit.

    (A crash ends it with _exit(): then `python -m fuzz`, which runs each target in its own process
    group, kills what is left.)"""
    handler = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)(lambda status, arg: callback())
    _EXIT_HANDLERS.append(handler)  # keep it alive
    ctypes.CDLL(None).on_exit(handler, None)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in PYTHON_TARGETS:
        raise SystemExit(f"usage: python -m fuzz.atheris_main <{'|'.join(PYTHON_TARGETS)}> [libFuzzer args]")
    name = argv[1]
    with atheris.instrument_imports(include=["clipper"]):
        module = importlib.import_module(PYTHON_TARGETS[name])
        target = module.setup()
    redis_server = getattr(target, "redis_server", None)
    if redis_server is not None and redis_server.proc is not None:
        pid = redis_server.proc.pid
        _on_c_exit(lambda: os.kill(pid, signal.SIGKILL))
    limit = getattr(module, "RECURSION_LIMIT", None)
    if limit:  # unbounded recursion on input then shows with short inputs (pytest keeps the normal limit)
        sys.setrecursionlimit(limit)
    FEATURES.enable()
    check = target.check
    ignored = [text for text in os.environ.get("FUZZ_IGNORE", "").split("|") if text]
    if ignored:
        def check(data: bytes) -> None:
            try:
                target.check(data)
            except Exception as e:
                if not any(text in str(e) for text in ignored):
                    raise
    # libFuzzer re-runs argv[0] through the shell for -merge=1 and -fork: make it the command that got us here
    atheris.Setup([f"{sys.executable} -m fuzz.atheris_main {name}", *argv[2:]], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
