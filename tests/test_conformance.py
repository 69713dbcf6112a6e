"""The conformance suite: every model-container implementation (tests/conformance/impl_*.py) against real query
frontends (``python -m clipper.frontend.query``) and real container processes.

Each implementation runs the "conformance" model (docs/containers.md): for each input the answer
``"<n>:<sum>"`` (numbers, bytes) or ``"<utf-8 length>:<string>"``; a poisoned input fails the batch with the
error marker. The cases are listed, by name, in `tests.conformance.CASES`; an implementation skips the cases
its `deviations` names (with the reason), and the whole implementation when `available()` says why.

Run one implementation: ``python -m pytest tests/test_conformance.py -k python`` (ids are ``[<impl>-<case>]``).
"""

from __future__ import annotations

import base64
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Frontend

from tests.conformance import CASES, INPUT_TYPES, Implementation, implementations

IMPLEMENTATIONS = implementations()
#: Every case has its answer within this (large inputs included); no answer in time fails the test.
SLO_MICROS = 5_000_000
DEFAULT_OUTPUT = "-1"
#: Hard bound per test (SIGALRM), so that a hung container fails its test, not the run.
TEST_TIMEOUT_S = 45
#: After the frontend restarts, the container must answer again within this.
RECONNECT_S = 15.0
BATCH = 64
POISON = {"integers": [-7, 1, 2], "floats": [-7.0, 1.0], "doubles": [-7.0, 2.5], "bytes": bytes([0xEE, 1, 2]),
          "strings": "poison"}


def model_name(input_type: str) -> str:
    return f"m-{input_type}"


def app_name(input_type: str) -> str:
    return f"a-{input_type}"


def frontend_config(input_types: tuple[str, ...] = INPUT_TYPES) -> dict[str, Any]:
    """One app and one model (version 1) per input type."""
    return {
        "apps": [{"name": app_name(t), "input_type": t, "latency_slo_micros": SLO_MICROS,
                  "default_output": DEFAULT_OUTPUT, "models": [model_name(t)]} for t in input_types],
        "models": [{"name": model_name(t), "version": "1", "input_type": t} for t in input_types],
    }


# ---------------------------------------------------------------------- the conformance model's answers


def expected(input_type: str, x: Any) -> str:
    """What the conformance model answers for input `x` (as sent: a list of numbers, bytes, or str)."""
    if input_type == "strings":
        return f"{len(x.encode())}:{x}"
    if input_type == "bytes":
        return f"{len(x)}:{sum(x)}"
    return f"{len(x)}:{sum(int(v) for v in x)}"  # integer-valued: truncation is exact


def rest_value(input_type: str, x: Any) -> Any:
    """`x` as the REST API takes it (bytes: base64)."""
    return base64.b64encode(x).decode() if input_type == "bytes" else x


def make_input(input_type: str, n: int, rng: random.Random) -> Any:
    """A random input of `n` elements that is not poisoned (integer-valued numbers, |x| < 2^20)."""
    if input_type == "strings":
        alphabet = "abcxyz 019,.\"\\/é日本語ß€\U0001f600\n\t"
        s = "".join(rng.choice(alphabet) for _ in range(n))
        return s if s != POISON["strings"] else s + "!"
    if input_type == "bytes":
        b = bytearray(rng.randrange(256) for _ in range(n))
        if b and b[0] == 0xEE:
            b[0] = 0xED
        return bytes(b)
    values = [rng.randrange(-(2**20) + 1, 2**20) for _ in range(n)]
    if values and values[0] == -7:
        values[0] = 7
    return values if input_type == "integers" else [float(v) for v in values]


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def time_bound() -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", params=IMPLEMENTATIONS, ids=[i.name for i in IMPLEMENTATIONS])
def impl(request: pytest.FixtureRequest) -> Implementation:
    """Each implementation in turn (skipped with its reason when it cannot run here)."""
    implementation: Implementation = request.param
    reason = implementation.available()
    if reason:
        pytest.skip(f"{implementation.name}: {reason}")
    return implementation


def require(impl: Implementation, case: str) -> None:
    """Skips `case` when `impl` lists it as a deviation."""
    assert case in CASES, f"unknown case {case!r}"
    if case in impl.deviations:
        pytest.skip(f"deviation of {impl.name}: {impl.deviations[case]}")


def start_container(cluster: Cluster, fe: Frontend, impl: Implementation, input_type: str,
                    env: dict[str, str] | None = None) -> subprocess.Popen:
    """One container of `impl` serving model_name(input_type) to `fe` (suite env, then the implementation's)."""
    return cluster.command_container(fe, model_name(input_type), impl.command(input_type), input_type=input_type,
                                     env={**(env or {}), **impl.env})


@dataclass
class Served:
    """A frontend with one app per input type, each served by one container of the implementation."""

    cluster: Cluster
    fe: Frontend
    containers: dict[str, subprocess.Popen]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.cluster.workdir.glob("*.log")))

    def check_alive(self) -> None:
        for t, proc in self.containers.items():
            assert proc.poll() is None, f"the {t} container exited with {proc.returncode}\n{self.logs()}"

    def predict(self, input_type: str, x: Any) -> dict[str, Any]:
        return self.fe.predict(app_name(input_type), rest_value(input_type, x))

    def predict_batch(self, input_type: str, xs: list[Any]) -> list[dict[str, Any]]:
        return self.fe.predict_batch(app_name(input_type), [rest_value(input_type, x) for x in xs])

    def check_answer(self, input_type: str, x: Any) -> None:
        reply = self.predict(input_type, x)
        assert reply["default"] is False, f"{reply}\n{self.logs()}"
        assert reply["output"] == expected(input_type, x), reply


@pytest.fixture(scope="module")
def served(impl: Implementation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cluster = Cluster(tmp_path_factory.mktemp(f"conformance-{impl.name}"))
    try:
        fe = cluster.frontend(frontend_config())
        containers = {t: start_container(cluster, fe, impl, t) for t in INPUT_TYPES}
        s = Served(cluster, fe, containers)
        for t in INPUT_TYPES:
            deadline = time.monotonic() + 20.0
            while fe.replicas(model_name(t)) < 1:
                s.check_alive()
                assert time.monotonic() < deadline, f"{impl.name}: the {t} container did not register\n{s.logs()}"
                time.sleep(0.05)
        yield s
    finally:
        cluster.close()


# ---------------------------------------------------------------------- cases over the shared frontend


@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_single(impl: Implementation, served: Served, input_type: str) -> None:
    require(impl, f"{input_type}-single")
    rng = random.Random(f"single-{input_type}")
    for n in (1, 3, 17):
        served.check_answer(input_type, make_input(input_type, n, rng))
    served.check_alive()


@pytest.mark.parametrize("same_length", [False, True], ids=["batch", "batch-same"])
@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_batch(impl: Implementation, served: Served, input_type: str, same_length: bool) -> None:
    require(impl, f"{input_type}-batch-same" if same_length else f"{input_type}-batch")
    rng = random.Random(f"batch-{input_type}-{same_length}")
    xs = [make_input(input_type, 8 if same_length else 1 + i % 23, rng) for i in range(BATCH)]
    preds = served.predict_batch(input_type, xs)
    assert len(preds) == BATCH, preds
    for x, p in zip(xs, preds, strict=True):
        assert p["default"] is False, f"{p}\n{served.logs()}"
        assert p["output"] == expected(input_type, x), (x, p)
    assert len({p["query_id"] for p in preds}) == BATCH
    served.check_alive()


@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_empty(impl: Implementation, served: Served, input_type: str) -> None:
    require(impl, f"{input_type}-empty")
    empty = make_input(input_type, 0, random.Random(0))
    reply = served.predict(input_type, empty)
    assert reply["default"] is False, f"{reply}\n{served.logs()}"
    assert reply["output"] == ("0:" if input_type == "strings" else "0:0"), reply
    served.check_alive()


@pytest.mark.parametrize(("input_type", "size"), [("doubles", 200_000), ("bytes", 1 << 20), ("strings", 1 << 20)],
                         ids=["doubles", "bytes", "strings"])
def test_large(impl: Implementation, served: Served, input_type: str, size: int) -> None:
    require(impl, f"{input_type}-large")
    rng = random.Random(f"large-{input_type}")
    if input_type == "strings":  # 1 MiB of UTF-8 with 1-, 2-, 3- and 4-byte characters
        unit = "a€é\U0001f600xyz日"  # 1 + 3 + 2 + 4 + 3 + 3 = 16 bytes
        x = unit * (size // len(unit.encode()))
        assert len(x.encode()) == size
    else:
        x = make_input(input_type, size, rng)
    reply = served.predict(input_type, x)
    assert reply["default"] is False, f"{str(reply)[:500]}\n{served.logs()}"
    assert reply["output"] == expected(input_type, x), str(reply)[:500]
    served.check_alive()


@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_poison(impl: Implementation, served: Served, input_type: str) -> None:
    require(impl, f"{input_type}-poison")
    reply = served.predict(input_type, POISON[input_type])
    assert reply["default"] is True, f"{reply}\n{served.logs()}"
    assert reply["output"] == int(DEFAULT_OUTPUT), reply
    explanation = reply.get("default_explanation", "")
    assert explanation.startswith("Model failed to predict: "), reply
    assert "poison" in explanation.lower(), reply
    served.check_alive()
    # The container keeps serving: the next input is answered by the model.
    served.check_answer(input_type, make_input(input_type, 5, random.Random(f"after-poison-{input_type}")))
    served.check_alive()


# ---------------------------------------------------------------------- session cases, a frontend each


def test_heartbeat(impl: Implementation, cluster: Cluster) -> None:
    require(impl, "heartbeat")
    fe = cluster.frontend(frontend_config(("doubles",)), heartbeat_timeout=2)
    proc = start_container(cluster, fe, impl, "doubles")
    model, app = model_name("doubles"), app_name("doubles")
    fe.wait_replicas(model, 1)
    assert fe.predict(app, [1.0, 2.0])["output"] == "2:3"
    counts = []
    until = time.monotonic() + 5.0
    while time.monotonic() < until:  # idle: only heartbeats keep the replica
        counts.append(fe.replicas(model))
        time.sleep(0.25)
    assert proc.poll() is None, f"container exited\n{logs(cluster)}"
    assert set(counts) == {1}, f"replica count while idle: {counts}\n{logs(cluster)}"
    reply = fe.predict(app, [4.0, 5.0, -3.0])
    assert (reply["default"], reply["output"]) == (False, "3:6"), reply


def test_reconnect(impl: Implementation, cluster: Cluster) -> None:
    require(impl, "reconnect")
    config = frontend_config(("doubles",))
    fe = cluster.frontend(config, heartbeat_timeout=2)
    proc = start_container(cluster, fe, impl, "doubles", env={"CLIPPER_SESSION_TIMEOUT": "3"})
    model, app = model_name("doubles"), app_name("doubles")
    fe.wait_replicas(model, 1)
    assert fe.predict(app, [1.0])["output"] == "1:1"
    fe.proc.kill()
    fe.proc.wait(5)
    fe2 = cluster.frontend(config, ports=(fe.port, fe.rpc_port), heartbeat_timeout=2)
    started = time.monotonic()
    fe2.wait_replicas(model, 1, timeout=RECONNECT_S)
    reply = fe2.predict(app, [2.0, 3.0])
    assert (reply["default"], reply["output"]) == (False, "2:5"), f"{reply}\n{logs(cluster)}"
    assert time.monotonic() - started < RECONNECT_S
    assert proc.poll() is None, f"container exited\n{logs(cluster)}"


def logs(cluster: Cluster) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-2000:]}"
                     for p in sorted(Path(cluster.workdir).glob("*.log")))


def test_deviations_name_cases() -> None:
    """A deviation must name a case of this suite (a typo would silently run the case)."""
    for implementation in IMPLEMENTATIONS:
        unknown = set(implementation.deviations) - set(CASES)
        assert not unknown, f"{implementation.name}: deviations name unknown cases {sorted(unknown)}"
