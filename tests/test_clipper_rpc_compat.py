"""Clipper's own Python model container (`containers/python/rpc.py`, unmodified) against our query frontend.

The test starts `python -m clipper.frontend.query` on free 127.0.0.1 ports, then two model-container
processes whose driver script (generated here into pytest's tmp_path) imports Clipper's `rpc.py` from
the folder `CLIPPER_RPC_PY` points to, subclasses `rpc.ModelContainerBase` and calls
`rpc.RPCService(collect_metrics=False).start(model)`, exactly as Clipper's `*_container.py` scripts do.
It checks over REST: registration (the app stops answering with its default), a single doubles input,
`input_batch`es of equal and of different lengths (the two input paths of rpc.py), and a strings app
(UTF-8, bytes on the Python side).

No Clipper code lives in this repository: the module is skipped unless `CLIPPER_RPC_PY` is set.

What the driver does around rpc.py (rpc.py itself is imported as is):
* `import clipper_admin.metrics` (a top-level import of rpc.py) is satisfied by an empty stub module. The
  real one pulls in the whole `clipper_admin` package (docker, kubernetes, ...) and starts a
  `redis-server` daemon on import; it is only used when metrics are collected, and the driver passes
  `collect_metrics=False` (which also skips the `clipper_admin.metrics.server` subprocess and 5 s sleep).
* `RPCService.start` writes `/model_is_ready.check`; the driver shadows `open` in rpc's module globals so
  that this one path goes to tmp_path instead (and the test checks the file was written).
* Real dependencies rpc.py imports: pyzmq, numpy, PyYAML, prometheus_client (`pip install
  prometheus_client`; the others are already needed by this project or its tests).

Reproduce (the clipper checkout is any clone of https://github.com/ucbrise/clipper, e.g. HEAD 9f25e3fc):

    mkdir -p /tmp/clipper_rpc
    git --git-dir=/path/to/clipper/.git show HEAD:containers/python/rpc.py > /tmp/clipper_rpc/rpc.py
    # or: curl -fsSL https://raw.githubusercontent.com/ucbrise/clipper/develop/containers/python/rpc.py \\
    #        -o /tmp/clipper_rpc/rpc.py
    pip install prometheus_client pyyaml
    CLIPPER_RPC_PY=/tmp/clipper_rpc/rpc.py python -m pytest -v tests/test_clipper_rpc_compat.py   # in this checkout
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from clipper.ports import free_port

RPC_PY = os.environ.get("CLIPPER_RPC_PY")
if not RPC_PY:
    pytest.skip("set CLIPPER_RPC_PY to Clipper's containers/python/rpc.py to run", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 20.0  # frontend up, containers registered
REQUEST_TIMEOUT_S = 10.0  # one HTTP request (the SLO is 2 s)
TEST_TIMEOUT_S = 60  # hard bound per test (SIGALRM)

DRIVER = r'''
"""Model container driver for the compatibility test: Clipper's rpc.py, imported unmodified."""
import builtins
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(os.environ["CLIPPER_RPC_PY"])))

# rpc.py does `import clipper_admin.metrics as metrics` at top level; it is only used with metrics on.
_admin = types.ModuleType("clipper_admin")
_admin.__path__ = []
_metrics = types.ModuleType("clipper_admin.metrics")


def _no_metrics(*args, **kwargs):
    raise RuntimeError("metrics are disabled in this driver")


_metrics.add_metric = _metrics.report_metric = _no_metrics
_admin.metrics = _metrics
sys.modules["clipper_admin"] = _admin
sys.modules["clipper_admin.metrics"] = _metrics

import rpc  # noqa: E402  Clipper's containers/python/rpc.py

READY_FILE = os.environ["TEST_READY_FILE"]


def _open(path, *args, **kwargs):
    if path == "/model_is_ready.check":
        path = READY_FILE
    return builtins.open(path, *args, **kwargs)


rpc.open = _open  # module global shadows the builtin for rpc.py's code only


class CompatModel(rpc.ModelContainerBase):
    def predict_doubles(self, inputs):
        return [
            json.dumps({"sum": float(sum(float(v) for v in x)), "len": len(x), "dtype": str(x.dtype),
                        "batch": len(inputs)})
            for x in inputs
        ]

    def predict_strings(self, inputs):
        return [
            json.dumps({"type": type(x).__name__, "nbytes": len(x), "reversed": x.decode("utf-8")[::-1],
                        "batch": len(inputs)})
            for x in inputs
        ]


if __name__ == "__main__":
    print("compat driver: rpc.py from", rpc.__file__, flush=True)
    rpc.RPCService(collect_metrics=False).start(CompatModel())
'''



def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Stack:
    http: str
    rpc_port: int
    tmp: Path
    procs: dict[str, tuple[subprocess.Popen, Path]] = field(default_factory=dict)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ({log}) ---\n{tail(log)}" for name, (_, log) in self.procs.items())

    def predict(self, app: str, body: dict) -> dict:
        r = requests.post(f"{self.http}/{app}/predict", json=body, timeout=REQUEST_TIMEOUT_S)
        assert r.status_code == 200, f"{r.status_code} {r.text}\n{self.logs()}"
        return r.json()

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=f, stderr=subprocess.STDOUT)
        self.procs[name] = (proc, log)

    def check_alive(self) -> None:
        for name, (proc, _) in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"


@pytest.fixture(autouse=True)
def time_bound() -> Iterator[None]:
    def expired(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    rpc_py = Path(RPC_PY).resolve()
    assert rpc_py.is_file(), f"CLIPPER_RPC_PY={RPC_PY} is not a file"
    missing = [m for m in ("zmq", "numpy", "yaml", "prometheus_client") if importlib.util.find_spec(m) is None]
    assert not missing, f"Clipper's rpc.py imports {missing}: pip install pyzmq numpy pyyaml prometheus_client"

    tmp = tmp_path_factory.mktemp("clipper_rpc_compat")
    config = {
        "apps": [
            {"name": "a", "input_type": "doubles", "latency_slo_micros": 2_000_000, "default_output": "-1.0",
             "models": ["m"]},
            {"name": "s", "input_type": "strings", "latency_slo_micros": 2_000_000, "default_output": "-1.0",
             "models": ["ms"]},
        ],
        "models": [
            {"name": "m", "version": "1", "input_type": "doubles"},
            {"name": "ms", "version": "1", "input_type": "strings"},
        ],
    }
    (tmp / "config.json").write_text(json.dumps(config))
    (tmp / "driver.py").write_text(DRIVER)
    http_port, rpc_port = free_port(), free_port()
    st = Stack(http=f"http://127.0.0.1:{http_port}", rpc_port=rpc_port, tmp=tmp)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPPER_")}
    base_env["PYTHONUNBUFFERED"] = "1"
    try:
        st.spawn(
            "frontend",
            [sys.executable, "-m", "clipper.frontend.query", "--config", str(tmp / "config.json"),
             "--port", str(http_port), "--rpc-port", str(rpc_port), "--log-level", "INFO"],
            {**base_env, "PYTHONPATH": str(REPO)},
        )
        for model, input_type in (("m", "doubles"), ("ms", "strings")):
            st.spawn(
                f"container-{model}",
                [sys.executable, str(tmp / "driver.py")],
                {**base_env, "CLIPPER_RPC_PY": str(rpc_py), "TEST_READY_FILE": str(tmp / f"{model}.ready"),
                 "CLIPPER_MODEL_NAME": model, "CLIPPER_MODEL_VERSION": "1", "CLIPPER_IP": "127.0.0.1",
                 "CLIPPER_PORT": str(rpc_port), "CLIPPER_INPUT_TYPE": input_type,
                 "CLIPPER_MODEL_PATH": str(tmp)},
            )
        yield st
    finally:
        for proc, _ in reversed(list(st.procs.values())):
            stop(proc)


def wait_registered(st: Stack, app: str, body: dict) -> dict:
    """Polls the app until a prediction comes from the model (default false); the reply."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        st.check_alive()
        try:
            last = st.predict(app, body)
            if last.get("default") is False:
                return last
        except requests.ConnectionError as e:  # frontend not listening yet
            last = e
        time.sleep(0.1)
    raise AssertionError(f"app {app!r} never served a model prediction; last: {last!r}\n{st.logs()}")


def test_registration(stack: Stack) -> None:
    for app, body in (("a", {"input": [1.0]}), ("s", {"input": "x"})):
        reply = wait_registered(stack, app, body)
        assert set(reply) >= {"query_id", "output", "default"} and reply["default"] is False, reply
        assert "default_explanation" not in reply, reply
    for model in ("m", "ms"):
        assert (stack.tmp / f"{model}.ready").read_text() == "READY"  # RPCService.start ran


def test_doubles_single_input(stack: Stack) -> None:
    wait_registered(stack, "a", {"input": [0.5]})
    reply = stack.predict("a", {"input": [1.0, 2.0, 3.5]})
    assert reply["default"] is False, reply
    out = reply["output"]
    assert out["sum"] == 6.5 and out["len"] == 3 and out["dtype"] == "float64", reply


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([[1.0], [2.0, 3.0], [4.0, 5.0, 6.0], [0.25, -1.5, 1e3, 7.0]], id="different-lengths"),
        pytest.param([[1.0, 2.0], [3.0, 4.0], [-5.5, 0.5]], id="equal-lengths"),
        pytest.param([[float(i)] * (1 + i % 7) for i in range(40)], id="forty-mixed"),
    ],
)
def test_doubles_input_batch(stack: Stack, batch: list[list[float]]) -> None:
    wait_registered(stack, "a", {"input": [0.5]})
    reply = stack.predict("a", {"input_batch": batch})
    preds = reply["batch_predictions"]
    assert len(preds) == len(batch), reply
    for x, p in zip(batch, preds, strict=True):
        assert p["default"] is False, p
        assert p["output"]["sum"] == pytest.approx(sum(x)) and p["output"]["len"] == len(x), (x, p)
        assert p["output"]["dtype"] == "float64", p
    assert len({p["query_id"] for p in preds}) == len(batch), preds


def test_strings(stack: Stack) -> None:
    wait_registered(stack, "s", {"input": "x"})
    reply = stack.predict("s", {"input": "hello world"})
    assert reply["default"] is False, reply
    out = reply["output"]
    assert (out["type"], out["nbytes"], out["reversed"]) == ("bytes", 11, "dlrow olleh"), reply

    words = ["abc", "héllo wörld", "日本語", "a longer string with spaces, commas and \"quotes\""]
    preds = stack.predict("s", {"input_batch": words})["batch_predictions"]
    assert len(preds) == len(words), preds
    for w, p in zip(words, preds, strict=True):
        assert p["default"] is False, p
        out = p["output"]
        assert out["type"] == "bytes" and out["nbytes"] == len(w.encode()) and out["reversed"] == w[::-1], (w, p)
