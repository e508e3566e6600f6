"""Settings of an edge node."""

from prim.config import COMMON, Setting

SETTINGS = [
    *COMMON,
    Setting("http_listen", str, "127.0.0.1:8089", "HTTP and WebSocket listen address (host:port)."),
    Setting(
        "listen",
        str,
        "127.0.0.1:50060",
        "gRPC listen address (host:port). The router and the other edges dial it.",
    ),
    Setting("node_id", str, "", "Id of this edge node; empty uses host name and HTTP port."),
    Setting(
        "advertise_addr",
        str,
        "",
        "gRPC address other services dial for this node; empty uses the listen address.",
    ),
    Setting("admin_token", str, "", "Operator token for operator routes; empty disables them.", secret=True),
    Setting("auth_addr", str, "127.0.0.1:50051", "Address of the auth service (host:port)."),
    Setting("presence_addr", str, "127.0.0.1:50052", "Address of the presence service (host:port)."),
    Setting("router_addr", str, "127.0.0.1:50053", "Address of the router service (host:port)."),
    Setting(
        "direct_live",
        bool,
        True,
        "Deliver online-only messages from this edge to the recipients' edges, without the router.",
    ),
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
        "Deadline of one delivery of online-only messages to another edge node, in seconds.",
    ),
    Setting(
        "node_cache_seconds", float, 2.0, "How long the list of edge nodes is reused, in seconds."
    ),
    Setting(
        "live_order_guard_seconds",
        float,
        5.0,
        "After a user sends a stored message through this edge, the user's online-only messages "
        "also go through the router, so they stay behind it, until this long has passed since "
        "the router's last reply to the user, in seconds. Keep it above the router's "
        "PRIM_EDGE_DEADLINE_SECONDS.",
    ),
    Setting("max_message_bytes", int, 65536, "Largest WebSocket message and REST message field, in bytes."),
    Setting(
        "heartbeat_timeout_seconds",
        float,
        90.0,
        "A connection with no frame for this long is closed, in seconds.",
    ),
    Setting("login_timeout_seconds", float, 10.0, "Time a new connection has to log in, in seconds."),
    Setting(
        "presence_ttl_seconds",
        int,
        30,
        "Lifetime of presence entries; the node refreshes them every third of it, in seconds.",
    ),
    Setting("send_queue_frames", int, 1000, "Frames a connection's send queue holds before closing it with 1008."),
    Setting(
        "send_queue_bytes",
        int,
        4 * 1024 * 1024,
        "Bytes a connection's send queue holds before closing it with 1008.",
    ),
    Setting(
        "socket_send_buffer_bytes",
        int,
        65536,
        "Kernel send buffer (SO_SNDBUF) of each WebSocket, in bytes; 0 keeps the kernel's automatic sizing.",
    ),
    Setting(
        "drain_seconds",
        float,
        10.0,
        "Time from SIGTERM until the edge node exits, in seconds: clients get reconnect and "
        "close 1012, then in-flight gRPC calls finish.",
    ),
    Setting("ws_ping_interval_seconds", float, 20.0, "Interval of WebSocket ping frames, in seconds."),
    Setting(
        "event_loop",
        str,
        "uvloop",
        "Event loop of the edge process: uvloop (faster WebSocket I/O) or asyncio.",
    ),
]
