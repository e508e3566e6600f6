"""Readiness follows the dependencies: a Redis outage and its end, and /system/state.

The outage test runs its own small suite (one edge node) with its own
redis-server, stops that Redis and starts it again on the same port, so the
shared suite of the other tests keeps its Redis.
"""

from __future__ import annotations

import asyncio
import secrets

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prim import __version__, devcluster, rpc

from helpers import connect_user, edge_url, new_tenant, unique

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The services check their dependencies every 2 s and a Redis command times out
# after 2 s. The rest of the margin is for a loaded 2-core machine.
CHANGE_TIMEOUT = 30.0


@pytest.fixture
def small_suite(tmp_path):
    suite = devcluster.Cluster(
        admin_token=secrets.token_urlsafe(16),
        log_dir=tmp_path,
        edge_http_ports=[devcluster.free_port()],
    )
    with suite.running():
        yield suite


async def health_status(port: int, service: str = "") -> int | None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.aio.AioRpcError:
            return None
        return reply.status


async def ready_status(url: str) -> int | None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        try:
            return (await http.get("/readyz")).status_code
        except httpx.HTTPError:
            return None


async def wait_until(read, expected, description: str) -> None:
    """Poll ``read()`` until it returns ``expected``, at most CHANGE_TIMEOUT seconds."""
    deadline = asyncio.get_running_loop().time() + CHANGE_TIMEOUT
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await read()
        if last == expected:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"{description} is {last!r}, expected {expected!r} within {CHANGE_TIMEOUT} s"
    )


async def test_redis_outage_and_recovery(small_suite):
    presence_port = small_suite.presence_port
    edge = edge_url(small_suite, 0)

    async def presence_health():
        return await health_status(presence_port)

    async def presence_service_health():
        return await health_status(presence_port, "prim.v1.Presence")

    async def edge_ready():
        return await ready_status(edge)

    await wait_until(presence_health, SERVING, "presence health")
    await wait_until(edge_ready, 200, "edge /readyz")

    # Stopped and replaced under the same key, so the suite still stops Redis after presence.
    small_suite.processes["redis"].stop()
    await wait_until(presence_health, NOT_SERVING, "presence health without Redis")
    assert await presence_service_health() == NOT_SERVING
    await wait_until(edge_ready, 503, "edge /readyz without Redis")
    async with httpx.AsyncClient(base_url=edge) as http:
        reply = (await http.get("/readyz")).json()
        state = (await http.get("/system/state")).json()["data"]
    assert reply["code"] == 1004
    assert state["status"] == "degraded"
    # Liveness stays SERVING, so an outage of Redis restarts no pod.
    assert await health_status(presence_port, rpc.LIVENESS_SERVICE) == SERVING

    small_suite.processes["redis"] = devcluster.start_redis(
        small_suite.redis_port, None, small_suite.log_dir
    )
    await wait_until(presence_health, SERVING, "presence health after Redis returned")
    assert await presence_service_health() == SERVING
    await wait_until(edge_ready, 200, "edge /readyz after Redis returned")
    async with httpx.AsyncClient(base_url=edge) as http:
        assert (await http.get("/system/state")).json()["data"]["status"] == "ok"


async def test_system_state_by_caller(cluster):
    tenant = await new_tenant(cluster, unique("state"))
    users = [await connect_user(cluster, tenant, f"u{i}", 0) for i in range(2)]
    try:
        async with httpx.AsyncClient(base_url=edge_url(cluster, 0), timeout=10) as http:
            anonymous = await http.get("/system/state")
            as_tenant = await http.get("/system/state", auth=(tenant.account, tenant.password))
            as_operator = await http.get(
                "/system/state", headers={"Authorization": f"Bearer {cluster.admin_token}"}
            )
    finally:
        await asyncio.gather(*(user.close() for user in users))
        await tenant.close()

    for reply in (anonymous, as_tenant, as_operator):
        assert reply.status_code == 200
        body = reply.json()
        assert body["code"] == 200
        data = body["data"]
        assert data["status"] == "ok"
        assert data["version"] == __version__
        assert data["connections"] >= 2
        assert data["edgesAlive"] == 2
        for secret in (
            cluster.admin_token,
            cluster.service_token,
            tenant.password,
            *(u.token for u in users),
        ):
            assert secret not in reply.text
    assert set(anonymous.json()["data"]) == {"status", "version", "connections", "edgesAlive"}
    assert set(as_tenant.json()["data"]) == {"status", "version", "connections", "edgesAlive"}

    details = as_operator.json()["data"]["details"]
    assert details["nodeId"] == "edge1"
    assert details["tenantsOnline"] >= 1
    assert {edge["nodeId"] for edge in details["edges"]} == {"edge1", "edge2"}
