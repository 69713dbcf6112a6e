"""Checks both REST APIs against their OpenAPI descriptions with schemathesis, over live frontends.

    python3 scripts/check_openapi.py                  # about 1 minute; exits 1 on any failure
    python3 scripts/check_openapi.py --max-examples 300 --seed 7 --keep-reports /tmp/st

Starts a real redis-server, the management frontend and a query frontend following that Redis (127.0.0.1, free
ports, both with a bearer token), registers one application per input type and `hello-world` (the description's
example), each linked to a model served by a real container (`python -m clipper.model_runtime`, the `noop`
model), then runs `schemathesis run` against each frontend's own `GET /openapi.json`: every operation, positive
and negative data (examples, coverage and fuzzing phases), with the checks of `CHECKS` (no 5xx; status codes,
content types, headers and bodies as described). A dictionary sends most generated app names to the registered
apps. It prints the counts of both runs and exits non-zero when either run found a failure or an error. The
processes it started are stopped whatever happens.

A script rather than a pytest test: it runs for a minute or more, and its result is one report over two live APIs; CI
calls it as one step (`.ci/run`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from clipper.ports import free_ports
from clipper.state.redis_server import RedisServer, redis_server_binary

REPO = Path(__file__).resolve().parents[1]
#: The checks of every run: no 5xx, and status codes, content types, headers and bodies as described. Not
#: positive_data_acceptance (a valid body for an app that does not exist is rightly refused), nor
#: unsupported_method (the query frontend answers 404, not 405, to another method on its GET routes, by design).
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance")
PHASES = "examples,coverage,fuzzing"
INPUT_TYPES = ("integers", "floats", "doubles", "strings", "bytes")
#: The apps registered: one per input type, each linked to model `m-<type>`; and the description's example app.
APPS = {f"st-{t}": t for t in INPUT_TYPES} | {"hello-world": "doubles"}
ADMIN_TOKEN = "openapi-check-admin"
PREDICT_TOKEN = "openapi-check-predict"
START_TIMEOUT_S = 30.0


@dataclass
class Processes:
    """The child processes started here, each with its log; `stop` ends every one of them."""

    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str, n: int = 3000) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-n:]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_until(what: str, ok: Any, timeout: float = START_TIMEOUT_S) -> None:
    """Polls `ok()` until it is true; raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout} s")


def start_cluster(procs: Processes, redis: RedisServer) -> tuple[str, str]:
    """Management and query frontends over `redis`, an app and a served model per input type; their URLs."""
    admin_port, query_port, rpc_port = free_ports(3)
    py = sys.executable
    procs.spawn("management", [py, "-m", "clipper.frontend.management", "--redis-port", str(redis.port),
                               "--port", str(admin_port), "--token", ADMIN_TOKEN])
    procs.spawn("query", [py, "-m", "clipper.frontend.query", "--redis-port", str(redis.port), "--port",
                          str(query_port), "--rpc-port", str(rpc_port), "--predict-token", PREDICT_TOKEN])
    admin, query = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{query_port}"
    wait_until("management frontend", lambda: requests.get(f"{admin}/admin/ping", timeout=1).ok)
    wait_until("query frontend", lambda: requests.get(f"{query}/readyz", timeout=1).ok)

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def admin_call(route: str, body: dict[str, Any]) -> None:
        r = requests.post(f"{admin}/admin/{route}", json=body, headers=headers, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"/admin/{route}: {r.status_code} {r.text}")

    for input_type in INPUT_TYPES:
        admin_call("add_model", {"model_name": f"m-{input_type}", "model_version": "1", "labels": [],
                                 "input_type": input_type, "container_name": "NO_CONTAINER",
                                 "model_data_path": "DEPRECATED", "batch_size": -1})
    for app, input_type in APPS.items():
        admin_call("add_app", {"name": app, "input_type": input_type, "default_output": "-1",
                               "latency_slo_micros": 2_000_000})
        admin_call("add_model_links", {"app_name": app, "model_names": [f"m-{input_type}"]})
    for input_type in INPUT_TYPES:
        procs.spawn(f"container-{input_type}", [py, "-m", "clipper.model_runtime", "--predict",
                                                "clipper.model_runtime.models:noop"], {
            "CLIPPER_MODEL_NAME": f"m-{input_type}", "CLIPPER_MODEL_VERSION": "1", "CLIPPER_IP": "127.0.0.1",
            "CLIPPER_PORT": str(rpc_port), "CLIPPER_INPUT_TYPE": input_type})

    def all_served() -> bool:
        r = requests.post(f"{admin}/admin/get_all_containers", json={"verbose": False}, headers=headers, timeout=5)
        return len(r.json()) == len(INPUT_TYPES)

    wait_until("model containers", all_served)
    probe = requests.post(f"{query}/hello-world/predict", json={"input": [1.0]}, timeout=10,
                          headers={"Authorization": f"Bearer {PREDICT_TOKEN}"})
    if probe.status_code != 200 or probe.json().get("default") is not False:
        raise RuntimeError(f"the doubles model does not answer: {probe.status_code} {probe.text}")
    return admin, query


def write_config(path: Path) -> None:
    """schemathesis.toml: the `app` path parameter is mostly one of the registered apps (else random)."""
    names = ", ".join(f'"{app}"' for app in APPS)
    path.write_text(f'[dictionaries.apps]\nvalues = [{names}]\n\n'
                    '[parameters]\n"path.app" = { dictionary = "apps", probability = 0.8 }\n')


@dataclass
class RunResult:
    api: str
    returncode: int
    operations: int = 0
    test_cases: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_schemathesis(api: str, url: str, token: str, config: Path, reports: Path,
                     args: argparse.Namespace) -> RunResult:
    """One `schemathesis run` against `url`/openapi.json; its counts from the JUnit report."""
    junit = reports / f"{api}.xml"
    argv = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config), "run",
            f"{url}/openapi.json", "--url", url, "--checks", args.checks, "--phases", PHASES,
            "--mode", "all", "--max-examples", str(args.max_examples), "--seed", str(args.seed),
            "--workers", "1", "--request-timeout", "10", "--continue-on-failure",
            "--header", f"Authorization: Bearer {token}", "--suppress-health-check", "all",
            "--report", "junit,ndjson", "--report-junit-path", str(junit),
            "--report-ndjson-path", str(reports / f"{api}.ndjson")]
    print(f"[check_openapi] {api}: schemathesis run {url}/openapi.json", flush=True)
    proc = subprocess.run(argv, cwd=reports, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (reports / f"{api}.out").write_text(proc.stdout)
    result = RunResult(api, proc.returncode)
    parse_junit(junit, result)
    if proc.returncode != 0 or result.failures or result.errors:
        print(proc.stdout[-12000:], flush=True)
    return result


def parse_junit(path: Path, result: RunResult) -> None:
    """Operations and failures from schemathesis's JUnit report (one test case per operation)."""
    import xml.etree.ElementTree as ET

    if not path.exists():
        result.errors.append("no JUnit report was written")
        return
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        result.operations += 1
        for kind, found in (("failure", result.failures), ("error", result.errors)):
            for item in case.findall(kind):
                detail = (item.text or item.get("message") or "").strip()
                found.append(f"{case.get('name')}: {detail[:400]}")


def count_test_cases(output: str) -> int:
    """The number of test cases schemathesis reports having generated (its summary's `N generated`)."""
    import re

    found = re.findall(r"(\d+)\s+generated", output)
    return int(found[-1]) if found else 0


def app_predictions(query: str) -> dict[str, int]:
    """How many predictions each registered app answered (from the query frontend's /metrics)."""
    counters = requests.get(f"{query}/metrics", timeout=10).json().get("counters", [])
    found = {name: int(value["count"]) for entry in counters for name, value in entry.items()}
    return {app: found.get(f"app:{app}:num_predictions", 0) for app in APPS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="test cases per operation and phase (100)")
    parser.add_argument("--checks", default=CHECKS, help=f"schemathesis checks, or `all` (default: {CHECKS})")
    parser.add_argument("--seed", type=int, default=1337, help="schemathesis's random seed (1337)")
    parser.add_argument("--keep-reports", type=Path, help="copy the reports and logs to this folder")
    args = parser.parse_args(argv)
    if redis_server_binary() is None:
        print("check_openapi: redis-server is not installed", file=sys.stderr)
        return 2

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="check-openapi-"))
    procs = Processes(workdir)
    redis = RedisServer(log_path=workdir / "redis.log")
    results: list[RunResult] = []
    reached: dict[str, int] = {}
    try:
        redis.start()
        admin, query = start_cluster(procs, redis)
        config = workdir / "schemathesis.toml"
        write_config(config)
        for api, url, token in (("query", query, PREDICT_TOKEN), ("management", admin, ADMIN_TOKEN)):
            result = run_schemathesis(api, url, token, config, workdir, args)
            result.test_cases = count_test_cases((workdir / f"{api}.out").read_text())
            results.append(result)
        for name, proc in zip(("management", "query"), procs.procs[:2], strict=True):
            if proc.poll() is not None:
                results[-1].errors.append(f"the {name} frontend exited during the run:\n{procs.log_tail(name)}")
        reached = app_predictions(query)
    finally:
        procs.stop()
        redis.stop()
        if args.keep_reports:
            shutil.copytree(workdir, args.keep_reports, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)

    failed = False
    for r in results:
        print(f"[check_openapi] {r.api}: {r.operations} operations, {r.test_cases} test cases, "
              f"{len(r.failures)} failing operations, {len(r.errors)} errors (schemathesis exit {r.returncode})")
        for line in r.failures + r.errors:
            print(f"  {line}")
        failed |= bool(r.returncode or r.failures or r.errors)
    print(f"[check_openapi] predictions answered per registered app: {reached}")
    print(f"[check_openapi] {'FAILED' if failed else 'passed'} in {time.monotonic() - started:.0f} s")
    return 1 if failed or len(results) != 2 else 0


if __name__ == "__main__":
    sys.exit(main())
