"""``prim-edge``: start an edge node (HTTP/WebSocket and gRPC in one process).

On SIGTERM or SIGINT the node drains: readiness turns false, new WebSockets
are refused, every client gets a ``reconnect`` push and close code 1012, the
node's presence entries are removed, then in-flight gRPC deliveries finish
and the process exits, all within ``PRIM_DRAIN_SECONDS``. A second signal
stops at once.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
import uvloop

from prim import config, logs, metrics, rpc, service, telemetry

from .app import create_app, websocket_shortcut
from .node import EdgeNode
from .servicer import EdgeServicer
from .settings import SETTINGS
from .ws_protocol import EdgeWebSocketProtocol
from prim.pb import edge_pb2_grpc

log = logging.getLogger("prim.edge")

SERVICE_NAMES = ["prim.v1.Edge"]


class EdgeServer(uvicorn.Server):
    """uvicorn's server, with the first exit signal turned into a drain."""

    def __init__(self, config: uvicorn.Config, drain_requested: asyncio.Event):
        super().__init__(config)
        self.drain_requested = drain_requested

    def handle_exit(self, sig, frame) -> None:
        # Not calling super(): uvicorn would raise the signal again after serve()
        # returns, which kills the process before the gRPC server stops.
        if self.drain_requested.is_set():
            self.should_exit = True
            self.force_exit = True
            return
        self.drain_requested.set()


async def run(settings) -> None:
    node = EdgeNode(settings)
    metrics.CONNECTIONS.set_function(lambda: len(node.hub))
    # Routers reach each edge node at its own address, so there is nothing
    # to rebalance, and an age limit would cut their delivery streams.
    grpc_server, health = rpc.make_server(
        SERVICE_NAMES, settings.service_token, max_connection_age=False
    )
    servicer = EdgeServicer(node)
    edge_pb2_grpc.add_EdgeServicer_to_server(servicer, grpc_server)
    if rpc.add_port(grpc_server, settings.listen) == 0:
        raise SystemExit(f"prim-edge: cannot listen on {settings.listen}")
    await grpc_server.start()
    await rpc.set_health(health, SERVICE_NAMES, serving=True)
    await node.start()

    EdgeWebSocketProtocol.send_buffer_bytes = settings.socket_send_buffer_bytes
    host, _, port = settings.http_listen.rpartition(":")
    app = create_app(node)
    uv_config = uvicorn.Config(
        websocket_shortcut(app, telemetry.trace_http(app)),
        host=host,
        port=int(port),
        log_config=None,
        access_log=False,
        lifespan="off",
        ws=EdgeWebSocketProtocol,
        # An oversized WebSocket message gets an error reply; see ws_protocol.
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_interval_seconds,
        timeout_graceful_shutdown=settings.grace_seconds,
    )
    drain_requested = asyncio.Event()
    server = EdgeServer(uv_config, drain_requested)
    service.settle_heap()
    log.info(
        "started",
        extra={
            "service": "prim-edge",
            "node_id": node.node_id,
            "http": settings.http_listen,
            "grpc": settings.listen,
            "settings": settings.redacted(),
        },
    )

    loop = asyncio.get_running_loop()
    # Loop time by which the process stops, set by the first exit signal.
    stop_by: float | None = None

    def seconds_left() -> float:
        return settings.grace_seconds if stop_by is None else max(stop_by - loop.time(), 0.0)

    async def drain_on_signal() -> None:
        nonlocal stop_by
        await drain_requested.wait()
        # The drain, the HTTP server's shutdown and the grace of in-flight gRPC
        # calls share PRIM_DRAIN_SECONDS, so the process exits within it.
        stop_by = loop.time() + settings.drain_seconds
        await rpc.set_health(health, SERVICE_NAMES, serving=False)
        try:
            await asyncio.wait_for(node.drain(), seconds_left())
        except TimeoutError:
            log.warning("drain timed out", extra={"node_id": node.node_id, "left": len(node.hub)})
        server.config.timeout_graceful_shutdown = seconds_left()
        server.should_exit = True

    drainer = asyncio.create_task(drain_on_signal())
    await server.serve()
    drainer.cancel()
    # Routers keep their delivery streams open; end them, or they would hold
    # the gRPC server's stop for its whole grace time.
    servicer.end_streams()
    await grpc_server.stop(seconds_left())
    await node.close()
    log.info("stopped", extra={"service": "prim-edge", "node_id": node.node_id})


def main() -> None:
    settings = config.load("prim-edge", SETTINGS)
    logs.setup(settings.log_level, settings.log_format)
    telemetry.setup("edge", instance_id=settings.node_id)
    if settings.event_loop == "uvloop":
        uvloop.run(run(settings))
    elif settings.event_loop == "asyncio":
        asyncio.run(run(settings))
    else:
        raise SystemExit(f"prim-edge: invalid PRIM_EVENT_LOOP={settings.event_loop!r}: use uvloop or asyncio")


if __name__ == "__main__":
    main()
