"""``python -m benchmarks costs``: the request bodies predict.lua builds, and each curve run once with tiny settings."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

import benchmarks.__main__ as bench_main
from benchmarks import costs, report
from clipper.state.redis_server import redis_server_binary


@pytest.mark.parametrize(("kind", "size"), [("doubles", 4), ("doubles", 1000), ("bytes", 1024), ("bytes", 1000)])
def test_body_file_makes_inputs_of_the_size_and_unique(kind: str, size: int, tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    length = costs.write_body(kind, size, path)
    template = path.read_text()
    fmt = costs.UNIQUE_FORMAT[kind]
    # what predict.lua sends: the marker replaced with string.format(FORMAT, seed, thread id, counter)
    bodies = [template.replace("@UNIQUE@", fmt % (1_234_567, t, n)) for t, n in ((1, 1), (1, 2), (2, 1))]
    assert {len(b) for b in bodies} == {length}
    inputs = [json.loads(b)["input"] for b in bodies]
    if kind == "doubles":
        assert all(len(x) == size and all(isinstance(v, float) for v in x) for x in inputs)
    else:
        assert all(len(base64.b64decode(x, validate=True)) == size for x in inputs)
    assert len({json.dumps(x) for x in inputs}) == 3
    with pytest.raises(ValueError):
        costs.write_body(kind, 3, path)


@pytest.mark.skipif(shutil.which("wrk") is None or redis_server_binary() is None, reason="needs wrk and redis-server")
@pytest.mark.parametrize("argv", [
    ["size", "--doubles", "4", "--bytes", "1024"],
    ["apps", "--apps", "2", "--served", "1", "--changes", "1"],
    ["replicas", "--replicas", "1", "--batch-sizes", "8"],
    ["connections", "--connections", "10"],
], ids=lambda argv: argv[0])
def test_each_curve_runs(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    assert bench_main.main(["costs", *argv, "--quick"]) == 0
    (path,) = tmp_path.glob("*.json")
    results = json.loads(path.read_text())
    assert results["benchmark"] == f"costs-{argv[0]}" and results["error"] is None
    rows = results["rows"]
    assert rows and all(r["throughput"] > 0 and r["errors"] == r["non_2xx"] == 0 for r in rows)
    assert all(r["cpu_us_per_request"]["frontend"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "req/s" in out or "answers/s" in out
