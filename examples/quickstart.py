"""Clipper's quickstart, with only its import lines changed. Nothing is started by hand.

    python examples/quickstart.py

Starts Redis, the management frontend (127.0.0.1:1338) and the query frontend (127.0.0.1:1337)
as local processes, deploys a Python closure as a model, asks for predictions, and stops it all.
"""

import json
import sys
import time

import requests

from clipper import ClipperConnection, LocalContainerManager
from clipper.deployers import python as python_deployer

clipper_conn = ClipperConnection(LocalContainerManager())
clipper_conn.start_clipper()
try:
    clipper_conn.register_application(name="hello-world", input_type="doubles", default_output="-1.0",
                                      slo_micros=100000)

    def feature_sum(xs):
        return [str(sum(x)) for x in xs]

    python_deployer.deploy_python_closure(clipper_conn, name="sum-model", version=1, input_type="doubles",
                                          func=feature_sum)
    clipper_conn.link_model_to_app(app_name="hello-world", model_name="sum-model")

    url = f"http://{clipper_conn.get_query_addr()}/hello-world/predict"
    headers = {"Content-type": "application/json"}
    for _ in range(50):  # the link reaches the query frontend within a second
        answer = requests.post(url, headers=headers, data=json.dumps({"input": [1.1, 2.2, 3.3]})).json()
        if not answer["default"]:
            break
        time.sleep(0.1)
    print(f"POST {url} {{\"input\": [1.1, 2.2, 3.3]}} -> {json.dumps(answer)}")
    batch = requests.post(url, headers=headers, data=json.dumps({"input_batch": [[1.0, 2.0], [3.0]]})).json()
    print(f"POST {url} {{\"input_batch\": [[1.0, 2.0], [3.0]]}} -> {json.dumps(batch)}")
    sys.exit(0 if not answer["default"] else 1)
finally:
    clipper_conn.stop_all()
