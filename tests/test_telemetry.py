"""Traces and Prometheus metrics of the suite, read from real processes.

The suite of this module runs with ``OTEL_TRACES_EXPORTER=console``: every
process writes each finished span as one JSON line into its log file. The
tests read the log files of all processes and group the spans by trace id,
so a trace that crosses processes is checked as it really crossed them.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prim import devcluster, telemetry
from prim.client import ApiError, TenantClient

from helpers import connect_user, edge_url, new_tenant, next_msg, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A suite of its own with console span export and metrics on every service."""
    suite = devcluster.Cluster(
        admin_token=secrets.token_urlsafe(16),
        log_dir=tmp_path_factory.mktemp("traced-logs"),
        extra_env={"OTEL_TRACES_EXPORTER": "console"},
        metrics_ports={name: devcluster.free_port() for name in ("auth", "presence", "router")},
    )
    with suite.running():
        yield suite


@pytest.fixture
async def tenant(traced):
    client = await new_tenant(traced, unique("traced"))
    yield client
    await client.close()


def read_spans(cluster) -> list[dict]:
    """Every span that a process of ``cluster`` has written to its log so far."""
    spans = []
    for process in cluster.processes.values():
        if process.log_path is None:
            continue
        for line in process.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "context" in entry and "resource" in entry:
                spans.append(entry)
    return spans


def service_of(span: dict) -> str:
    return span["resource"]["attributes"]["service.name"]


def instance_of(span: dict) -> str:
    return span["resource"]["attributes"].get("service.instance.id", "")


async def wait_for_trace(cluster, find_root, expected_services: set[str], timeout: float = 15.0):
    """Return (root, spans of its trace) once the trace has spans of every expected service."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        spans = read_spans(cluster)
        roots = [span for span in spans if find_root(span)]
        if roots:
            trace_id = roots[0]["context"]["trace_id"]
            in_trace = [span for span in spans if span["context"]["trace_id"] == trace_id]
            if expected_services <= {service_of(span) for span in in_trace}:
                return roots[0], in_trace
        if asyncio.get_running_loop().time() > deadline:
            names = sorted({(service_of(s), s["name"]) for s in spans})
            raise AssertionError(f"no complete trace within {timeout} s; spans seen: {names}")
        await asyncio.sleep(0.2)


def assert_one_tree(root: dict, spans: list[dict]) -> None:
    ids = {span["context"]["span_id"] for span in spans}
    assert root["parent_id"] is None
    assert [span for span in spans if span["parent_id"] is None] == [root]
    orphans = [span["name"] for span in spans if span["parent_id"] and span["parent_id"] not in ids]
    assert orphans == []


async def test_message_is_one_trace(traced, tenant):
    u1 = await connect_user(traced, tenant, "u1", 0, nickname="Ann")
    u2 = await connect_user(traced, tenant, "u2", 1)
    try:
        await u1.send("u2", "hello across edges")
        assert (await next_msg(u2))["message"] == "hello across edges"
    finally:
        await u1.close()
        await u2.close()

    def is_msg_frame(span):
        attributes = span["attributes"]
        return (
            span["name"] == "msg"
            and attributes.get("prim.tenant") == tenant.account
            and attributes.get("prim.user_id") == "u1"
        )

    services = {"prim-edge", "prim-router"}
    root, spans = await wait_for_trace(traced, is_msg_frame, services)
    assert service_of(root) == "prim-edge"
    assert instance_of(root) == "edge1"
    assert_one_tree(root, spans)

    # An edge node's service.instance.id is its PRIM_NODE_ID, and other services get a random one.
    seen = {
        (
            service_of(s),
            instance_of(s) if service_of(s) == "prim-edge" else "",
            s["name"],
            s["kind"],
        )
        for s in spans
    }
    # The batch travels on the edge's long-lived SendStream call, and carries
    # the frame's trace context itself.
    assert ("prim-router", "", "/prim.v1.Router/SendStream", "SpanKind.SERVER") in seen
    # The router reads the recipients' connections from presence's Redis
    # itself. The first lookup of a user is not cached yet.
    assert ("prim-router", "", "EVALSHA", "SpanKind.CLIENT") in seen
    # The push to u2 leaves through edge2, inside the same trace.
    assert ("prim-edge", "edge2", "/prim.v1.Edge/DeliverStream", "SpanKind.SERVER") in seen
    # MongoDB and Redis commands made for this message are in it too.
    systems = {(service_of(s), s["attributes"].get("db.system")) for s in spans}
    assert ("prim-router", "mongodb") in systems
    assert ("prim-router", "redis") in systems


async def test_spans_hold_no_token_or_body(traced, tenant):
    u1 = await connect_user(traced, tenant, "u1", 0)
    u2 = await connect_user(traced, tenant, "u2", 1)
    body = "secret body " + secrets.token_hex(4)
    try:
        await u1.send("u2", body)
        await next_msg(u2)
    finally:
        await u1.close()
        await u2.close()
    await wait_for_trace(
        traced,
        lambda s: s["name"] == "msg" and s["attributes"].get("prim.tenant") == tenant.account,
        {"prim-edge", "prim-router"},
    )
    text = "\n".join(json.dumps(span) for span in read_spans(traced))
    for secret in (
        u1.token,
        u2.token,
        body,
        tenant.password,
        traced.admin_token,
        traced.service_token,
    ):
        assert secret not in text


async def test_rest_request_traced_by_route(traced, tenant):
    await tenant.user_list()
    async with httpx.AsyncClient(base_url=edge_url(traced, 0)) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200

    def is_user_list(span):
        return span["name"] == "GET /user/list" and span["kind"] == "SpanKind.SERVER"

    root, spans = await wait_for_trace(
        traced, is_user_list, {"prim-edge", "prim-auth", "prim-presence"}
    )
    assert root["attributes"]["http.route"] == "/user/list"
    assert_one_tree(root, spans)
    names = {(service_of(s), s["name"]) for s in spans}
    assert ("prim-auth", "/prim.v1.Auth/VerifyTenant") in names
    assert ("prim-presence", "/prim.v1.Presence/ListConnections") in names
    # Probes and scrapes are left out, and so are the health checks behind /readyz.
    all_names = {s["name"] for s in read_spans(traced)}
    assert "GET /healthz" not in all_names
    assert "GET /metrics" not in all_names
    assert not any("grpc.health" in name for name in all_names)


async def test_invalid_frame_span_and_error_code(traced, tenant):
    u1 = await connect_user(traced, tenant, "u1", 0)
    try:
        await u1.send_frame("fly", {}, "9")
        reply = await u1.next_push()
        assert reply["response"]["code"] == 1010
    finally:
        await u1.close()

    def is_unknown(span):
        return span["name"] == "unknown" and span["attributes"].get("prim.tenant") == tenant.account

    root, _ = await wait_for_trace(traced, is_unknown, {"prim-edge"})
    assert root["attributes"]["prim.code"] == 1010
    # A client mistake is not a server error.
    assert root["status"]["status_code"] == "UNSET"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Return every sample of a /metrics page as {(name, labels): value}."""
    text = httpx.get(url, timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_of_a_message(traced, tenant):
    router_url = f"http://127.0.0.1:{traced.metrics_ports['router']}/metrics"
    edge1_url = edge_url(traced, 0) + "/metrics"
    router_before = scrape(router_url)
    edge_before = scrape(edge1_url)

    u1 = await connect_user(traced, tenant, "u1", 0)
    u2 = await connect_user(traced, tenant, "u2", 1)
    try:
        await u1.send("u2", "counted")
        await next_msg(u2)
        edge_during = scrape(edge1_url)
        await u1.send_frame("fly", {}, "5")
        await u1.next_push()
    finally:
        await u1.close()
        await u2.close()
    router = scrape(router_url)
    edge = scrape(edge1_url)

    def grew(after, before, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(edge_during, "prim_connections") >= 1
    assert grew(router, router_before, "prim_messages_stored_total", kind="direct") >= 1
    assert grew(router, router_before, "prim_messages_delivered_total", kind="direct") >= 1
    assert grew(router, router_before, "prim_delivery_seconds_count", kind="direct") >= 1
    send = {"grpc_service": "prim.v1.Router", "grpc_method": "SendStream", "grpc_code": "OK"}
    assert grew(router, router_before, "grpc_server_handling_seconds_count", **send) >= 1
    looked_up = grew(router, router_before, "prim_location_lookups_total", source="redis")
    looked_up += grew(router, router_before, "prim_location_lookups_total", source="cache")
    assert looked_up >= 2
    assert grew(edge, edge_before, "prim_frames_received_total", cmd="login") >= 1
    assert grew(edge, edge_before, "prim_frames_received_total", cmd="msg") >= 1
    assert grew(edge, edge_before, "prim_frames_sent_total", cmd="msg") >= 1
    assert grew(edge, edge_before, "prim_frames_received_total", cmd="unknown") >= 1
    assert grew(edge, edge_before, "prim_errors_total", code="1010", transport="websocket") >= 1
    # No series names a tenant.
    assert not any(tenant.account in str(labels) for _, labels in edge | router)


async def test_metrics_of_rejected_credentials(traced, tenant):
    auth_url = f"http://127.0.0.1:{traced.metrics_ports['auth']}/metrics"
    edge1_url = edge_url(traced, 0) + "/metrics"
    auth_before, edge_before = scrape(auth_url), scrape(edge1_url)
    async with TenantClient(edge_url(traced, 0), tenant.account, "wrong-password") as wrong:
        with pytest.raises(ApiError) as failure:
            await wrong.user_list()
    assert failure.value.code == 1003
    auth, edge = scrape(auth_url), scrape(edge1_url)
    grpc_error = {"code": "1003", "transport": "grpc"}
    assert (
        value(auth, "prim_errors_total", **grpc_error)
        - value(auth_before, "prim_errors_total", **grpc_error)
        >= 1
    )
    http_error = {"code": "1003", "transport": "http"}
    assert (
        value(edge, "prim_errors_total", **http_error)
        - value(edge_before, "prim_errors_total", **http_error)
        >= 1
    )
    verify = {
        "grpc_service": "prim.v1.Auth",
        "grpc_method": "VerifyTenant",
        "grpc_code": "UNAUTHENTICATED",
    }
    assert value(auth, "grpc_server_handling_seconds_count", **verify) >= 1


def test_presence_serves_metrics(traced):
    samples = scrape(f"http://127.0.0.1:{traced.metrics_ports['presence']}/metrics")
    register = {
        "grpc_service": "prim.v1.Presence",
        "grpc_method": "RegisterNode",
        "grpc_code": "OK",
    }
    assert value(samples, "grpc_server_handling_seconds_count", **register) >= 1


async def test_default_exports_no_spans(cluster):
    """The shared suite runs without OTEL_* variables, so its logs hold no span."""
    client = await new_tenant(cluster, unique("quiet"))
    try:
        await client.user_list()
    finally:
        await client.close()
    assert read_spans(cluster) == []


def test_exporter_names_parsed():
    assert telemetry.exporter_names({}) == []
    assert telemetry.exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert telemetry.exporter_names({"OTEL_TRACES_EXPORTER": "otlp, console"}) == [
        "otlp",
        "console",
    ]
    assert (
        telemetry.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
        == []
    )
    with pytest.raises(ValueError, match="unknown exporter 'zipkin'"):
        telemetry.exporter_names({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_unknown_exporter_stops_service():
    env = {"OTEL_TRACES_EXPORTER": "zipkin", "PRIM_LISTEN": f"127.0.0.1:{devcluster.free_port()}"}
    result = subprocess.run(
        [devcluster._bin("prim-router")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid OTEL_TRACES_EXPORTER='zipkin'" in result.stderr
