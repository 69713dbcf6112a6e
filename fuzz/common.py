"""What the targets share: the Failure exception, outcome features for atheris, RPC frame splitting."""

from __future__ import annotations

import re
import zlib


class Failure(AssertionError):
    """An invariant that did not hold for a fuzz input: a bug (or a wrong invariant)."""


class Features:
    """Outcome features turned into coverage for atheris.

    Most of the code a query takes is compiled (the Cython `_core`, the Rust HTTP parser and engine, orjson):
    atheris sees Python bytecode only, so on its own it would get almost no feedback there. Targets
    therefore report what they observe (status, error kind, a template of the error text, ...) here;
    each distinct feature bumps one of `size` extra libFuzzer counters, so an input that produces a new
    kind of outcome is kept in the corpus like one that reaches new code. Outside atheris it is a no-op.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._atheris = None
        self._counters: list[int] = []

    def enable(self) -> None:
        """Reserves the counters (call before `atheris.Fuzz`)."""
        import atheris

        self._counters = [atheris._reserve_counter() for _ in range(self.size)]
        self._atheris = atheris  # atheris.Setup rebinds atheris._trace_branch: look it up at each call

    def __call__(self, *feature: object) -> None:
        if self._atheris is not None:
            self._atheris._trace_branch(self._counters[zlib.crc32(repr(feature).encode()) % self.size])


FEATURES = Features()

_QUOTED = re.compile(r"'.*'|\".*\"")  # greedy: a quoted name may hold quotes
_WORD = re.compile(r"[A-Za-z]{1,20}[,.:]?\Z")


def template(text: str, words: int = 8) -> str:
    """The shape of an error text, for features: its first words, with quoted parts and every word that
    is not plain letters (numbers, paths, names with digits or symbols) replaced by a placeholder, so that
    inputs differing only in a name or number do not count as new outcomes."""
    shape = [w if _WORD.match(w) else "_" for w in _QUOTED.sub("Q", text).split()[:words]]
    return " ".join(shape)


MAX_FRAMES = 64


def split_frames(data: bytes) -> list[bytes]:
    """The frames of an RPC fuzz input: one-byte length L, then L bytes, repeated (as rust_core/fuzz)."""
    frames: list[bytes] = []
    i = 0
    while i < len(data) and len(frames) < MAX_FRAMES:
        n = data[i]
        frames.append(data[i + 1:i + 1 + n])
        i += 1 + n
    return frames


def join_frames(frames: list[bytes]) -> bytes:
    """The fuzz input whose `split_frames` is `frames` (each frame at most 255 bytes)."""
    out = bytearray()
    for frame in frames:
        if len(frame) > 255:
            raise ValueError("a frame of a fuzz input has at most 255 bytes")
        out.append(len(frame))
        out += frame
    return bytes(out)
