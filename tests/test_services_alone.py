"""The router and an edge node, each started alone, serve gRPC health and stop on SIGTERM.

(The auth and presence services have the same test in their own modules.)
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prim import devcluster

pytestmark = pytest.mark.integration


async def wait_serving(port: int, service: str = "", timeout: float = 15.0) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = None
        for _ in range(int(timeout / 0.2)):
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"health of {service!r} on {port} is {reply}")


def router_env(port: int, mongo_url: str, db_name: str) -> dict[str, str]:
    """Return the environment of a router on ``port`` whose presence service is absent."""
    return {
        "PRIM_LISTEN": f"127.0.0.1:{port}",
        "PRIM_MONGO_URL": mongo_url,
        "PRIM_MONGO_DB": db_name,
        "PRIM_PRESENCE_ADDR": f"127.0.0.1:{devcluster.free_port()}",
    }


async def test_router_alone_serving(mongo_server, db_name, tmp_path):
    port = devcluster.free_port()
    env = router_env(port, mongo_server, db_name)
    process = devcluster.spawn("router", [devcluster._bin("prim-router")], port, env, tmp_path)
    try:
        await wait_serving(port)
        await wait_serving(port, "prim.v1.Router")
    finally:
        assert process.stop(signal.SIGTERM) == 0
    assert '"event":"stopped"' in process.log_path.read_text()


async def test_edge_alone_serving(tmp_path):
    http_port, grpc_port = devcluster.free_port(), devcluster.free_port()
    nowhere = f"127.0.0.1:{devcluster.free_port()}"
    env = {
        "PRIM_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "PRIM_LISTEN": f"127.0.0.1:{grpc_port}",
        "PRIM_AUTH_ADDR": nowhere,
        "PRIM_PRESENCE_ADDR": nowhere,
        "PRIM_ROUTER_ADDR": nowhere,
    }
    process = devcluster.spawn("edge", [devcluster._bin("prim-edge")], http_port, env, tmp_path)
    try:
        await wait_serving(grpc_port, "prim.v1.Edge")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            # Its peers are absent, so it is alive but not ready.
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["code"] == 1004
    finally:
        assert process.stop(signal.SIGTERM) == 0
    assert '"event":"stopped"' in process.log_path.read_text()


async def test_router_on_taken_port_exits(mongo_server, db_name, tmp_path):
    port = devcluster.free_port()
    env = router_env(port, mongo_server, db_name)
    router = [devcluster._bin("prim-router")]
    first = devcluster.spawn("router", router, port, env, tmp_path / "first")
    try:
        await wait_serving(port, "prim.v1.Router")
        # gRPC's default SO_REUSEPORT would let this one start and take a
        # share of the first one's connections.
        second = devcluster.spawn("router", router, port, env, tmp_path / "second", wait=False)
        try:
            code = await asyncio.to_thread(second.proc.wait, 30)
        finally:
            second.stop(signal.SIGKILL)
        assert code != 0
        log = second.log_path.read_text()
        assert "binding the gRPC port failed" in log
        assert f'"listen":"127.0.0.1:{port}"' in log
        assert f"cannot listen on 127.0.0.1:{port}" in log
        await wait_serving(port, "prim.v1.Router")
    finally:
        assert first.stop(signal.SIGTERM) == 0


def test_free_port_never_repeats():
    ports = [devcluster.free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
