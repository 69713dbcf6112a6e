"""The frontends' settings and their defaults, defined once: the command lines, the container managers,
the servers and the engine all read them from here (or, for what the engine owns, from `rust_core`)."""

from __future__ import annotations

from .. import rust_core

#: HTTP limits shared by the query and management frontends.
DEFAULT_MAX_BODY_BYTES = 10 << 20
DEFAULT_MAX_HEADER_BYTES = 64 << 10
#: Inputs one `input_batch` may hold.
DEFAULT_MAX_BATCH_INPUTS = 10_000

#: Owned by the engine.
DEFAULT_CACHE_BYTES: int = rust_core.DEFAULT_CACHE_BYTES
DEFAULT_HEARTBEAT_TIMEOUT_S: float = rust_core.DEFAULT_HEARTBEAT_TIMEOUT_S
DEFAULT_MAX_QUEUE: int = rust_core.DEFAULT_MAX_QUEUE
