"""Control-plane state in Redis: the only package that knows Redis keys and change events.

See `clipper.state.store` for the schema and the event format.
"""

from .redis_server import RedisServer, redis_server_binary
from .store import (
    CHANNEL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_POLICY,
    NO_CONTAINER,
    InvalidInputType,
    StateError,
    StateStore,
    canonical_input_type,
    parse_event,
    policy_allows_many,
)

__all__ = [
    "CHANNEL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_POLICY",
    "NO_CONTAINER",
    "InvalidInputType",
    "RedisServer",
    "StateError",
    "StateStore",
    "canonical_input_type",
    "parse_event",
    "policy_allows_many",
    "redis_server_binary",
]
