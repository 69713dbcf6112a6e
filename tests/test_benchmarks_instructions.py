"""``python -m benchmarks instructions``: instructions per request under callgrind, and the harness's spin switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.instructions import InstructionsOptions, measure, valgrind_available
from benchmarks.procs import wait_ready
from benchmarks.throughput import start_clipper, start_floor


def test_the_pipeline_starts_with_its_spin_off_when_asked(tmp_path: Path) -> None:
    for spin in (True, False):
        work = tmp_path / f"spin-{spin}"
        work.mkdir()
        port, procs = start_clipper("bench", work, spin=spin)
        try:
            wait_ready(port, "bench", procs, 30.0)
            frontend, container = (p.popen.pid for p in procs)
            argv = Path(f"/proc/{frontend}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{container}/environ").read_bytes().split(b"\0")
            assert (b"--no-spin" in argv) is not spin
            assert (b"CLIPPER_SPIN=0" in environ) is not spin
        finally:
            for p in reversed(procs):
                p.stop()


@pytest.mark.slow
@pytest.mark.skipif(not valgrind_available(), reason="valgrind is not installed (apt-get install valgrind)")
def test_the_floor_costs_the_same_instructions_per_request_twice(tmp_path: Path) -> None:
    """Counts, not times: two runs of the floor under callgrind agree to within 2%, whatever the machine does."""
    opts = InstructionsOptions(requests=150, warmup=50)

    def floor(work: Path, cg):  # noqa: ANN001, ANN202
        return start_floor(work, wrap=cg.wrap)

    first, second = (measure("floor", floor, 1, opts, seed) for seed in (10, 20))
    a, b = first["instructions_per_request"]["floor"], second["instructions_per_request"]["floor"]
    assert 5_000 < a < 500_000, first  # a Python HTTP answer: thousands of instructions, not millions
    assert abs(a - b) / a < 0.02, (first, second)
    assert first["per_thread"]["floor"], first
