"""The management frontend's request decoders: JSON parse + validation + route handler, every route.

Input format: byte 0 picks the route (`b % 17`, in `ROUTES` order), the rest is the request body.
Each input runs `ManagementFrontend.call(route, body)`, the exact step that turns a body into a
response, against a real Redis (a `redis-server` child started once) holding a small fixed state
(apps, models, links, a replica, a selection state) that is restored before every input, so an input
always means the same thing.

Invariants: the answer is 200 or 400, never 500 (an exception no handler expected) or 503; a body
that is not the route's JSON is a 400 with Clipper's `Error parsing JSON: ...` text; getters answer
200 with JSON; `call` itself never raises.
"""

from __future__ import annotations

import logging
import traceback

import orjson

from .common import FEATURES, Failure, template

NAME = "admin_json"

#: Routes whose 200 body is JSON.
_JSON_ROUTES = {"/admin/get_all_applications", "/admin/get_application", "/admin/get_linked_models",
                "/admin/get_all_models", "/admin/get_model", "/admin/get_all_containers", "/admin/get_container",
                "/admin/get_selection_state"}


def routes() -> list[str]:
    from clipper.frontend import management

    return [path for path, route in management.ROUTES.items() if route.handler is not None]


class Target:
    def __init__(self) -> None:
        import redis

        from clipper.frontend import management
        from clipper.state import RedisServer, StateStore

        self.m = management
        self.routes = routes()
        self.redis_server = RedisServer().start()
        self.store = StateStore.connect(self.redis_server.host, self.redis_server.port)
        self.frontend = management.ManagementFrontend(self.store, workers=1)
        logging.getLogger("clipper.management").setLevel(logging.CRITICAL)
        s = self.store
        s.add_app("a", "doubles", "0.5", 100000)
        s.add_app("b", "strings", "none", 20000, "exp3")
        s.add_model("m", "1", "doubles", ["l"], "img:1", "/m", 4)
        s.add_model("m", "2", "doubles", [], "img:2", "/m", -1)
        s.add_model("s", "1", "strings", [], "img:s", "/s", 8)
        s.add_links("a", ["m"])
        s.add_links("b", ["s"])
        s.add_replica("m", "1", s.next_replica_id("m", "1"), "doubles", "c0")
        s.set_selection_state("b", '{"version":1,"policy":"exp3","seed":null,"t":0,"params":{},"arms":[]}')
        self.raw = redis.Redis(host=self.redis_server.host, port=self.redis_server.port)
        self.baseline = {key: self.raw.dump(key) for key in self.raw.keys("*")}

    def reset(self) -> None:
        with self.raw.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            for key, value in self.baseline.items():
                pipe.restore(key, 0, value)
            pipe.execute()

    def check(self, data: bytes) -> None:
        if not data:
            return
        path = self.routes[data[0] % len(self.routes)]
        body = data[1:]
        route = self.m.ROUTES[path]
        self.reset()
        response = self.frontend.call(route, body)  # raising here would drop the connection unanswered
        text = response.body.decode("utf-8", "replace")
        FEATURES(path, response.status, template(text))
        if response.status == 500:
            try:  # the same call without the 500 mapping, for the traceback
                self.reset()
                route.handler(self.store, self.m.parse_json(body))
                detail = "(not reproduced without the mapping)"
            except Exception:
                detail = traceback.format_exc(limit=-4)
            raise Failure(f"{path}: 500 for body {body!r}: {text}\n{detail}")
        if response.status != 200 and response.status != 400:
            raise Failure(f"{path}: status {response.status} for body {body!r}: {text}")
        try:
            parsed = self.m.parse_json(body)
        except self.m.JsonError:
            parsed = None
            if response.status != 400 or not response.body.startswith(b"Error parsing JSON: JSON parse error: "):
                raise Failure(f"{path}: body {body!r} is not JSON but the answer is {response.status} {text}") from None
        if response.status == 200:
            if parsed is None:
                raise Failure(f"{path}: 200 for a body that is not JSON: {body!r}")
            if path in _JSON_ROUTES:
                try:
                    orjson.loads(response.body)
                except orjson.JSONDecodeError as e:
                    raise Failure(f"{path}: 200 body is not JSON ({e}): {response.body!r}") from None

    def close(self) -> None:
        self.frontend.executor.shutdown(wait=False)
        self.store.close()
        self.raw.close()
        self.redis_server.stop()


def setup() -> Target:
    return Target()
