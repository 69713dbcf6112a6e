"""The examples in examples/, run end to end as their users run them: a subprocess each, real clusters.

Each run starts its own local cluster on free ports (`--free-ports`, in a temporary `--cluster-dir`), and
must print right answers, stop the cluster and leave its ports free. (examples/quickstart.py is run, in
its own words, by test_quickstart.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SERVING = re.compile(r"Serving \S+ at http://127\.0\.0\.1:(\d+)/")
TIMEOUT_S = 120


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_example(name: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(EXAMPLES / name), "--free-ports", "--cluster-name", f"{Path(name).stem}-test",
            "--cluster-dir", str(tmp_path / "cluster"), *args]
    return subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def assert_stopped(stdout: str, tmp_path: Path) -> None:
    """The example said it stopped the cluster, its query port is free and its state is gone."""
    match = SERVING.search(stdout)
    assert match, stdout
    assert stdout.rstrip().endswith("Stopped"), stdout
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(match.group(1)))) != 0, "the query frontend still listens"
    assert not (tmp_path / "cluster" / "cluster.json").exists(), "the cluster state file is left behind"


def answer_lines(stdout: str) -> list[tuple[dict, list[float]]]:
    """basic_query's answer lines: (answer, the sums the client expects)."""
    lines = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            answer, _, rest = line.partition("  expected ")
            expected = [float(x) for x in rest.rsplit("  ", 1)[0].split(", ")]
            assert rest.endswith(" ms"), line
            lines.append((json.loads(answer), expected))
    return lines


def test_basic_query(tmp_path: Path) -> None:
    done = run_example("basic_query.py", tmp_path, "--count", "5", "--input-size", "10", "--interval", "0",
                       "--seed", "7")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = answer_lines(done.stdout)
    assert len(lines) == 5, done.stdout
    for answer, (expected,) in lines:
        assert answer["default"] is False and answer["output"] == pytest.approx(expected, abs=1e-5), answer
    assert "5 requests, 0 default answers, latency p50" in done.stdout
    assert_stopped(done.stdout, tmp_path)


def test_basic_query_batches(tmp_path: Path) -> None:
    done = run_example("basic_query.py", tmp_path, "--count", "2", "--batch-size", "4", "--input-size", "3",
                       "--interval", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = answer_lines(done.stdout)
    assert len(lines) == 2, done.stdout
    for answer, expected in lines:
        outputs = [a["output"] for a in answer["batch_predictions"]]
        assert not any(a["default"] for a in answer["batch_predictions"]), answer
        assert outputs == pytest.approx(expected, abs=1e-5)
    assert_stopped(done.stdout, tmp_path)


def test_basic_query_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Without --count it queries until SIGINT (Ctrl-C), then stops the cluster and exits 0."""
    argv = [sys.executable, str(EXAMPLES / "basic_query.py"), "--free-ports", "--cluster-name", "basic-query-sigint",
            "--cluster-dir", str(tmp_path / "cluster"), "--interval", "0.05"]
    proc = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + TIMEOUT_S
        assert proc.stdout is not None
        while sum(line.startswith("{") for line in seen) < 3:
            assert time.monotonic() < deadline, seen
            line = proc.stdout.readline()
            assert line, f"the example ended early: {seen} {proc.stderr.read() if proc.stderr else ''}"
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(seen) + rest
    assert proc.returncode == 0, stdout + err
    assert "Interrupted" in rest and "Stopping Clipper..." in rest, stdout
    assert_stopped(stdout, tmp_path)


def _png(width: int, height: int, grey: bytes) -> bytes:
    """An 8-bit greyscale PNG; rows use filters None, Sub, Up, Average and Paeth in turn."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows, prior = b"", bytes(width)
    for y in range(height):
        row = grey[y * width:(y + 1) * width]
        kind = y % 5
        out = bytearray()
        for x in range(width):
            left = row[x - 1] if x else 0
            up, up_left = prior[x], (prior[x - 1] if x else 0)
            p = left + up - up_left
            paeth = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - up_left), 2, up_left))[2]
            predictor = [0, left, up, (left + up) // 2, paeth][kind]
            out.append((row[x] - predictor) & 0xFF)
        rows += bytes([kind]) + bytes(out)
        prior = row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_image_query(tmp_path: Path) -> None:
    """Files given on the command line: a PNG with every row filter, a PGM with a comment, a file that is no image."""
    grey = bytes((x * 37 + y * 11) % 256 for y in range(10) for x in range(7))
    (tmp_path / "filters.png").write_bytes(_png(7, 10, grey))
    (tmp_path / "small.pgm").write_bytes(b"P5\n# two rows\n3 2\n255\n" + bytes([0, 10, 20, 30, 40, 50]))
    (tmp_path / "notes.txt").write_bytes(b"not an image")
    done = run_example("image_query.py", tmp_path, *(str(tmp_path / n) for n in ("filters.png", "small.pgm",
                                                                                  "notes.txt")))
    assert done.returncode == 1, done.stdout + done.stderr  # one answer was an error
    answers = {}
    for line in done.stdout.splitlines():
        name, sep, rest = line.partition(" bytes): ")
        if sep:
            answers[name.split(" (")[0]] = json.loads(rest.rsplit("  ", 1)[0])
    assert set(answers) == {"filters.png", "small.pgm", "notes.txt"}, done.stdout
    assert all(a["default"] is False for a in answers.values()), answers
    assert answers["filters.png"]["output"] == {"format": "png", "width": 7, "height": 10, "channels": 1,
                                                "mean": round(sum(grey) / len(grey), 3)}
    assert answers["small.pgm"]["output"] == {"format": "pgm", "width": 3, "height": 2, "channels": 1,
                                              "mean": 25.0}
    assert answers["notes.txt"]["output"]["error"].startswith("ValueError: not a PNG, PGM or PPM image")
    assert_stopped(done.stdout, tmp_path)


def test_image_query_samples(tmp_path: Path) -> None:
    """No files: the generated samples, cycled through for --count requests."""
    done = run_example("image_query.py", tmp_path, "--count", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = [json.loads(line.partition(" bytes): ")[2].rsplit("  ", 1)[0])["output"]
               for line in done.stdout.splitlines() if " bytes): " in line]
    assert [(o["format"], o["width"], o["height"], o["channels"]) for o in outputs] == [
        ("png", 64, 48, 3), ("pgm", 32, 32, 1), ("ppm", 20, 10, 3), ("png", 64, 48, 3)]
    assert outputs[1]["mean"] == 127.5 and outputs[2]["mean"] == pytest.approx((200 + 100 + 50) / 3, abs=1e-3)
    assert_stopped(done.stdout, tmp_path)
