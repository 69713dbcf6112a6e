"""The C++ container library (containers/cpp): its ``clipper-conformance`` example, built with CMake into a
cache by `cpp_build` the first time `available()` is asked (incremental afterwards)."""

from __future__ import annotations

from . import Implementation, cpp_build


def _available() -> str | None:
    reason = cpp_build.unavailable()
    if reason:
        return reason
    try:
        cpp_build.build()
    except cpp_build.CppBuildError as e:
        return f"building containers/cpp FAILED: {e}"
    return None


def _command(input_type: str) -> list[str]:
    path = cpp_build.built_binary("clipper-conformance")
    if path is None:
        raise RuntimeError("clipper-conformance is not built: call available() first (it builds containers/cpp)")
    return [str(path)]  # the input type comes from CLIPPER_INPUT_TYPE, like every container


IMPLEMENTATION = Implementation(name="cpp", command=_command, available=_available)
