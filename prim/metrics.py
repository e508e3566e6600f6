"""Prometheus metrics of the services, in prometheus_client's default registry.

The edge serves them at ``/metrics`` on its HTTP port. Auth, presence and
router serve them on their own HTTP port when ``PRIM_METRICS_PORT`` is not 0
(:func:`start_server`). A process exports only the metrics it updates, plus
prometheus_client's process and Python metrics.

No metric has a tenant or user label, because their number has no bound and
every label value is a separate time series. Every label here takes a value
from a fixed set: frame commands outside the contract count as ``unknown`` or
``other``, and error codes come from :class:`prim.errors.Code`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("prim.metrics")

# Every cmd of the WebSocket contract: requests, and the pushes msg, kick and reconnect.
FRAME_COMMANDS = frozenset(
    {"login", "ping", "heartbeat", "msg", "sync", "syncBroadcast", "exit", "kick", "reconnect"}
)

# Seconds, from a local delivery (about 1 ms) to the 2 s default edge deadline and past it.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONNECTIONS = Gauge("prim_connections", "Logged-in WebSocket connections on this edge node.")
FRAMES_RECEIVED = Counter(
    "prim_frames_received",
    "WebSocket frames received, by cmd (unknown: a cmd prim does not have; invalid: not a request).",
    ["cmd"],
)
FRAMES_SENT = Counter(
    "prim_frames_sent",
    "Frames handed to WebSocket connections to write, by cmd: replies carry the request's cmd, "
    "pushes msg, kick or reconnect.",
    ["cmd"],
)
MESSAGES_STORED = Counter(
    "prim_messages_stored",
    "Messages stored by the router, by kind (direct or broadcast); repeated clientMsgIds not counted.",
    ["kind"],
)
MESSAGES_DELIVERED = Counter(
    "prim_messages_delivered",
    "Pushes of messages that edge nodes accepted, one per connection reached, by kind.",
    ["kind"],
)
DELIVERY_SECONDS = Histogram(
    "prim_delivery_seconds",
    "Time from a message's storage (its arrival when not stored) until the edge nodes "
    "accepted its pushes, by kind; observed when at least one connection was reached.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
LOCATION_LOOKUPS = Counter(
    "prim_location_lookups",
    "Users whose connections the router looked up, by where the answer came from: "
    "cache (its copy, kept fresh by presence's change feed) or redis.",
    ["source"],
)
ERRORS = Counter(
    "prim_errors",
    "Errors returned to callers, by contract code and transport (http, websocket or grpc).",
    ["code", "transport"],
)
GRPC_SERVER_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time this server took to handle a unary gRPC call, or one batch of a SendStream call, "
    "by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
    buckets=_LATENCY_BUCKETS,
)


# The FRAMES_RECEIVED and FRAMES_SENT children of each contract cmd, looked up once.
_frames_received = {
    cmd: FRAMES_RECEIVED.labels(cmd) for cmd in (*FRAME_COMMANDS, "unknown", "invalid")
}


def count_frame_received(cmd: str) -> None:
    """Count a received frame; ``cmd`` is a contract cmd, ``unknown`` or ``invalid``."""
    counter = _frames_received.get(cmd)
    if counter is None:
        counter = FRAMES_RECEIVED.labels(cmd)
    counter.inc()



_frames_sent = {cmd: FRAMES_SENT.labels(cmd) for cmd in FRAME_COMMANDS}
_frames_sent_other = FRAMES_SENT.labels("other")


def count_frames_sent(cmd: str, count: int = 1) -> None:
    """Count frames of ``cmd`` handed to a connection; a cmd outside the contract counts as ``other``."""
    _frames_sent.get(cmd, _frames_sent_other).inc(count)


_lookups_cached = LOCATION_LOOKUPS.labels("cache")
_lookups_read = LOCATION_LOOKUPS.labels("redis")


def count_location_lookups(hits: int, misses: int) -> None:
    """Count users located from the router's cache (hits) and from Redis (misses)."""
    if hits:
        _lookups_cached.inc(hits)
    if misses:
        _lookups_read.inc(misses)


def count_error(code: int, transport: str) -> None:
    ERRORS.labels(str(int(code)), transport).inc()


def start_server(settings: Any, listen: str) -> int | None:
    """Serve /metrics on ``settings.metrics_port`` at the host of ``listen`` and return the port.

    Return None when the setting is 0, and exit when the port is taken. The
    server runs in a daemon thread of prometheus_client and stops with the process.
    """
    port = settings.get("metrics_port", 0)
    if not port:
        return None
    host = listen.rpartition(":")[0].strip("[]") or "0.0.0.0"
    try:
        prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        raise SystemExit(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    log.info("metrics server started", extra={"metrics_listen": f"{host}:{port}"})
    return port


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Observe the handling time of every unary-unary call in GRPC_SERVER_HANDLING.

    Streaming methods (only the health service's Watch) are passed through
    without measurement, and so are calls to methods the server does not
    have, which keeps the method label a fixed set.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        return grpc.unary_unary_rpc_method_handler(
            _timed(handler.unary_unary, service, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _timed(behavior: Callable[..., Awaitable[Any]], service: str, method: str):
    async def timed(request, context):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await behavior(request, context)
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            elapsed = time.perf_counter() - started
            GRPC_SERVER_HANDLING.labels(service, method, code.name).observe(elapsed)

    return timed


_send_stream_batches = {
    ok: GRPC_SERVER_HANDLING.labels("prim.v1.Router", "SendStream", "OK" if ok else "UNKNOWN")
    for ok in (True, False)
}


def observe_stream_batch(ok: bool, since: float) -> None:
    """Time the router took over one batch of a SendStream call, from ``since`` (perf_counter)."""
    _send_stream_batches[ok].observe(time.perf_counter() - since)


def observe_delivery(kind: str, delivered: int, since: float) -> None:
    """Count the pushes of one message and observe its delivery time from ``since``.

    ``since`` is a ``time.perf_counter()`` value taken when the message was
    stored, or when it arrived if it is not stored.
    """
    MESSAGES_DELIVERED.labels(kind).inc(delivered)
    if delivered:
        DELIVERY_SECONDS.labels(kind).observe(time.perf_counter() - since)
