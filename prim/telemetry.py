"""OpenTelemetry traces of the services.

Each service calls :func:`setup` once at start, before it opens MongoDB or
Redis clients. The standard ``OTEL_*`` variables configure it:

* ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``otlp`` (OTLP over
  gRPC, configured by ``OTEL_EXPORTER_OTLP_*``), ``console`` (each finished
  span as one JSON line on stderr, among the log lines) and ``none``. Unset
  or ``none`` exports nothing and installs no instrumentation at all.
* ``OTEL_SERVICE_NAME``: the ``service.name`` of the spans, ``prim-<service>``
  when unset. ``OTEL_RESOURCE_ATTRIBUTES`` adds more resource attributes.
* ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``: read by the SDK,
  which samples parent-based always-on by default.
* ``OTEL_SDK_DISABLED=true``: the same as ``none``.

What is traced: every gRPC call on both ends (the interceptors of
:func:`server_interceptors` and :func:`client_interceptors`, which carry the
W3C ``traceparent`` in the call metadata), every REST request of the edge
(:func:`trace_http`), every WebSocket frame as the root of its own trace
(:func:`frame_span`), and the MongoDB and Redis commands made inside those.
Work done for several requests at once, such as the router's batched MongoDB
transaction, joins the first request's trace and links to the others
(:func:`batch_span`). Health checks, reflection, ``/healthz``, ``/readyz``,
``/metrics`` and the periodic readiness checks are not traced, so probes do
not flood the traces.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from prim import metrics

log = logging.getLogger("prim.telemetry")

EXPORTERS = ("otlp", "console", "none")

# Paths that probes and scrapers call every few seconds.
UNTRACED_PATHS = "/healthz,/readyz,/metrics"

# Contract code of a server-side failure. A span that records it gets the ERROR status.
_SERVER_ERROR = 1004

_enabled = False


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Return the exporters OTEL_TRACES_EXPORTER selects; raise ValueError for an unknown one."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER", "none")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ValueError(
            f"invalid OTEL_TRACES_EXPORTER={raw!r}: unknown exporter {unknown[0]!r}, "
            f"use {', '.join(EXPORTERS)}"
        )
    return [name for name in names if name != "none"]


def setup(service: str, instance_id: str = "") -> bool:
    """Install the tracer provider and the MongoDB and Redis instrumentation.

    ``service`` is the short name (``auth``, ``edge``...); ``instance_id``
    becomes ``service.instance.id`` when not empty. Return whether tracing
    is on. An unknown exporter name stops the service with exit status 2.
    """
    global _enabled
    if _enabled:
        return True
    try:
        names = exporter_names()
    except ValueError as exc:
        print(f"prim-{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not names:
        return False

    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    attributes = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"prim-{service}"}
    if instance_id:
        attributes["service.instance.id"] = instance_id
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(_processor(name))
    trace.set_tracer_provider(provider)
    PymongoInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _enabled = True
    log.info("tracing on", extra={"exporters": names, "service_name": attributes["service.name"]})
    return True


def _processor(name: str):
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if name == "console":
        # One line per span, written when the span ends, so the spans of a
        # process can be read next to its log lines.
        exporter = ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
        return SimpleSpanProcessor(exporter)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter())


def enabled() -> bool:
    return _enabled


def _traced_calls_filter():
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(
        filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection."))
    )


def server_interceptors() -> list[Any]:
    """Return the gRPC server interceptors that trace calls, empty when tracing is off."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced_calls_filter())]


def client_interceptors() -> list[Any]:
    """Return the gRPC channel interceptors that trace calls and send the trace context."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return aio_client_interceptors(filter_=_traced_calls_filter())


def trace_http(app):
    """Wrap an ASGI app so that each HTTP request is a server span.

    WebSocket connections pass through unwrapped, because their span would
    last as long as the connection and put every frame on it into one trace.
    :func:`frame_span` gives each frame its own trace instead.
    """
    if not _enabled:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import parse_excluded_urls

    # The standard variables replace the default list, as in the ASGI instrumentor.
    excluded = os.environ.get(
        "OTEL_PYTHON_ASGI_EXCLUDED_URLS",
        os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", UNTRACED_PATHS),
    )
    traced = OpenTelemetryMiddleware(
        app,
        excluded_urls=parse_excluded_urls(excluded),
        default_span_details=_route_span_details(app),
        exclude_spans=["receive", "send"],
    )

    async def http_only(scope, receive, send):
        if scope["type"] == "http":
            await traced(scope, receive, send)
        else:
            await app(scope, receive, send)

    return http_only


def _route_span_details(app):
    """Name a request span by method and route path, or by method alone when no route matches."""
    from starlette.routing import Match

    def details(scope: dict) -> tuple[str, dict[str, Any]]:
        method = scope.get("method", "HTTP")
        for route in getattr(app, "routes", ()):
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{method} {route.path}", {"http.route": route.path}
        return method, {}

    return details


class _Frame:
    def __init__(self, span: trace.Span):
        self.span = span
        self.cmd = "invalid"


# The frame being handled, so that name_frame() deep in the handler reaches its span.
_frame: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar("prim_frame", default=None)


@contextlib.contextmanager
def frame_span(attributes: Callable[[], dict[str, str]]) -> Iterator[None]:
    """Trace one received WebSocket frame and count it in FRAMES_RECEIVED.

    The span is the root of a new trace, with the attributes that
    ``attributes()`` returns (called only when tracing is on). Its name is
    ``invalid frame`` until :func:`name_frame` names it after the frame's cmd.
    """
    if not _enabled:
        frame = _Frame(trace.INVALID_SPAN)
        token = _frame.set(frame)
        try:
            yield
        finally:
            _frame.reset(token)
            metrics.count_frame_received(frame.cmd)
        return
    tracer = trace.get_tracer("prim.edge")
    span = tracer.start_span(
        "invalid frame",
        context=otel_context.Context(),
        kind=SpanKind.SERVER,
        attributes={f"prim.{key}": value for key, value in attributes().items() if value},
    )
    frame = _Frame(span)
    token = _frame.set(frame)
    try:
        with trace.use_span(span, end_on_exit=True):
            yield
    finally:
        _frame.reset(token)
        metrics.count_frame_received(frame.cmd)


def name_frame(cmd: str) -> None:
    """Name the current frame's span and metric after ``cmd``, a value from a fixed set."""
    frame = _frame.get()
    if frame is None:
        return
    frame.cmd = cmd
    frame.span.update_name(cmd)


def record_error(error: Any, transport: str) -> None:
    """Count an error returned to a caller and mark the current span with its code.

    ``error`` is a :class:`prim.errors.PrimError`; ``transport`` is ``http``,
    ``websocket`` or ``grpc``. Only server errors (1004) set the span's status
    to ERROR, as the HTTP and gRPC conventions do for 5xx and INTERNAL.
    """
    code = int(error.code)
    metrics.count_error(code, transport)
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("prim.code", code)
    if code == _SERVER_ERROR:
        span.set_status(Status(StatusCode.ERROR, error.msg))


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Run a block without spans, e.g. a periodic readiness check."""
    with suppress_instrumentation():
        yield


def current_span_context() -> trace.SpanContext | None:
    """Return the span context of the running request, or None outside a traced one."""
    span_context = trace.get_current_span().get_span_context()
    return span_context if span_context.is_valid else None


def trace_carrier(span_contexts: list[trace.SpanContext | None]) -> dict[str, str]:
    """Return the W3C trace headers of the first of ``span_contexts`` that is set (empty when off)."""
    if not _enabled:
        return {}
    for span_context in span_contexts:
        if span_context is not None:
            carrier: dict[str, str] = {}
            parent = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
            TraceContextTextMapPropagator().inject(carrier, context=parent)
            return carrier
    return {}


@contextlib.contextmanager
def remote_span(name: str, carrier: Mapping[str, str]) -> Iterator[None]:
    """Trace work requested with ``carrier``'s trace headers as a server span in that trace."""
    if not _enabled:
        yield
        return
    parent = TraceContextTextMapPropagator().extract(dict(carrier))
    tracer = trace.get_tracer("prim")
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER):
        yield


@contextlib.contextmanager
def batch_span(name: str, span_contexts: list[trace.SpanContext | None]) -> Iterator[None]:
    """Trace work done for a batch of requests, such as one MongoDB transaction.

    The span joins the trace of the first request that has one and links to
    every request, so each request's trace leads to the batch that served it.
    """
    if not _enabled:
        yield
        return
    contexts = [span_context for span_context in span_contexts if span_context is not None]
    parent = (
        trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
        if contexts
        else otel_context.Context()
    )
    tracer = trace.get_tracer("prim")
    with tracer.start_as_current_span(
        name,
        context=parent,
        links=[trace.Link(span_context) for span_context in contexts],
        attributes={"prim.batch_size": len(span_contexts)},
    ):
        yield
