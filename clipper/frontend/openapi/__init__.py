"""OpenAPI 3.0 descriptions of the two REST APIs, shipped with the package and served as `GET /openapi.json`.

* `query.json`: the query frontend (:1337): `/<app>/predict`, `/<app>/update`, `/metrics`, `/healthz`, `/readyz`;
* `management.json`: the management frontend (:1338): every `/admin/*` route.

The files are generated from the route tables by `clipper.frontend.openapi.build` (the source of truth); after
changing a route, rewrite them with `python -m clipper.frontend.openapi` (tests fail while they differ). This
module only reads them, so that the compiled layer can serve them without importing the builder.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Literal

import orjson

Api = Literal["query", "management"]
#: The two descriptions, by API.
APIS: tuple[Api, ...] = ("query", "management")


@functools.cache
def document_bytes(api: Api) -> bytes:
    """The shipped description of `api`, byte for byte as served."""
    if api not in APIS:
        raise ValueError(f"unknown API {api!r}; expected one of {APIS}")
    return resources.files(__package__).joinpath(f"{api}.json").read_bytes()


def document(api: Api) -> dict[str, Any]:
    """The shipped description of `api`, parsed."""
    return orjson.loads(document_bytes(api))
