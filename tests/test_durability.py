"""The managed Redis is durable: a local cluster whose Redis is killed comes back with everything.

Real processes and a real `redis-server` (`LocalContainerManager`): apps, models, versions, links,
replica records and selection-policy state must all be served again within seconds after a
``kill -9`` of redis-server, through `ClipperConnection`'s getters and through predictions, with
nothing registered again by the test; the query frontend keeps answering meanwhile. `stop_all()`
then `start_clipper()` starts empty; `stop_all(keep_state=True)` keeps the state (and the
replicas); a cluster whose processes all died comes back the same way; `redis_persistence=False`
and an external Redis behave as before. The Docker manager's version is in
`tests/test_docker_manager.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import make_manager

from clipper import ClipperConnection, ClipperException, LocalContainerManager
from clipper.deployers import python as python_deployer
from clipper.managers.local import KEPT_REPLICAS_FILE, _pid_alive
from clipper.ports import free_port
from clipper.state import redis_server
from clipper.state.redis_server import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

HTTP_TIMEOUT_S = 10.0
PROPAGATION_S = 10.0
#: How long the managed Redis may take to be back and serve the state after a kill -9.
RECOVERY_S = 10.0
FEEDBACK = 20




@pytest.fixture
def conn(tmp_path: Path) -> Iterator[ClipperConnection]:
    c = ClipperConnection(make_manager(f"durable-{os.getpid()}", tmp_path / "cluster"), health_check_timeout=60)
    try:
        yield c
    finally:
        c.stop_all(graceful=False)


def wait_for(check: Callable[[], Any], what: str, timeout: float = PROPAGATION_S) -> Any:
    """Polls `check` until it returns something truthy (a ClipperException counts as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
        except ClipperException as e:  # the management API answers 503 while Redis is away
            value, last = None, e
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last: {last!r})"
        time.sleep(0.05)


def predict(conn: ClipperConnection, app: str, value: Any, session: Any = requests) -> dict[str, Any]:
    r = session.post(f"http://{conn.get_query_addr()}/{app}/predict", json={"input": value}, timeout=HTTP_TIMEOUT_S)
    if r.status_code == 404:
        return {"status": 404, "default": None}
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def wait_output(conn: ClipperConnection, app: str, value: Any, expected: float) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        body = predict(conn, app, value)
        return body if body.get("default") is False and body.get("output") == pytest.approx(expected) else None

    return wait_for(ok, f"{app} to answer {expected}")


def build_state(conn: ClipperConnection) -> None:
    """Apps, two versions of a model (the older one current), links, an exp3 app with feedback."""
    conn.register_application("sum-app", "doubles", "-1.0", 5_000_000)

    def feature_sum(xs):
        return [str(sum(x)) for x in xs]

    def feature_sum_plus_100(xs):
        return [str(sum(x) + 100) for x in xs]

    python_deployer.deploy_python_closure(conn, name="sum-model", version=1, input_type="doubles", func=feature_sum)
    python_deployer.deploy_python_closure(conn, name="sum-model", version=2, input_type="doubles",
                                          func=feature_sum_plus_100)
    conn.link_model_to_app("sum-app", "sum-model")
    conn.set_model_version("sum-model", "1")
    wait_output(conn, "sum-app", [1.0, 2.0], 3.0)

    conn.register_application("bandit", "doubles", "-1.0", 5_000_000, selection_policy="exp3")
    conn.link_model_to_app("bandit", "sum-model")
    wait_output(conn, "bandit", [1.0, 2.0], 3.0)
    url = f"http://{conn.get_query_addr()}/bandit/update"
    with requests.Session() as http:
        for i in range(FEEDBACK):
            r = http.post(url, json={"uid": 0, "input": [float(i), 1.0], "label": float(i + 1)}, timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 200, r.text
    wait_for(lambda: conn.get_selection_state("bandit", 0).get("t") == FEEDBACK, "the feedback to reach Redis")


def snapshot(conn: ClipperConnection) -> dict[str, Any]:
    """Everything the getters say about the state."""
    return {
        "apps": sorted(conn.get_all_apps(verbose=True), key=lambda a: a["name"]),
        "models": sorted(conn.get_all_models(verbose=True), key=lambda m: (m["model_name"], m["model_version"])),
        "links": {app: sorted(conn.get_linked_models(app)) for app in ("sum-app", "bandit")},
        "current": conn.get_current_model_version("sum-model"),
        "selection": conn.get_selection_state("bandit", 0),
    }


def replica_keys(conn: ClipperConnection) -> list[tuple[str, str, int]]:
    return sorted((r["model_name"], r["model_version"], r["model_replica_id"])
                  for r in conn.get_all_model_replicas(verbose=True))


def check_served(conn: ClipperConnection, before: dict[str, Any]) -> None:
    after = wait_for(lambda: snapshot(conn), "the management API to answer again", RECOVERY_S)
    assert after == before
    assert after["current"] == "1" and after["selection"]["t"] == FEEDBACK
    wait_output(conn, "sum-app", [2.0, 3.0], 5.0)  # version 1 answers, not version 2 (105)
    body = wait_output(conn, "bandit", [2.0, 4.0], 6.0)
    assert body["models"] == ["sum-model"]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---------------------------------------------------------------------- tests


@pytest.mark.chaos
def test_killed_redis_comes_back_with_everything(conn: ClipperConnection) -> None:
    conn.start_clipper()
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    redis = cm.status()["redis"]
    assert redis["persistence"] and redis["data_dir"] == str(cm.redis_data_dir.resolve())
    assert redis["server_alive"] and redis["restarts"] == 0
    victim = redis["server_pid"]
    assert "redis-server" in cmdline(victim)
    if shutil.which("redis-cli"):
        out = subprocess.run(["redis-cli", "-p", str(cm.redis_port), "config", "get", "appendonly"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        assert out == ["appendonly", "yes"]
    build_state(conn)
    before = snapshot(conn)
    replicas = replica_keys(conn)
    assert [(name, version) for name, version, _ in replicas] == [("sum-model", "1"), ("sum-model", "2")]

    answers: list[tuple[int, Any]] = []
    stop = threading.Event()

    def load() -> None:  # the query frontend keeps serving what it knows while Redis is away
        with requests.Session() as http:
            k = 0
            while not stop.is_set():
                k += 1
                r = http.post(f"http://{conn.get_query_addr()}/sum-app/predict", json={"input": [float(k), 1.0]},
                              timeout=HTTP_TIMEOUT_S)
                answers.append((r.status_code, r.json() if r.status_code == 200 else r.text, k))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        status = wait_for(lambda: (st := cm.status()["redis"])["server_alive"] and st["server_pid"] != victim and st,
                          "the supervisor to restart redis-server", RECOVERY_S)
        restarted = time.monotonic() - t0
        check_served(conn, before)
        served = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        stop.set()
        loader.join(timeout=HTTP_TIMEOUT_S + 5)
    print(f"\nredis-server killed: restarted after {restarted:.2f} s, state served after {served:.2f} s; "
          f"{len(answers)} predictions meanwhile")
    assert status["restarts"] == 1 and "SIGKILL" in status["last_exit"]
    assert not _pid_alive(victim, None)
    assert cm.status()["running"] is True
    assert len(answers) > 10
    bad = [a for a in answers if a[0] != 200 or a[1]["default"] or a[1]["output"] != pytest.approx(a[2] + 1.0)]
    assert bad == []
    # the replica records Redis kept are the same ones, not published twice
    assert wait_for(lambda: replica_keys(conn) == replicas, "the replica records") is True
    log = (cm.log_dir / "redis.log").read_text()
    assert "exited with signal 9 (SIGKILL)" in log and "started redis-server again" in log

    # Redis takes writes again, and they reach the query frontend (it has subscribed again)
    conn.register_application("after-app", "doubles", "-1.0", 5_000_000)
    conn.link_model_to_app("after-app", "sum-model")
    wait_output(conn, "after-app", [4.0], 4.0)
    r = requests.post(f"http://{conn.get_query_addr()}/bandit/update", json={"uid": 0, "input": [1.0], "label": 1.0},
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    wait_for(lambda: conn.get_selection_state("bandit", 0).get("t") == FEEDBACK + 1, "feedback after the restart")


def test_stop_all_starts_empty_and_keep_state_keeps_it(conn: ClipperConnection) -> None:
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    conn.start_clipper()
    build_state(conn)
    before = snapshot(conn)

    conn.stop_all(keep_state=True)
    assert not cm.state_path.exists() and cm.status()["processes"] == []
    assert redis_server.has_data(cm.redis_data_dir)
    kept = json.loads((cm.redis_data_dir / KEPT_REPLICAS_FILE).read_text())
    assert sorted((s["name"], s["version"], s["count"]) for s in kept) == [("sum-model", "1", 1), ("sum-model", "2", 1)]

    conn.start_clipper()  # new ports (0 = free ones), same state, the replicas started again
    assert not (cm.redis_data_dir / KEPT_REPLICAS_FILE).exists()
    assert cm.get_num_replicas("sum-model", "1") == 1 and cm.get_num_replicas("sum-model", "2") == 1
    check_served(conn, before)
    # the frontends withdrew their replica records when they stopped: only the new replicas are listed
    wait_for(lambda: [(n, v) for n, v, _ in replica_keys(conn)] == [("sum-model", "1"), ("sum-model", "2")],
             "the replica records of the new replicas")

    conn.stop_all()
    assert not cm.redis_data_dir.exists()
    conn.start_clipper()
    assert conn.get_all_apps() == [] and conn.get_all_models() == [] and conn.get_all_model_replicas() == []
    assert cm.status()["replicas"] == []
    conn.stop_all()
    assert not cm.redis_data_dir.exists()


@pytest.mark.chaos
def test_a_cluster_that_died_comes_back_with_its_state(conn: ClipperConnection) -> None:
    """Every process killed at once (as a reboot would): the next start_clipper loads the state and
    starts the replicas the state file lists."""
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    conn.start_clipper()
    build_state(conn)
    before = snapshot(conn)
    status = cm.status()
    records = status["processes"] + status["replicas"]
    for r in records:
        os.killpg(r["pid"], signal.SIGKILL)  # each runs in its own session: the supervisor and Redis together
    # (as the manager sees them: a killed process whose threads still exit can look like a zombie already)
    def all_dead() -> bool:
        st = cm.status()
        return not any(r["alive"] for r in st["processes"] + st["replicas"])

    wait_for(all_dead, "every process to die")
    assert cm.state_path.exists()

    conn.start_clipper()
    assert cm.get_num_replicas("sum-model", "1") == 1 and cm.get_num_replicas("sum-model", "2") == 1
    check_served(conn, before)


def test_supervisor_restarts_with_backoff_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    argv = redis_server.redis_argv(port, data_dir=tmp_path / "data")
    status_file = tmp_path / "status.json"
    log = open(tmp_path / "redis.log", "ab")
    sup = subprocess.Popen(redis_server.supervisor_argv(sys.executable, argv, status_file, tmp_path / "data"),
                           stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: redis_server.ping("127.0.0.1", port), "redis-server")
        pids = []
        for n in (1, 2, 3):
            st = redis_server.read_supervisor_status(status_file)
            assert st is not None and st["supervisor_pid"] == sup.pid and st["restarts"] == n - 1
            pids.append(st["redis_pid"])
            t0 = time.monotonic()
            os.kill(st["redis_pid"], signal.SIGKILL)
            wait_for(lambda n=n: (s := redis_server.read_supervisor_status(status_file)) and s["restarts"] == n
                     and redis_server.ping("127.0.0.1", port), f"restart {n}")
            took = time.monotonic() - t0
            assert took >= redis_server.MIN_BACKOFF_S * 2 ** (n - 1) * 0.9, took  # 0.1 s, 0.2 s, 0.4 s
        assert len(set(pids)) == 3
        os.killpg(sup.pid, signal.SIGTERM)  # as stop_all does: the supervisor and Redis together
        assert sup.wait(timeout=10) == 0
        last = redis_server.read_supervisor_status(status_file)["redis_pid"]
        assert not _pid_alive(last, None) and not redis_server.ping("127.0.0.1", port)
        text = (tmp_path / "redis.log").read_text()
        assert text.count("exited with signal 9 (SIGKILL)") == 3 and "stopped" in text
        assert redis_server.has_data(tmp_path / "data")
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait()
        log.close()


@pytest.mark.chaos
def test_without_persistence_redis_is_in_memory_and_not_restarted(tmp_path: Path) -> None:
    cm = make_manager("volatile", tmp_path, redis_persistence=False)
    conn = ClipperConnection(cm, health_check_timeout=60)
    try:
        conn.start_clipper()
        redis = next(r for r in cm.status()["processes"] if r["role"] == "redis")
        assert redis["argv"][0].endswith("redis-server") and "--appendonly" in redis["argv"]
        assert redis["argv"][redis["argv"].index("--appendonly") + 1] == "no"
        assert cm.status()["redis"]["persistence"] is False and not cm.redis_data_dir.exists()
        conn.register_application("app", "doubles", "-1.0", 100_000)
        conn.stop_all(keep_state=True)  # nothing to keep: a warning, and the next start is empty
        conn.start_clipper()
        assert conn.get_all_apps() == []
        redis = next(r for r in cm.status()["processes"] if r["role"] == "redis")
        os.kill(redis["pid"], signal.SIGKILL)
        time.sleep(1.0)
        assert not redis_server.ping("127.0.0.1", cm.redis_port) and cm.status()["running"] is False
    finally:
        conn.stop_all(graceful=False)


def test_external_redis_is_never_touched(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "external") as external:
        cm = make_manager("external", tmp_path / "cluster", redis_ip="127.0.0.1", redis_port=external.port)
        conn = ClipperConnection(cm, health_check_timeout=60)
        try:
            conn.start_clipper()
            assert "persistence" not in cm.status()["redis"]
            conn.register_application("ext-app", "doubles", "-1.0", 100_000)
            conn.stop_all()
            assert external.running and not cm.redis_data_dir.exists()
            conn.start_clipper()
            assert conn.get_all_apps() == ["ext-app"]  # stop_all() did not empty it
            conn.stop_all(keep_state=True)
            assert external.running and not cm.redis_data_dir.exists()
        finally:
            conn.stop_all(graceful=False)


def test_a_corrupt_append_only_file_fails_the_start_at_once(tmp_path: Path) -> None:
    cm = make_manager("corrupt", tmp_path)
    conn = ClipperConnection(cm, health_check_timeout=60)
    aof = cm.redis_data_dir / redis_server.AOF_DIRNAME
    aof.mkdir(parents=True)
    (aof / "appendonly.aof.manifest").write_text("garbage\n")
    try:
        t0 = time.monotonic()
        with pytest.raises(ClipperException, match=r"Redis failed to start \(redis-server exited with exit code 1\)"
                                                    r"(.|\n)*AOF MANIFEST"):
            conn.start_clipper()
        assert time.monotonic() - t0 < 10
        assert cm.status()["processes"] == []
        conn.stop_all()  # forgets the broken state
        conn.start_clipper()
        assert conn.get_all_apps() == []
    finally:
        conn.stop_all(graceful=False)
