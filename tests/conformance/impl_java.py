"""The Java container library (containers/java): its ``ConformanceModel`` example, built with build.sh into a
cache by `java_build` the first time `available()` is asked (again only when a source changes)."""

from __future__ import annotations

from . import Implementation, java_build


def _available() -> str | None:
    reason = java_build.unavailable()
    if reason:
        return reason
    try:
        java_build.build()
    except java_build.JavaBuildError as e:
        return f"building containers/java FAILED: {e}"
    return None


def _command(input_type: str) -> list[str]:
    # the input type comes from CLIPPER_INPUT_TYPE, like every container
    return java_build.command("ai.clipper.examples.ConformanceModel")


IMPLEMENTATION = Implementation(name="java", command=_command, available=_available)
