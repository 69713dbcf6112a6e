"""Nothing lost under faults: a steady predict load over real sockets while a fault is injected, and
an account of every request sent.

Every request ends as a prediction, a default (``"default": true``), or a failure (non-2xx or a
connection error); none may go unanswered (the client timeout is 25 times the SLO). Defaults and
failures must fall in the fault's window, and afterwards every request is a prediction again.
Real processes throughout: query frontends, model containers, redis-server, the management frontend.
`pytest -s` prints the counts of each fault.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis as redis_lib
import requests
from conftest import REPO, Cluster, Frontend, free_ports

sys.path.insert(0, str(REPO))  # benchmarks/ is a package of the repository, not of the installed project
from benchmarks.chaos_load import PREDICTION, Counts, LoadDriver, Outcome  # noqa: E402
from clipper import rust_core  # noqa: E402
from clipper.state import CHANNEL  # noqa: E402
from clipper.state.redis_server import RedisServer, redis_server_binary  # noqa: E402

pytestmark = pytest.mark.chaos

SLO_S = 0.2
HEARTBEAT_TIMEOUT_S = 2.0
#: Slack for a loaded 2-core machine on every window edge.
MARGIN_S = 1.0
BATCH_MS = 30  # a batch is in flight most of the time
SLOW = {"CLIPPER_SLEEP_FIXED_MS": str(BATCH_MS)}


def wait_for(condition: Callable[[], object], what: str, within: float = 10.0) -> object:
    """Polls `condition` until it returns something truthy, which it returns; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.02)
    return value


def config(*models: str, slo_s: float = SLO_S) -> dict:
    return {
        "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": int(slo_s * 1e6),
                  "default_output": "-1.0", "models": ["m"]}],
        "models": [{"name": m, "version": "1", "input_type": "doubles"} for m in models],
    }


def serve_sleep_model(cluster: Cluster, replicas: int = 2, ports: tuple[int, int] | None = None,
                      batch_ms: int | list[int] = BATCH_MS, slo_s: float = SLO_S,
                      heartbeat_timeout: float | None = HEARTBEAT_TIMEOUT_S) -> tuple[Frontend, list[subprocess.Popen]]:
    """A frontend and `replicas` containers of the `sleep` model, taking `batch_ms` per batch (one value for
    all, or one per container); `heartbeat_timeout` None: the frontend's default."""
    fe = cluster.frontend(config("m", slo_s=slo_s), heartbeat_timeout=heartbeat_timeout, ports=ports)
    times = batch_ms if isinstance(batch_ms, list) else [batch_ms] * replicas
    containers = [cluster.container(fe, "m", "sleep", env={"CLIPPER_SLEEP_FIXED_MS": str(ms)}) for ms in times]
    fe.wait_replicas("m", replicas)
    return fe, containers


@pytest.fixture
def load_on() -> Iterator[list[LoadDriver]]:
    """Load drivers started by a test; stopped at teardown however the test ends."""
    drivers: list[LoadDriver] = []
    yield drivers
    for d in drivers:
        d._stop.set()


def start_load(drivers: list[LoadDriver], fe: Frontend, app: str = "app", slo_s: float = SLO_S) -> LoadDriver:
    load = LoadDriver(fe.port, app, connections=4, interval_s=0.01, timeout_s=min(25 * slo_s, slo_s + 10)).start()
    drivers.append(load)
    load.wait_predictions(40)  # a steady state before the fault: 40 predictions in a row
    return load


def account(load: LoadDriver, fault: str, window: tuple[float, float], *,
            allowed: tuple[str, ...] = ("default", "failed")) -> Counts:
    """Stops the load, prints the counts and checks them: all answered, defaults and failures (only the
    `allowed` kinds) inside `window`, predictions before and after it."""
    start, end = window
    deadline = time.monotonic() + 20
    while time.monotonic() < end + 0.5 or len(load.outcomes(since=end)) < 40:
        assert time.monotonic() < deadline, f"{fault}: too few requests after the fault window"
        time.sleep(0.05)
    load.stop()
    outcomes = load.outcomes()
    counts = Counts.of(outcomes)
    inside = Counts.of([o for o in outcomes if o.done >= start and o.sent <= end])
    why = collections.Counter(f"{o.kind}: {o.detail[:90]}" for o in outcomes if o.kind != PREDICTION)
    last = max((o.done for o in outcomes if o.kind != PREDICTION), default=start)
    report = (f"{fault}: {counts} | in the fault window ({end - start:.2f} s): {inside} | "
              f"last default/failure {last - start:.2f} s after the fault | {dict(why.most_common(6))}")
    print(f"\n[chaos] {report}")
    assert counts.balanced, f"requests went unanswered: {report}"
    stray = [o for o in outcomes if o.kind != PREDICTION and not (o.done >= start and o.sent <= end)]
    assert not stray, f"defaults/failures outside the fault window: {stray[:5]}\n{report}"
    wrong = [o for o in outcomes if o.kind not in (PREDICTION, *allowed)]
    assert not wrong, f"unexpected kinds of answer: {wrong[:5]}\n{report}"
    before = [o for o in outcomes if o.done < start]
    later = [o for o in outcomes if o.sent > end]
    assert len(before) >= 20 and len(later) >= 40, report
    return counts


def wait_replicas_gone(fe: Frontend, n: int, within: float) -> float:
    fe.wait_replicas("m", n, timeout=within)
    return time.monotonic()


#: Test (a): the victim's batches take this long, so that a batch is in flight when it is killed.
VICTIM_BATCH_MS = 2000
#: Test (a): its SLO; the frontend's heartbeat timeout is the default (30 s).
KILL_SLO_S = 5.0
#: How soon after a kill -9 the victim's batch must be answered by the other replica.
RESENT_WITHIN_S = 1.0


def test_container_killed_mid_batch(cluster: Cluster, load_on: list[LoadDriver]) -> None:
    fe, (victim, _) = serve_sleep_model(cluster, batch_ms=[VICTIM_BATCH_MS, BATCH_MS], slo_s=KILL_SLO_S,
                                        heartbeat_timeout=None)
    load = start_load(load_on, fe, slo_s=KILL_SLO_S)
    # The victim answered one of its 2 s batches, and has surely taken the next one since: it takes work
    # whenever it is idle (the last replica to turn idle is the first asked), and the load never stops.
    wait_for(lambda: any(o.done - o.sent > VICTIM_BATCH_MS / 1e3 * 0.9 for o in load.outcomes()),
             "a batch answered by the slow victim")
    time.sleep(0.5)
    assert fe.replicas("m") == 2, "the victim, silent inside its batches, is never dropped while alive"
    t0 = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=5)
    dropped = wait_replicas_gone(fe, 1, within=RESENT_WITHIN_S + MARGIN_S)
    # Its batch goes to the other replica at once: predictions, no default (the 30 s heartbeat timeout and
    # the 5 s SLO are far away), and nothing else fails either.
    account(load, "kill -9 container", (t0, t0 + RESENT_WITHIN_S), allowed=())
    in_victims_batch = [o for o in load.outcomes() if o.sent < t0 - 0.25 and o.done > t0]
    print(f"[chaos] kill -9: replica dropped {dropped - t0:.3f} s after the kill (polled); the "
          f"{len(in_victims_batch)} requests of its batch answered "
          f"{max((o.done - t0 for o in in_victims_batch), default=0):.3f} s after it")
    assert in_victims_batch, "no request was in flight at the victim when it was killed"
    assert all(o.kind == PREDICTION for o in in_victims_batch), in_victims_batch
    late = [o for o in in_victims_batch if o.done - t0 > RESENT_WITHIN_S]
    assert not late, f"the killed replica's batch was answered only {late[0].done - t0:.2f} s after the kill"


def test_frozen_container_is_dropped_at_the_ping_timeout(cluster: Cluster, load_on: list[LoadDriver]) -> None:
    """A host that vanishes without closing its connections (here: the whole container process stopped, so
    its ZeroMQ I/O thread answers no PING either) is noticed by the ZMTP heartbeats, long before the
    30 s RPC heartbeat timeout."""
    fe, (victim, _) = serve_sleep_model(cluster, slo_s=KILL_SLO_S, heartbeat_timeout=None)
    load = start_load(load_on, fe, slo_s=KILL_SLO_S)
    t0 = time.monotonic()
    victim.send_signal(signal.SIGSTOP)
    try:
        ping_timeout_s = rust_core.DEFAULT_PING_TIMEOUT_S + rust_core.DEFAULT_PING_INTERVAL_S
        dropped = wait_replicas_gone(fe, 1, within=ping_timeout_s + MARGIN_S + 1)
    finally:
        victim.send_signal(signal.SIGCONT)
    print(f"[chaos] SIGSTOP: dropped {dropped - t0:.2f} s after the stop")
    assert dropped - t0 >= rust_core.DEFAULT_PING_TIMEOUT_S - 0.1, f"dropped after {dropped - t0:.2f} s"
    fe.wait_replicas("m", 2, timeout=10)  # its connection was closed: it connects again and re-registers
    # The batch it held is requeued at the drop and served by the other replica within the 5 s SLO.
    account(load, "SIGSTOP container (pings)", (t0, dropped + MARGIN_S), allowed=())


def test_hung_container_is_dropped_and_rejoins(cluster: Cluster, load_on: list[LoadDriver]) -> None:
    fe, (victim, _) = serve_sleep_model(cluster)
    load = start_load(load_on, fe)
    t0 = time.monotonic()
    victim.send_signal(signal.SIGSTOP)
    try:
        dropped = wait_replicas_gone(fe, 1, within=HEARTBEAT_TIMEOUT_S + 3)
        wait_for(lambda: len(load.outcomes(since=dropped)) >= 20, "20 requests answered after the drop")
        served = load.counts(since=t0 + SLO_S + MARGIN_S)
        assert served.prediction > 0 and served.default == 0, f"the other replica serves alone: {served}"
    finally:
        victim.send_signal(signal.SIGCONT)
    fe.wait_replicas("m", 2, timeout=10)  # it heartbeats again and re-registers
    counts = account(load, "SIGSTOP container", (t0, t0 + SLO_S + MARGIN_S), allowed=("default",))
    assert HEARTBEAT_TIMEOUT_S - 0.1 < dropped - t0 < HEARTBEAT_TIMEOUT_S + 2, f"dropped after {dropped - t0:.2f} s"
    assert counts.default <= 200, counts


def test_container_answering_garbage(cluster: Cluster, load_on: list[LoadDriver]) -> None:
    fe, _ = serve_sleep_model(cluster, replicas=1)
    load = start_load(load_on, fe)
    t0 = time.monotonic()
    argv = [sys.executable, str(Path(__file__).with_name("garbage_container.py"))]
    garbage = cluster._spawn(argv, cluster._log_file("garbage"), {
        "CLIPPER_PORT": str(fe.rpc_port), "CLIPPER_MODEL_NAME": "m", "GARBAGE_MODES": "count,frame,junk,utf8"})
    fe.wait_replicas("m", 2)

    def garbage_seen() -> bool:  # both kinds of bad answer have come back, and the good replica served
        seen = collections.Counter(_garbage_kind(o) for o in load.outcomes(since=t0) if o.kind != PREDICTION)
        return bool(seen["wrong count"] and seen["malformed"] and load.counts(since=t0).prediction > 20)

    wait_for(garbage_seen, "wrong-count and malformed answers from the garbage container", within=15)
    during = load.outcomes(since=t0)
    garbage.send_signal(signal.SIGKILL)
    garbage.wait(timeout=5)
    t1 = time.monotonic()
    fe.wait_replicas("m", 1, timeout=HEARTBEAT_TIMEOUT_S + 3)
    # A batch in flight at the dead container is requeued when its connection closes; the window stays wide.
    counts = account(load, "container answering garbage", (t0, t1 + HEARTBEAT_TIMEOUT_S + SLO_S + MARGIN_S),
                     allowed=("default",))
    explained = collections.Counter(_garbage_kind(o) for o in during if o.kind != PREDICTION)
    assert explained["wrong count"] and explained["malformed"], explained
    assert not explained["deadline"], f"garbage answers fail their batch at once, not at the deadline: {explained}"
    assert sum(o.kind == PREDICTION for o in during) > 20, "the good replica keeps serving"
    assert counts.default > 0


def _garbage_kind(o: Outcome) -> str:
    if "outputs for a batch of" in o.detail:
        return "wrong count"
    if "malformed response" in o.detail:
        return "malformed"
    if "latency SLO" in o.detail:
        return "deadline"
    return o.detail


@pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")
def test_redis_restart(cluster: Cluster, load_on: list[LoadDriver]) -> None:
    from test_query_redis import Admin, add_model, eventually, output_of

    redis = RedisServer(log_path=cluster.workdir / "redis.log", extra_args=[
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(cluster.workdir)]).start()
    try:
        (mport,) = free_ports(1)
        cluster._spawn([sys.executable, "-m", "clipper.frontend.management", "--redis-port", str(redis.port),
                        "--port", str(mport)], cluster._log_file("management"))
        admin = Admin(mport)
        eventually(lambda: _status(admin, "get_all_models") == 200, within=15)
        fe = cluster.frontend(redis_port=redis.port, heartbeat_timeout=HEARTBEAT_TIMEOUT_S)
        admin("add_app", name="app", input_type="doubles", default_output="-1.0",
              latency_slo_micros=int(SLO_S * 1e6))
        admin("add_app", name="late", input_type="doubles", default_output="-1.0", latency_slo_micros=1_000_000)
        add_model(admin, "m", "1")
        admin("add_model_links", app_name="app", model_names=["m"])
        for _ in range(2):
            cluster.container(fe, "m", "sleep", env=SLOW)
        fe.wait_replicas("m", 2)
        eventually(lambda: len(admin("get_all_containers", verbose=False)) == 2, within=5)
        load = start_load(load_on, fe)

        def unreachable() -> int:  # the query frontend's warnings: one per failed attempt to reach Redis
            return fe.log_tail(1_000_000).count("redis unreachable")

        before = unreachable()
        t0 = time.monotonic()
        redis.stop()
        assert _status(admin, "get_all_models") == 503, "the management API says Redis is down"
        # Down until the query frontend has noticed, tried again (1 s later) and failed again, serving all along.
        wait_for(lambda: unreachable() >= before + 2, "the query frontend notices Redis is gone, and retries")
        assert _status(admin, "get_all_models") == 503
        redis.start()
        back = time.monotonic()
        eventually(lambda: _status(admin, "get_all_models") == 200, within=5)
        # The watcher reconnects and subscribes again: the change below arrives as an event, not in the
        # snapshot of a reconnection.
        watcher = redis_client(redis.port)
        wait_for(lambda: watcher.pubsub_numsub(CHANNEL)[0][1] >= 1, "the query frontend subscribed again")
        add_model(admin, "n", "1")
        cluster.container(fe, "n", "sum")
        fe.wait_replicas("n", 1)
        admin("add_model_links", app_name="late", model_names=["n"])
        eventually(lambda: output_of(fe, "late", [2.0, 3.0]).get("output") == 5.0, within=5)
        # One record per connected replica: those of before the restart are not published twice.
        records = eventually(lambda: (r := admin("get_all_containers", verbose=False)) and len(r) == 3 and r,
                             within=5)
        assert sorted(records) == ["m:1:0", "m:1:1", "n:1:0"], records
        # The frontend served with what it knew all along: no default, no failure at all.
        account(load, "Redis restart", (t0, back), allowed=())
    finally:
        redis.stop()


def _refused(url: str) -> bool:
    try:
        requests.get(f"{url}/healthz", timeout=2)
    except requests.ConnectionError:
        return True
    return False


def redis_client(port: int) -> redis_lib.Redis:
    return redis_lib.Redis(port=port, socket_timeout=2)


def _status(admin: object, route: str) -> int:
    try:
        return requests.post(f"{admin.url}/{route}", json={"verbose": False}, timeout=5).status_code  # type: ignore[attr-defined]
    except requests.RequestException:
        return 0


def test_query_frontend_killed_and_restarted(cluster: Cluster, load_on: list[LoadDriver]) -> None:
    ports = (port, rpc_port) = tuple(free_ports(2))
    fe, _ = serve_sleep_model(cluster, ports=(port, rpc_port))
    load = start_load(load_on, fe)
    t0 = time.monotonic()
    fe.proc.send_signal(signal.SIGKILL)
    fe.proc.wait(timeout=5)
    # Down until every load connection has been refused at least once (about 4 x the 50 ms backoff).
    wait_for(lambda: load.counts(since=t0).failed >= 8, "clients see the frontend down")
    restarted = cluster.frontend(config("m"), heartbeat_timeout=HEARTBEAT_TIMEOUT_S, ports=ports)
    up = time.monotonic()
    restarted.wait_replicas("m", 2, timeout=10)  # the containers reconnect and register again
    registered = time.monotonic()
    counts = account(load, "query frontend kill -9 + restart", (t0, registered + SLO_S + MARGIN_S))
    failed_late = [o for o in load.outcomes() if o.kind == "failed" and o.sent > up + 0.2]
    assert not failed_late, f"failures after the restart: {failed_late[:5]}"
    assert counts.failed > 0
    assert registered - up < 5, f"containers re-registered {registered - up:.2f} s after the restart"


def test_sigterm_answers_requests_in_flight(cluster: Cluster) -> None:
    fe, _ = serve_sleep_model(cluster, replicas=1, batch_ms=800, slo_s=10)
    answers: list[tuple[int, dict]] = []
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            r = requests.post(f"{fe.url}/app/predict", json={"input": [float(i), 0.25]}, timeout=10)
            answers.append((r.status_code, r.json()))
        except requests.RequestException as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    # The first 800 ms batch is answered: the other requests wait in the next batch or the queue.
    wait_for(lambda: fe.metrics().get("model:m:1:num_predictions", 0) > 0, "the first batch answered", within=5)
    fe.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: _refused(fe.url), "no new connection accepted after SIGTERM", within=5)
    for t in threads:
        t.join(timeout=15)
    assert fe.proc.wait(timeout=10) == 0
    assert not errors, errors
    assert len(answers) == 6 and all(s == 200 and not a["default"] for s, a in answers), answers


def test_request_read_while_draining_gets_503_after_the_answer_in_flight(cluster: Cluster) -> None:
    fe, _ = serve_sleep_model(cluster, replicas=1, batch_ms=1000, slo_s=10)
    busy, idle = fe.connect(), fe.connect()
    with busy, idle:
        busy.send(busy.request("POST", "/app/predict", b'{"input":[1.0]}'))
        # The request reached the engine (its cache lookup is counted): the 1 s batch is in flight.
        wait_for(lambda: fe.metrics().get("internal:prediction_cache_lookups", 0) >= 1, "the request submitted")
        fe.proc.send_signal(signal.SIGTERM)
        assert idle.at_eof(), "an idle keep-alive connection closes at once"  # and so the frontend is draining
        busy.send(busy.request("POST", "/app/predict", b'{"input":[2.0]}'))
        status, _, body = busy.read_response()
        assert status == 200 and not orjson.loads(body)["default"], body
        status, headers, body = busy.read_response()
        assert status == 503 and headers.get("connection") == "close", (status, headers)
        assert orjson.loads(body)["cause"] == "the query frontend is shutting down"
        assert busy.at_eof()
    assert fe.proc.wait(timeout=10) == 0


def test_sigterm_under_keep_alive_load_answers_what_it_read_and_exits(cluster: Cluster,
                                                                      load_on: list[LoadDriver]) -> None:
    fe, _ = serve_sleep_model(cluster)
    load = start_load(load_on, fe)
    t0 = time.monotonic()
    fe.proc.send_signal(signal.SIGTERM)
    assert fe.proc.wait(timeout=10) == 0
    exited = time.monotonic()
    wait_for(lambda: load.counts(since=exited).failed >= 4, "requests sent after the exit are refused")
    load.stop()
    outcomes = load.outcomes()
    counts = Counts.of(outcomes)
    report = f"SIGTERM under keep-alive load: {counts}, exit {exited - t0:.2f} s after SIGTERM"
    print(f"\n[chaos] {report}")
    assert counts.balanced, report
    # It stops reading from open connections too, instead of serving them until the drain limit (5 s).
    assert exited - t0 < 2.5, report
    early = [o for o in outcomes if o.kind != PREDICTION and o.sent < t0 - 0.2]
    assert not early, f"requests sent before SIGTERM were not answered: {early[:5]}\n{report}"
    assert all(o.kind in (PREDICTION, "failed") for o in outcomes), report


def test_load_driver_accounts_for_refusals() -> None:
    (port,) = free_ports(1)  # nothing listens there
    load = LoadDriver(port, "app", connections=2, interval_s=0.01, timeout_s=1.0).start()
    wait_for(lambda: load.counts().sent >= 10, "10 requests sent")
    load.stop()
    counts = load.counts()
    assert counts.sent > 0 and counts.failed == counts.sent and counts.balanced, counts
