"""Any program as a model's replicas (``command:`` images, `clipper.deployers.command`, ``clipper deploy --command``)
on a real local cluster: Redis, both frontends and the replicas as processes.

The command run is the Python conformance model (tests/conformance/python_model.py) with its ready file
switched off (``CLIPPER_READY_FILE=``), so the manager must see the replicas registered the way it sees a
container in another language: through the query frontend's replica count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import make_manager

from clipper import ClipperConnection, ClipperException
from clipper.deployers.command import command_argv, deploy_command
from clipper.managers.local import command_image, resolve_image

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

REPO = Path(__file__).resolve().parents[1]
HTTP_TIMEOUT_S = 10.0
#: The conformance model on our runtime, as a plain command; no ready file, like a foreign container.
MODEL_ARGV = [sys.executable, "-m", "clipper.model_runtime", "--predict", "tests.conformance.python_model:predict"]
MODEL_ENV = {"PYTHONPATH": str(REPO), "CLIPPER_READY_FILE": ""}


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    c = ClipperConnection(make_manager(f"test-command-{os.getpid()}", tmp_path_factory.mktemp("command-cluster")),
                          health_check_timeout=60)
    try:
        c.start_clipper()
        yield c
    finally:
        c.stop_all()


def post(conn: ClipperConnection, app: str, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"http://{conn.get_query_addr()}/{app}/predict", json=body, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def wait_model_answer(conn: ClipperConnection, app: str, value: Any, expected: str) -> None:
    """Predicts until the model answers (the app's link reaches the query frontend through Redis)."""
    deadline = time.monotonic() + 10.0
    while True:
        r = requests.post(f"http://{conn.get_query_addr()}/{app}/predict", json={"input": value},
                          timeout=HTTP_TIMEOUT_S)
        reply = r.json() if r.status_code == 200 else {"status": r.status_code}
        if reply.get("default") is False:
            assert reply["output"] == expected, reply
            return
        assert time.monotonic() < deadline, f"{app} never answered from its model: {reply}"
        time.sleep(0.05)


def test_command_image_round_trips_argv() -> None:
    argv = ["/opt/my model/bin", "--name", "it's \"quoted\"", "", "a b"]
    image = command_image(argv)
    assert image.startswith("command:")
    assert resolve_image(image) == {"command": argv}
    with pytest.raises(ClipperException, match="command:<command line>"):
        resolve_image("command:   ")
    with pytest.raises(ClipperException, match="No closing quotation"):
        resolve_image("command:/bin/x 'unterminated")
    assert command_argv("prog --x 1", {"A": "1 2"}) == ["env", "A=1 2", "prog", "--x", "1"]


def test_deploy_command_serves_single_and_batch(conn: ClipperConnection) -> None:
    conn.register_application("cmd-app", "doubles", "-1", 2_000_000)
    deploy_command(conn, "cmd-model", 1, "doubles", MODEL_ARGV, num_replicas=2, env=MODEL_ENV)
    conn.link_model_to_app("cmd-app", "cmd-model")
    # deploy returned after both registered, without the ready file: the frontend counts them
    assert conn.cm.get_num_replicas("cmd-model", "1") == 2
    replicas = [r for r in conn.cm.status()["replicas"] if r["name"] == "cmd-model"]
    assert len(replicas) == 2 and all(r["image"].startswith("command:env ") for r in replicas), replicas
    assert not any(Path(r["ready_file"]).exists() for r in replicas)
    info = conn.get_model_info("cmd-model", "1")
    assert info["container_name"] == command_image(command_argv(MODEL_ARGV, MODEL_ENV)), info

    wait_model_answer(conn, "cmd-app", [1.0, 2.0, 3.0], "3:6")
    batch = [[float(i)] * (1 + i % 5) for i in range(40)]
    preds = post(conn, "cmd-app", {"input_batch": batch})["batch_predictions"]
    assert [(p["default"], p["output"]) for p in preds] == \
        [(False, f"{len(x)}:{int(sum(x))}") for x in batch], preds

    # The image is kept, so resizing starts the same command again.
    conn.set_num_replicas("cmd-model", 3, "1")
    assert conn.cm.get_num_replicas("cmd-model", "1") == 3


def test_cli_deploy_command(conn: ClipperConnection) -> None:
    cm = conn.cm
    command = " ".join(f"'{a}'" for a in MODEL_ARGV)
    done = subprocess.run(
        [sys.executable, "-m", "clipper", "--cluster-name", cm.cluster_name, "--cluster-dir", str(cm.cluster_dir),
         "deploy", "cli-cmd-model", "--version", "7", "--input-type", "strings", "--command", command,
         "--env", f"PYTHONPATH={REPO}", "--env", "CLIPPER_READY_FILE=", "--replicas", "1", "--app", "cli-cmd-app",
         "--default-output", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deployed model cli-cmd-model:7" in done.stdout and "cli-cmd-app" in done.stdout, done.stdout
    wait_model_answer(conn, "cli-cmd-app", "héllo", "6:héllo")
    preds = post(conn, "cli-cmd-app", {"input_batch": ["", "abc", "日本"]})["batch_predictions"]
    assert [p["output"] for p in preds] == ["0:", "3:abc", "6:日本"], preds
    poisoned = post(conn, "cli-cmd-app", {"input": "poison"})
    assert poisoned["default"] is True and "poison" in poisoned["default_explanation"], poisoned


def test_command_that_exits_fails_the_deployment(conn: ClipperConnection) -> None:
    with pytest.raises(ClipperException, match=r"failed to start(.|\n)*broken on purpose"):
        deploy_command(conn, "cmd-broken", 1, "doubles", ["sh", "-c", "echo broken on purpose >&2; exit 3"])
    assert conn.cm.get_num_replicas("cmd-broken", "1") == 0
