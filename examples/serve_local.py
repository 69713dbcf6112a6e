"""Start a query frontend and one model container locally, ask for predictions, stop.

    python examples/serve_local.py

The model sums each input vector (`clipper.container.models:sum`). Everything binds 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HTTP_PORT, RPC_PORT = 1337, 7000
CONFIG = {
    "apps": [{"name": "hello-world", "input_type": "doubles", "latency_slo_micros": 100000,
              "default_output": "-1.0", "models": ["sum-model"]}],
    "models": [{"name": "sum-model", "version": "1", "input_type": "doubles"}],
}


def predict(body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}/hello-world/predict",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def main() -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(CONFIG, f)
    frontend = subprocess.Popen([sys.executable, "-m", "clipper.frontend.query", "--config", f.name,
                                 "--port", str(HTTP_PORT), "--rpc-port", str(RPC_PORT)])
    env = dict(os.environ, CLIPPER_MODEL_NAME="sum-model", CLIPPER_MODEL_VERSION="1",
               CLIPPER_PORT=str(RPC_PORT), CLIPPER_INPUT_TYPE="doubles")
    container = subprocess.Popen([sys.executable, "-m", "clipper.container",
                                  "--predict", "clipper.container.models:sum"], env=env)
    try:
        print("waiting for the model container to register...", file=sys.stderr)
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = predict({"input": [1.0, 2.0, 3.0]})
                if not answer["default"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                print("the model did not come up within 30 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("POST /hello-world/predict {\"input\": [1.0, 2.0, 3.0]} ->", json.dumps(answer))
        batch = predict({"input_batch": [[1.0, 2.0], [10.0, 20.5]]})
        print("POST /hello-world/predict {\"input_batch\": [[1.0, 2.0], [10.0, 20.5]]} ->", json.dumps(batch))
        return 0
    finally:
        for process in (container, frontend):
            process.terminate()
        for process in (container, frontend):
            process.wait(timeout=10)
        os.unlink(f.name)


if __name__ == "__main__":
    sys.exit(main())
