"""A steady predict load over real HTTP connections that accounts for every request it sends.

Each of `connections` threads keeps one keep-alive HTTP/1.1 connection to the query frontend and
posts unique inputs (``[worker, sequence, nonce]``, so that no answer comes from the prediction
cache), one at a time, `interval_s` apart. Every request ends as exactly one of:

- ``prediction``: 200 with ``"default": false``
- ``default``: 200 with ``"default": true`` (the SLO passed, no replica, the model failed, ...)
- ``failed``: a non-2xx status, or a connection error (refused, reset, closed); the thread then
  reconnects after `backoff_s`
- ``unanswered``: no answer within the client timeout `timeout_s` (which should be well above the
  SLO): the serving system hung on it

    load = LoadDriver(port, "app", connections=4).start()
    ...                              # inject faults
    load.stop()
    print(load.counts())             # sent=... prediction=... default=... failed=... unanswered=0
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

import orjson

PREDICTION, DEFAULT, FAILED, UNANSWERED = "prediction", "default", "failed", "unanswered"
KINDS = (PREDICTION, DEFAULT, FAILED, UNANSWERED)


@dataclass(frozen=True)
class Outcome:
    """One request: when it was sent and answered (time.monotonic()), how it ended, and why."""

    sent: float
    done: float
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class Counts:
    """How the requests sent in some period ended."""

    sent: int
    prediction: int
    default: int
    failed: int
    unanswered: int

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> Counts:
        c = Counter(o.kind for o in outcomes)
        return cls(len(outcomes), c[PREDICTION], c[DEFAULT], c[FAILED], c[UNANSWERED])

    @property
    def balanced(self) -> bool:
        """Every request sent got an answer: a prediction, a default or a failure."""
        return self.sent == self.prediction + self.default + self.failed and self.unanswered == 0

    def __str__(self) -> str:
        return (f"sent={self.sent} prediction={self.prediction} default={self.default} "
                f"failed={self.failed} unanswered={self.unanswered}")


def classify(status: int, body: bytes) -> tuple[str, str]:
    """(kind, detail) of an HTTP answer to a predict request."""
    if not 200 <= status < 300:
        return FAILED, f"HTTP {status}: {body[:200].decode(errors='replace')}"
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return FAILED, f"HTTP {status} with a body that is not JSON: {body[:200]!r}"
    if not isinstance(answer, dict) or "default" not in answer:
        return FAILED, f"HTTP {status} without 'default': {body[:200]!r}"
    if answer["default"]:
        return DEFAULT, str(answer.get("default_explanation", ""))
    return PREDICTION, ""


class LoadDriver:
    """Threads that post predictions to ``http://host:port/<app>/predict`` until stopped."""

    def __init__(self, port: int, app: str, *, connections: int = 4, interval_s: float = 0.01,
                 timeout_s: float = 5.0, backoff_s: float = 0.05, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.app = host, port, app
        self.connections, self.interval_s = connections, interval_s
        self.timeout_s, self.backoff_s = timeout_s, backoff_s
        self.nonce = float(random.randrange(1 << 30))
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadDriver:
        for worker in range(self.connections):
            t = threading.Thread(target=self._run, args=(worker,), name=f"load-{worker}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stops sending and waits for the requests in flight (at most the client timeout)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)
        stuck = sum(t.is_alive() for t in self._threads)
        if stuck:
            raise RuntimeError(f"{stuck} load threads did not finish within the client timeout")

    def outcomes(self, since: float = float("-inf"), until: float = float("inf")) -> list[Outcome]:
        """The requests sent in [since, until), in the order they ended."""
        with self._lock:
            return [o for o in self._outcomes if since <= o.sent < until]

    def counts(self, since: float = float("-inf"), until: float = float("inf")) -> Counts:
        return Counts.of(self.outcomes(since, until))

    def wait_predictions(self, n: int, timeout_s: float = 15.0) -> float:
        """Waits until `n` requests in a row (all threads together) ended as predictions; returns the time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                tail = self._outcomes[-n:]
            if len(tail) == n and all(o.kind == PREDICTION for o in tail):
                return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"no {n} predictions in a row within {timeout_s} s; last: {self.outcomes()[-5:]}")

    def _run(self, worker: int) -> None:
        path = f"/{self.app}/predict"
        headers = {"Content-Type": "application/json"}
        conn: http.client.HTTPConnection | None = None
        seq = 0
        while not self._stop.is_set():
            seq += 1
            body = orjson.dumps({"input": [float(worker), float(seq), self.nonce]})
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                kind, detail = classify(response.status, response.read())
                if response.will_close:
                    conn.close()
                    conn = None
            except TimeoutError as e:
                kind, detail = UNANSWERED, f"no answer within {self.timeout_s} s: {e}"
            except (OSError, http.client.HTTPException) as e:
                kind, detail = FAILED, f"{type(e).__name__}: {e}"
            if kind in (UNANSWERED, FAILED) and conn is not None:
                conn.close()
                conn = None
            with self._lock:
                self._outcomes.append(Outcome(sent, time.monotonic(), kind, detail))
            self._stop.wait(self.backoff_s if kind == FAILED else self.interval_s)
        if conn is not None:
            conn.close()
