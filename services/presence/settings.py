"""Settings of the presence service: the common ones plus listen address and Redis."""

from __future__ import annotations

from prim.config import COMMON, METRICS_PORT, Setting

SETTINGS = [
    *COMMON,
    Setting("listen", str, "127.0.0.1:50052", "gRPC listen address (host:port)."),
    METRICS_PORT,
    Setting(
        "redis_url",
        str,
        "redis://127.0.0.1:6379/0",
        "Redis URL. memory:// keeps presence in this process, valid only for one replica.",
        # The URL may carry the Redis password.
        secret=True,
    ),
    Setting(
        "redis_max_connections",
        int,
        512,
        "Size of the Redis connection pool. A call past it waits for a free connection "
        "up to PRIM_GRPC_DEADLINE_SECONDS.",
    ),
    Setting(
        "redis_timeout_seconds",
        float,
        2.0,
        "Socket and connect timeout of each Redis connection, in seconds.",
    ),
    Setting(
        "sweep_interval_seconds",
        float,
        1.0,
        "Period of the task that removes expired connections from the indexes, in seconds.",
    ),
]
