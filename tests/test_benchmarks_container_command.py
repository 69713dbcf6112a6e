"""``python -m benchmarks throughput --container-command``: the pipeline stage runs that program as its model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

import benchmarks.__main__ as bench_main
from benchmarks.procs import HOST, wait_ready
from benchmarks.throughput import start_clipper


def test_pipeline_runs_the_given_container(tmp_path: Path) -> None:
    # The conformance model answers "<n>:<sum>", not the no-op's "1.0": the answer shows which container ran.
    argv = [sys.executable, "-m", "clipper.model_runtime", "--predict", "tests.conformance.python_model:predict"]
    port, procs = start_clipper("bench", tmp_path, container=argv)
    try:
        wait_ready(port, "bench", procs, 30.0)
        r = requests.post(f"http://{HOST}:{port}/bench/predict", json={"input": [1.0, 2.0, 4.0]}, timeout=10)
        assert r.json() == {"query_id": r.json()["query_id"], "output": "3:7", "default": False}
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--container-command", "  "], "--container-command: it is empty"),
    (["--container-command", "x 'y"], "--container-command: No closing quotation"),
    (["--container-command", "x", "--workers", "2"], "--workers 1"),
])
def test_bad_container_command(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench_main.main(["throughput", *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
