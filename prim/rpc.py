"""gRPC plumbing shared by the services.

* :func:`make_server` builds a ``grpc.aio`` server with the standard health
  and reflection services and, when a service token is configured, rejects
  calls that do not carry it (health and reflection stay open for probes and
  grpcurl).
* :class:`Peer` is one long-lived channel to another service. Every call has
  a deadline, carries the service token, and turns a failure back into the
  :class:`~prim.errors.PrimError` the callee raised. Retries of idempotent
  methods and keepalive come from gRPC's own service config.
* :func:`add_port` and :class:`Peer` use TLS when the ``PRIM_GRPC_TLS_*``
  settings name a certificate and key (see :mod:`prim.tls`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from prim import metrics, telemetry, tls
from prim.errors import PrimError, Unavailable, from_rpc_error

log = logging.getLogger("prim.rpc")

# Methods that are safe to repeat; sends and deliveries are not, because a
# lost reply does not mean the callee did nothing.
_NON_IDEMPOTENT = {
    "prim.v1.Router": ["Send", "SendBatch", "Broadcast", "Kick"],
    "prim.v1.Edge": ["Deliver", "DeliverTenant", "Kick"],
}

# Header that opens every SendStream call of the router, before any reply.
# The edge waits for it to know the router has the method (see SendLane).
SEND_STREAM_HEADER = "prim-send-stream"

_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def _service_config(service: str) -> str:
    no_retry = [{"service": service, "method": m} for m in _NON_IDEMPOTENT.get(service, [])]
    configs: list[dict[str, Any]] = [{"name": [{"service": service}], "retryPolicy": _RETRY_POLICY}]
    if no_retry:
        configs.append({"name": no_retry})
    return json.dumps({"methodConfig": configs})


def channel_options(service: str) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", _service_config(service)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # A peer that restarts at the same address (an edge node's container
        # restarted in its pod) is reached again within 2 s. gRPC's default
        # backoff grows to 120 s, so calls would fail long after it is back.
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]


SERVER_OPTIONS = [
    # Accept the clients' keepalive pings (every 20 s, see channel_options)
    # while no data flows. gRPC's default minimum is 5 minutes: a server
    # sends GOAWAY "too_many_pings" for pings that come sooner, which ends
    # the connection's stream calls.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    # Make clients reconnect now and then, so replicas added by an autoscaler
    # get a share of long-lived channels.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # gRPC sets SO_REUSEPORT by default, so a second server on a taken port
    # would start and take a share of its connections. Fail its start instead.
    ("grpc.so_reuseport", 0),
]

_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):
    """Reject calls whose ``authorization`` metadata lacks the service token."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        presented = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value
                break
        handler = await continuation(handler_call_details)
        if hmac.compare_digest(presented.encode(), self._expected):
            return handler
        log.warning("rejected call without service credential", extra={"method": method})
        if handler is not None and handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        return grpc.unary_unary_rpc_method_handler(_deny)


async def _deny(request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid service credential")


async def _deny_stream(requests, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid service credential")
    yield  # pragma: no cover - abort raises; the yield makes this a stream handler


def make_server(
    service_names: Iterable[str], service_token: str, *, max_connection_age: bool = True
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """Build a server with health and reflection. Register servicers before start.

    Tracing comes first among the interceptors, so a call rejected for its
    service token still gets a span and a latency observation. Without
    ``max_connection_age``, connections live until a side closes them: for
    a server that clients address directly rather than through a balanced
    Service, whose stream calls the age limit would cut after its grace.
    """
    interceptors = [*telemetry.server_interceptors(), metrics.GrpcMetricsInterceptor()]
    if service_token:
        interceptors.append(ServiceTokenInterceptor(service_token))
    options = SERVER_OPTIONS
    if not max_connection_age:
        options = [option for option in options if not option[0].startswith("grpc.max_connection_age")]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    return server, health_servicer


def add_port(server: grpc.aio.Server, address: str, grpc_tls: tls.GrpcTls | None = None) -> int:
    """Listen on ``address`` over TLS when configured, else plaintext; return the port (0: failed).

    ``grpc_tls`` None takes the files from the ``PRIM_GRPC_TLS_*`` environment variables.
    """
    grpc_tls = grpc_tls or tls.from_environment()
    try:
        if grpc_tls is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, grpc_tls.server_credentials())
    except RuntimeError:
        # grpcio raises RuntimeError when it binds none of the addresses, as for a port in use.
        log.error(
            "binding the gRPC port failed: is another process listening on it?",
            extra={"listen": address},
        )
        return 0


# A health name that is SERVING while the process runs, whatever its
# dependencies do. Liveness probes check it, so an outage of MongoDB or Redis
# does not restart every pod.
LIVENESS_SERVICE = "liveness"


async def set_health(health_servicer, service_names: Iterable[str], serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


class Peer:
    """One long-lived channel to a service, with deadlines and error mapping."""

    def __init__(
        self,
        name: str,
        target: str,
        stub_class: type,
        service: str,
        *,
        service_token: str = "",
        deadline: float = 5.0,
        max_in_flight: int = 256,
        grpc_tls: tls.GrpcTls | None = None,
    ):
        self.name = name
        self.target = target
        self.deadline = deadline
        # None takes the TLS files from the PRIM_GRPC_TLS_* environment variables.
        grpc_tls = grpc_tls or tls.from_environment()
        interceptors = telemetry.client_interceptors()
        if grpc_tls is None:
            self.channel = grpc.aio.insecure_channel(
                target, options=channel_options(service), interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.secure_channel(
                target,
                grpc_tls.channel_credentials(),
                options=channel_options(service) + grpc_tls.channel_options(),
                interceptors=interceptors,
            )
        self.stub = stub_class(self.channel)
        self._metadata = (("authorization", f"Bearer {service_token}"),) if service_token else ()
        # Thousands of calls at once on one channel fail with CANCELLED; callers
        # past this bound wait for a slot instead.
        self._slots = asyncio.Semaphore(max_in_flight)

    async def call(self, method: str, request, *, timeout: float | None = None):
        """Call ``method`` of the stub; raise PrimError on failure."""
        rpc = getattr(self.stub, method)
        try:
            async with self._slots:
                return await rpc(
                    request,
                    timeout=timeout or self.deadline,
                    metadata=self._metadata,
                )
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc, self.name)
            if isinstance(error, Unavailable):
                log.warning(
                    "call failed",
                    extra={"peer": self.name, "target": self.target, "method": method, "status": exc.code().name},
                )
            raise error from None

    def open_stream(self, method: str):
        """Start a long-lived bidirectional stream call of ``method``, without a deadline.

        The caller writes requests and reads replies on the returned call, and
        cancels it when done. It guards against a hung peer with its own timeouts.
        """
        return getattr(self.stub, method)(metadata=self._metadata)

    async def check_health(self, timeout: float = 1.0) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self.channel.close()


__all__ = ["Peer", "PrimError", "make_server", "set_health", "channel_options"]
