"""The `harness` fixture of the microbenchmarks (see `harness.py`): one engine, query server and replica per run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.micro.harness import Harness


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()
