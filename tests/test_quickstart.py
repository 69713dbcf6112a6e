"""Clipper's quickstart (clipper.ai, README), with only the imports changed, on real processes.

Nothing is started by hand: `start_clipper()` starts Redis and both frontends, the deployer starts
the model replica; `stop_all()` must leave no process behind and the ports free.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from clipper import ClipperConnection, ClipperException, LocalContainerManager
from clipper.deployers import python as python_deployer
from clipper.ports import free_ports

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

DEFAULT_PORTS = (1337, 1338, 7000, 6379)
PROPAGATION_S = 10.0


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port and a server could bind it (SO_REUSEADDR, as servers do)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True



def predict_until_sum(query_addr: str) -> dict[str, Any]:
    """POSTs the quickstart query until the model's answer arrives (not the default)."""
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        r = requests.post(f"http://{query_addr}/hello-world/predict", headers={"Content-type": "application/json"},
                          data=json.dumps({"input": [1.1, 2.2, 3.3]}), timeout=10)
        assert r.status_code in (200, 404), (r.status_code, r.text)  # 404: the app has not propagated yet
        body = r.json()
        if r.status_code == 200 and body["default"] is False:
            return body
        assert time.monotonic() < deadline, f"still the default output after {PROPAGATION_S} s: {body}"
        time.sleep(0.05)


def run_quickstart(clipper_conn: ClipperConnection) -> None:
    """The quickstart, verbatim apart from the imports."""
    clipper_conn.start_clipper()
    clipper_conn.register_application(name="hello-world", input_type="doubles", default_output="-1.0",
                                      slo_micros=100000)

    def feature_sum(xs):
        return [str(sum(x)) for x in xs]

    python_deployer.deploy_python_closure(clipper_conn, name="sum-model", version=1, input_type="doubles",
                                          func=feature_sum)
    clipper_conn.link_model_to_app(app_name="hello-world", model_name="sum-model")


def check_serving_and_stop(clipper_conn: ClipperConnection, ports: tuple[int, ...]) -> None:
    cm = clipper_conn.cm
    assert isinstance(cm, LocalContainerManager)
    query_addr = clipper_conn.get_query_addr()
    body = predict_until_sum(query_addr)
    assert body["output"] == pytest.approx(6.6) and body["default"] is False
    assert set(body) >= {"query_id", "output", "default"}

    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-s", "-X", "POST", "--header", "Content-Type:application/json", "-d",
             '{"input": [1.1, 2.2, 3.3]}', f"http://{query_addr}/hello-world/predict"],
            capture_output=True, text=True, timeout=30, check=True).stdout
        curl_body = json.loads(out)
        assert curl_body["output"] == pytest.approx(6.6) and curl_body["default"] is False

    status = cm.status()
    pids = [p["pid"] for p in status["processes"] + status["replicas"]]
    roles = sorted(p["role"] for p in status["processes"])
    assert roles == ["management_frontend", "query_frontend", "redis"]
    assert status["redis"]["persistence"] and status["redis"]["server_alive"]  # supervised, append-only file
    pids.append(status["redis"]["server_pid"])
    assert cm.redis_data_dir.is_dir()
    assert len(status["replicas"]) == 1 and all(p["alive"] for p in status["processes"] + status["replicas"])

    clipper_conn.stop_all()
    for pid in pids:  # stopped and reaped: no process, no zombie
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived stop_all()"
    ours = ("redis-server", "clipper.frontend", "clipper.model_runtime")
    children = [_cmdline(p) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == os.getpid()]
    leftovers = [c for c in children if any(word in c for word in ours)]
    assert not leftovers, f"child processes left behind: {leftovers}"
    for port in ports:
        assert port_free(port), f"port {port} still in use after stop_all()"
    assert not cm.state_path.exists()
    assert not cm.redis_data_dir.exists()  # the next start_clipper() starts empty, as Clipper's did
    assert cm.status()["running"] is False


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def test_quickstart_on_free_ports(tmp_path: Path) -> None:
    query, mgmt, rpc, redis = free_ports(4)
    cm = LocalContainerManager(cluster_name="quickstart-test", cluster_dir=tmp_path, clipper_query_port=query,
                               clipper_management_port=mgmt, clipper_rpc_port=rpc, redis_port=redis)
    clipper_conn = ClipperConnection(cm)
    try:
        run_quickstart(clipper_conn)
        assert clipper_conn.get_query_addr() == f"127.0.0.1:{query}"
        check_serving_and_stop(clipper_conn, (query, mgmt, rpc, redis))
    finally:
        clipper_conn.stop_all()


def test_quickstart_on_default_ports() -> None:
    busy = [p for p in DEFAULT_PORTS if not port_free(p)]
    if busy:
        pytest.skip(f"default ports in use on this machine: {busy}")
    clipper_conn = ClipperConnection(LocalContainerManager())
    try:
        clipper_conn.start_clipper()
    except ClipperException as e:
        if "already running" in e.msg or "already in use" in e.msg:  # another run took the default cluster
            pytest.skip(f"the default cluster is in use: {e.msg}")
        raise
    clipper_conn.stop_all()  # started and stopped once: now the quickstart itself
    try:
        run_quickstart(clipper_conn)
        assert clipper_conn.get_query_addr() == "127.0.0.1:1337"
        check_serving_and_stop(clipper_conn, DEFAULT_PORTS)
    finally:
        clipper_conn.stop_all()
