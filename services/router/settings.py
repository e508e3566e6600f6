"""Settings of the router service."""

from prim.config import COMMON, METRICS_PORT, MONGO_URL, Setting

SETTINGS = [
    *COMMON,
    Setting("listen", str, "127.0.0.1:50053", "gRPC listen address (host:port)."),
    METRICS_PORT,
    MONGO_URL,
    Setting("mongo_db", str, "prim", "MongoDB database of the stored messages."),
    Setting(
        "mongo_write_concern",
        str,
        "majority",
        "Write concern of stored messages: majority or a number of members.",
    ),
    Setting("presence_addr", str, "127.0.0.1:50052", "Address of the presence service (host:port)."),
    Setting(
        "presence_redis_url",
        str,
        "",
        "Presence's Redis (its PRIM_REDIS_URL). The router, and the edge for online-only "
        "messages, read it directly to find recipients' connections: one Redis round trip "
        "instead of a Locate call, and none while the cache, kept fresh by presence's change "
        "channel, holds them. Empty or memory:// asks presence.",
        secret=True,
    ),
    Setting(
        "edge_deadline_seconds",
        float,
        2.0,
        "Deadline of one delivery to an edge node, in seconds; a dead edge costs at most this.",
    ),
    Setting("store_batch_max", int, 256, "Largest number of messages stored in one transaction."),
    Setting("node_cache_seconds", float, 2.0, "How long the list of edge nodes is reused, in seconds."),
]
