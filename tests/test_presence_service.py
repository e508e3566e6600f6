"""Presence service tests: the servicer runs in-process on a free port and is called through
prim.rpc.Peer, once on a real redis-server and once on the in-memory backend."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis.asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prim import devcluster, rpc
from prim.config import ConfigError, Settings
from prim.errors import Code, PrimError
from prim.pb import presence_pb2 as pb
from prim.pb import presence_pb2_grpc
from prim.pb.common_pb2 import Location, User
from prim.edge.node import EdgeNode
from prim.edge.settings import SETTINGS as EDGE_SETTINGS
from prim.presence.server import App, build
from prim.presence.servicer import PresenceServicer
from prim.presence.settings import SETTINGS

TOKEN = "presence-test-token"
SERVICE = "prim.v1.Presence"


@dataclasses.dataclass
class Presence:
    peer: rpc.Peer
    app: App
    redis_url: str

    async def call(self, method: str, request):
        return await self.peer.call(method, request)


@contextlib.asynccontextmanager
async def running_presence(url: str, servicer_class: type | None = None):
    """Run the presence servicer in-process on a free port, on the backend that ``url`` selects.

    ``servicer_class``, a subclass of PresenceServicer, replaces the servicer's class.
    """
    environ = {
        "PRIM_REDIS_URL": url,
        "PRIM_SERVICE_TOKEN": TOKEN,
        "PRIM_SWEEP_INTERVAL_SECONDS": "0.2",
    }
    app = await build(Settings(SETTINGS, environ))
    server, _ = rpc.make_server(app.service_names, TOKEN)
    for add, servicer in app.servicers:
        if servicer_class is not None and isinstance(servicer, PresenceServicer):
            servicer.__class__ = servicer_class
        add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    stub = presence_pb2_grpc.PresenceStub
    peer = rpc.Peer("presence", target, stub, SERVICE, service_token=TOKEN)
    try:
        yield Presence(peer, app, url)
    finally:
        await peer.close()
        await server.stop(0)
        await app.close()


async def flushed(redis_url: str) -> str:
    client = redis.asyncio.from_url(redis_url)
    await client.flushall()
    await client.aclose()
    return redis_url


@pytest.fixture(params=["redis", "memory"])
async def presence(request):
    if request.param == "redis":
        url = await flushed(request.getfixturevalue("redis_server"))
    else:
        url = "memory://"
    async with running_presence(url) as running:
        yield running


@pytest.fixture
async def redis_presence(redis_server):
    async with running_presence(await flushed(redis_server)) as running:
        yield running


def record(
    user_id="u1", platform="web", conn="c1", node="n1", tenant="acme", login=1000, **fields
) -> User:
    return User(
        sys_account=tenant,
        user_id=user_id,
        app_platform=platform,
        node_id=node,
        conn_id=conn,
        login_time=login,
        **fields,
    )


def loc(user_id, platform, node, conn) -> Location:
    return Location(user_id=user_id, app_platform=platform, node_id=node, conn_id=conn)


async def connect(presence, user, policy="", max_devices=0, ttl=60) -> list[Location]:
    request = pb.ConnectRequest(
        user=user, device_policy=policy, max_devices=max_devices, ttl_seconds=ttl
    )
    reply = await presence.call("Connect", request)
    return list(reply.replaced)


async def located_conns(presence, tenant, *user_ids) -> list[str]:
    reply = await presence.call("Locate", pb.LocateRequest(tenant=tenant, user_ids=user_ids))
    return sorted(location.conn_id for location in reply.locations)


async def list_page(presence, tenant, offset=0, limit=1000, user_id=""):
    request = pb.ListConnectionsRequest(tenant=tenant, offset=offset, limit=limit, user_id=user_id)
    return await presence.call("ListConnections", request)


# Device policies


async def test_per_platform_replaces_same_platform(presence):
    assert await connect(presence, record(conn="c1", platform="web")) == []
    assert await connect(presence, record(conn="c2", platform="android")) == []
    assert await connect(presence, record(user_id="u2", conn="c9", platform="web")) == []

    replaced = await connect(presence, record(conn="c3", platform="web", node="n2"))

    assert replaced == [loc("u1", "web", "n1", "c1")]
    assert await located_conns(presence, "acme", "u1") == ["c2", "c3"]
    assert await located_conns(presence, "acme", "u2") == ["c9"]


async def test_per_platform_named_policy(presence):
    await connect(presence, record(conn="c1"), policy="per-platform")
    replaced = await connect(presence, record(conn="c2"), policy="per-platform")
    assert replaced == [loc("u1", "web", "n1", "c1")]


async def test_single_replaces_all_others(presence):
    await connect(presence, record(conn="c1", platform="web"))
    await connect(presence, record(conn="c2", platform="android", node="n2"))

    replaced = await connect(presence, record(conn="c3", platform="ios"), policy="single")

    assert sorted(replaced, key=lambda location: location.conn_id) == [
        loc("u1", "web", "n1", "c1"),
        loc("u1", "android", "n2", "c2"),
    ]
    assert await located_conns(presence, "acme", "u1") == ["c3"]


async def test_multi_keeps_newest_max_devices(presence):
    for conn, login in (("c1", 100), ("c2", 200)):
        assert await connect(presence, record(conn=conn, login=login), "multi", 2) == []

    replaced = await connect(presence, record(conn="c3", login=300), "multi", 2)
    assert replaced == [loc("u1", "web", "n1", "c1")]

    # A new connection is kept even when its login_time is older than the others.
    replaced = await connect(presence, record(conn="c4", login=50), "multi", 2)
    assert replaced == [loc("u1", "web", "n1", "c2")]
    assert await located_conns(presence, "acme", "u1") == ["c3", "c4"]


async def test_multi_breaks_login_tie_by_conn_id(presence):
    for conn in ("c-b", "c-a"):
        await connect(presence, record(conn=conn, login=100), "multi", 2)

    replaced = await connect(presence, record(conn="c-c", login=100), "multi", 2)

    assert [location.conn_id for location in replaced] == ["c-a"]
    assert await located_conns(presence, "acme", "u1") == ["c-b", "c-c"]


# Disconnect


async def test_late_disconnect_keeps_newer(presence):
    old = record(conn="c1")
    await connect(presence, old)
    await connect(presence, record(conn="c2"))

    request = pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id="c1")
    reply = await presence.call("Disconnect", request)

    assert reply.removed is False
    assert await located_conns(presence, "acme", "u1") == ["c2"]
    # A Refresh that still carries the replaced connection does not bring it back.
    refresh = pb.RefreshRequest(node_id="n1", users=[old], ttl_seconds=60)
    assert (await presence.call("Refresh", refresh)).refreshed == 0
    assert await located_conns(presence, "acme", "u1") == ["c2"]


async def test_disconnect_batch_keeps_each_result(presence):
    """DisconnectBatch removes each entry as Disconnect would and reports each failure alone."""
    await connect(presence, record(conn="c1"))
    await connect(presence, record(user_id="u2", conn="c2"))
    await connect(presence, record(tenant="globex", conn="c3"))
    requests = [
        pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id="c1"),
        pb.DisconnectRequest(tenant="", user_id="u2", conn_id="c2"),
        # Another tenant's connection id is not reachable from acme.
        pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id="c3"),
        pb.DisconnectRequest(tenant="acme", user_id="u2", conn_id="c2"),
    ]
    reply = await presence.call("DisconnectBatch", pb.DisconnectBatchRequest(requests=requests))

    removed, invalid, foreign, second = reply.results
    assert (removed.code, removed.reply.removed) == (0, True)
    assert (invalid.code, invalid.msg) == (1001, "invalid tenant '': must be 1-64 letters, digits or ._-@")
    assert (foreign.code, foreign.reply.removed) == (0, False)
    assert (second.code, second.reply.removed) == (0, True)
    assert await located_conns(presence, "acme", "u1", "u2") == []
    assert await located_conns(presence, "globex", "u1") == ["c3"]


class _WithoutDisconnectBatch(PresenceServicer):
    """Presence as released before DisconnectBatch: the generated base class returns UNIMPLEMENTED."""

    DisconnectBatch = presence_pb2_grpc.PresenceServicer.DisconnectBatch


async def test_edge_falls_back_to_disconnect(redis_server, caplog):
    url = await flushed(redis_server)
    async with running_presence(url, _WithoutDisconnectBatch) as presence:
        for conn in ("c1", "c2", "c3"):
            await connect(presence, record(conn=conn), "multi", 5)
        environ = {"PRIM_PRESENCE_ADDR": presence.peer.target, "PRIM_SERVICE_TOKEN": TOKEN}
        node = EdgeNode(Settings(EDGE_SETTINGS, environ))
        try:
            removals = [
                node._disconnects.submit(pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id=conn))
                for conn in ("c1", "c2")
            ]
            with caplog.at_level(logging.WARNING, logger="prim.edge"):
                replies = await asyncio.gather(*removals)
            assert [reply.removed for reply in replies] == [True, True]
            assert "presence has no DisconnectBatch" in caplog.text
            assert await located_conns(presence, "acme", "u1") == ["c3"]
            # The next removal goes straight to Disconnect, without a second warning.
            caplog.clear()
            request = pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id="c3")
            assert (await node._disconnects.submit(request)).removed is True
            assert "presence has no DisconnectBatch" not in caplog.text
            assert await located_conns(presence, "acme", "u1") == []
        finally:
            await node.close()


async def test_disconnect_removes_own_entry(presence):
    await connect(presence, record(conn="c1"))

    wrong_user = pb.DisconnectRequest(tenant="acme", user_id="u2", conn_id="c1")
    assert (await presence.call("Disconnect", wrong_user)).removed is False
    assert await located_conns(presence, "acme", "u1") == ["c1"]

    own = pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id="c1")
    assert (await presence.call("Disconnect", own)).removed is True
    assert await located_conns(presence, "acme", "u1") == []
    assert (await list_page(presence, "acme")).total == 0


# Expiry and Refresh


async def test_ttl_expiry_hides_connection(presence):
    await connect(presence, record(conn="c1"), ttl=1)
    await connect(presence, record(user_id="u2", conn="c2"), ttl=60)
    started = time.monotonic()

    while await located_conns(presence, "acme", "u1") and time.monotonic() - started < 2.5:
        await asyncio.sleep(0.1)

    assert time.monotonic() - started < 2.5
    assert await located_conns(presence, "acme", "u1") == []
    page = await list_page(presence, "acme")
    assert page.total == 1
    assert [user.conn_id for user in page.users] == ["c2"]
    assert (await list_page(presence, "acme", user_id="u1")).total == 0
    node_map = await presence.call("NodeMap", pb.NodeMapRequest(tenant="acme"))
    assert [user.conn_id for node in node_map.nodes for user in node.users] == ["c2"]


async def test_sweeper_empties_redis_indexes(redis_presence):
    await connect(redis_presence, record(conn="c1"), ttl=1)
    await asyncio.sleep(1.8)

    client = redis.asyncio.from_url(redis_presence.redis_url)
    try:
        assert await client.zcard("prim:expiry") == 0
        assert await client.zcard("prim:{acme}:order") == 0
        assert await client.zcard("prim:{acme}:expiry") == 0
        assert await client.hlen("prim:{acme}:meta") == 0
        assert await client.scard("prim:node:{n1}:conns") == 0
    finally:
        await client.aclose()


async def test_refresh_extends_ttl(presence):
    await connect(presence, record(conn="c1"), ttl=1)
    await asyncio.sleep(0.5)

    request = pb.RefreshRequest(node_id="n1", users=[record(conn="c1")], ttl_seconds=60)
    assert (await presence.call("Refresh", request)).refreshed == 1
    await asyncio.sleep(1.0)

    assert await located_conns(presence, "acme", "u1") == ["c1"]


async def test_refresh_rebuilds_after_flushall(redis_presence):
    users = [
        record(conn="c1", nickname="Ann", client_ip="10.0.0.1"),
        record(conn="c2", platform="ios", heartbeat_time=5),
        record(user_id="u2", conn="c3", tenant="globex"),
    ]
    for user in users:
        await connect(redis_presence, user)
    client = redis.asyncio.from_url(redis_presence.redis_url)
    await client.flushall()
    await client.aclose()
    assert await located_conns(redis_presence, "acme", "u1") == []

    request = pb.RefreshRequest(node_id="n1", users=users, ttl_seconds=60)
    assert (await redis_presence.call("Refresh", request)).refreshed == 3

    assert await located_conns(redis_presence, "acme", "u1") == ["c1", "c2"]
    assert list((await list_page(redis_presence, "acme")).users) == [users[1], users[0]]
    assert list((await list_page(redis_presence, "globex")).users) == users[2:]


async def test_refresh_writes_thousands(presence):
    users = [
        record(user_id=f"u{index:05d}", conn=f"c{index}", tenant=("acme", "globex")[index % 2])
        for index in range(5000)
    ]
    # A record may leave node_id empty, and the request's node_id fills it.
    users[0].node_id = ""
    request = pb.RefreshRequest(node_id="n1", users=users, ttl_seconds=60)

    assert (await presence.call("Refresh", request)).refreshed == 5000

    assert (await list_page(presence, "acme", limit=1)).total == 2500
    assert (await list_page(presence, "globex", limit=1)).total == 2500
    assert (await list_page(presence, "acme", limit=1)).users[0].node_id == "n1"


async def test_refresh_extends_known_node_only(presence):
    node = pb.Node(node_id="n1", grpc_addr="127.0.0.1:50061", ttl_seconds=1)
    await presence.call("RegisterNode", node)
    await asyncio.sleep(0.6)

    await presence.call("Refresh", pb.RefreshRequest(node_id="n1", ttl_seconds=60))
    await presence.call("Refresh", pb.RefreshRequest(node_id="n9", ttl_seconds=60))
    await asyncio.sleep(0.7)

    nodes = (await presence.call("ListNodes", pb.ListNodesRequest())).nodes
    assert [node.node_id for node in nodes] == ["n1"]


# ListConnections, NodeMap and Locate


async def test_list_connections_pages_in_order(presence):
    platforms = ["web", "android", "ios", "pc", "mini"]
    users = [
        record(user_id=f"u{user:02d}", platform=platform, conn=f"c{user}-{platform}-{copy}")
        for user in range(25)
        for platform in platforms
        for copy in range(2)
    ]
    random.Random(7).shuffle(users)
    for user in users:
        await connect(presence, user, policy="multi", max_devices=100)
    expected = sorted((u.user_id, u.app_platform, u.conn_id) for u in users)

    listed = []
    for offset in (0, 100, 200):
        page = await list_page(presence, "acme", offset=offset, limit=100)
        assert page.total == 250
        listed += [(u.user_id, u.app_platform, u.conn_id) for u in page.users]

    assert listed == expected
    beyond = await list_page(presence, "acme", offset=250, limit=100)
    assert beyond.total == 250
    assert list(beyond.users) == []


async def test_list_connections_of_one_user(presence):
    for platform in ("web", "ios", "android"):
        await connect(presence, record(user_id="u1", platform=platform, conn=f"c-{platform}"))
        await connect(presence, record(user_id="u10", platform=platform, conn=f"d-{platform}"))

    page = await list_page(presence, "acme", offset=1, limit=1, user_id="u1")

    assert page.total == 3
    assert [user.conn_id for user in page.users] == ["c-ios"]
    whole = await list_page(presence, "acme", user_id="u1")
    assert [user.app_platform for user in whole.users] == ["android", "ios", "web"]


async def test_node_map_groups_by_node(presence):
    await connect(presence, record(user_id="u1", conn="c1", node="n1"))
    await connect(presence, record(user_id="u2", conn="c2", node="n2"))
    await connect(presence, record(user_id="u3", conn="c3", node="n1"))

    reply = await presence.call("NodeMap", pb.NodeMapRequest(tenant="acme"))

    grouped = {node.node_id: [user.conn_id for user in node.users] for node in reply.nodes}
    assert grouped == {"n1": ["c1", "c3"], "n2": ["c2"]}


async def test_locate_several_users(presence):
    await connect(presence, record(user_id="u1", conn="c1", node="n1"))
    await connect(presence, record(user_id="u2", conn="c2", node="n2", platform="ios"))

    request = pb.LocateRequest(tenant="acme", user_ids=["u1", "u2", "u3", "u1"])
    reply = await presence.call("Locate", request)

    assert sorted(reply.locations, key=lambda location: location.conn_id) == [
        loc("u1", "web", "n1", "c1"),
        loc("u2", "ios", "n2", "c2"),
    ]
    empty = await presence.call("Locate", pb.LocateRequest(tenant="acme"))
    assert list(empty.locations) == []


# Tenants


async def test_tenants_never_mix(presence):
    acme = record(tenant="acme", conn="c1", node="n1")
    globex = record(tenant="globex", conn="c1", node="n2")
    assert await connect(presence, acme) == []
    assert await connect(presence, globex) == []
    assert await connect(presence, record(tenant="acme", conn="c5"), policy="single") != []

    acme_reply = await presence.call("Locate", pb.LocateRequest(tenant="acme", user_ids=["u1"]))
    globex_reply = await presence.call(
        "Locate", pb.LocateRequest(tenant="globex", user_ids=["u1"])
    )
    assert list(acme_reply.locations) == [loc("u1", "web", "n1", "c5")]
    assert list(globex_reply.locations) == [loc("u1", "web", "n2", "c1")]

    for tenant, node in (("acme", "n1"), ("globex", "n2")):
        page = await list_page(presence, tenant)
        assert page.total == 1
        assert [user.sys_account for user in page.users] == [tenant]
        node_map = await presence.call("NodeMap", pb.NodeMapRequest(tenant=tenant))
        assert [entry.node_id for entry in node_map.nodes] == [node]

    request = pb.DisconnectRequest(tenant="acme", user_id="u1", conn_id="c1")
    assert (await presence.call("Disconnect", request)).removed is False
    assert await located_conns(presence, "globex", "u1") == ["c1"]


# Edge nodes


async def test_unregister_node_removes_its_connections(presence):
    for node_id, port in (("n1", 50061), ("n2", 50062)):
        node = pb.Node(node_id=node_id, grpc_addr=f"127.0.0.1:{port}", ttl_seconds=60)
        await presence.call("RegisterNode", node)
    on_n1 = [
        record(user_id="u1", conn="c1", node="n1"),
        record(user_id="u2", conn="c2", node="n1"),
        record(user_id="u1", conn="c1", node="n1", tenant="globex"),
    ]
    for user in on_n1:
        await connect(presence, user)
    await connect(presence, record(user_id="u1", conn="c3", node="n2", platform="ios"))

    reply = await presence.call("UnregisterNode", pb.UnregisterNodeRequest(node_id="n1"))

    assert reply.removed_connections == 3
    nodes = (await presence.call("ListNodes", pb.ListNodesRequest())).nodes
    assert [node.node_id for node in nodes] == ["n2"]
    assert await located_conns(presence, "acme", "u1", "u2") == ["c3"]
    assert (await list_page(presence, "globex")).total == 0
    late = pb.RefreshRequest(node_id="n1", users=on_n1, ttl_seconds=60)
    assert (await presence.call("Refresh", late)).refreshed == 0


async def test_list_nodes_drops_expired(presence):
    live = pb.Node(
        node_id="n1",
        grpc_addr="127.0.0.1:50061",
        http_addr="127.0.0.1:8089",
        ttl_seconds=60,
        started_at=1234,
    )
    await presence.call("RegisterNode", live)
    await presence.call("RegisterNode", pb.Node(node_id="n2", grpc_addr="h:1", ttl_seconds=1))

    await asyncio.sleep(1.2)

    assert list((await presence.call("ListNodes", pb.ListNodesRequest())).nodes) == [live]


# Input checks and credentials

INVALID = [
    ("Connect", pb.ConnectRequest(user=record(tenant="a b"), ttl_seconds=60),
     Code.INVALID_PARAMETER, "user.sys_account 'a b'"),
    ("Connect", pb.ConnectRequest(user=record(user_id=""), ttl_seconds=60),
     Code.INVALID_USER_ID, "user.user_id ''"),
    ("Connect", pb.ConnectRequest(user=record(conn=""), ttl_seconds=60),
     Code.INVALID_PARAMETER, "user.conn_id ''"),
    ("Connect", pb.ConnectRequest(user=record(), ttl_seconds=0),
     Code.INVALID_PARAMETER, "ttl_seconds 0"),
    ("Connect", pb.ConnectRequest(user=record(), ttl_seconds=86401),
     Code.INVALID_PARAMETER, "ttl_seconds 86401"),
    ("Connect", pb.ConnectRequest(user=record(), device_policy="all", ttl_seconds=60),
     Code.INVALID_PARAMETER, "device_policy 'all'"),
    ("Connect", pb.ConnectRequest(user=record(), device_policy="multi", ttl_seconds=60),
     Code.INVALID_PARAMETER, "max_devices 0"),
    ("Disconnect", pb.DisconnectRequest(tenant="", user_id="u1", conn_id="c1"),
     Code.INVALID_PARAMETER, "tenant ''"),
    ("Disconnect", pb.DisconnectRequest(tenant="acme", user_id="u 1", conn_id="c1"),
     Code.INVALID_USER_ID, "user_id 'u 1'"),
    ("Refresh", pb.RefreshRequest(node_id="", ttl_seconds=60),
     Code.INVALID_PARAMETER, "node_id ''"),
    ("Refresh", pb.RefreshRequest(node_id="n1", users=[record(node="n2")], ttl_seconds=60),
     Code.INVALID_PARAMETER, "users[0].node_id 'n2'"),
    ("Refresh", pb.RefreshRequest(node_id="n1", users=[record(user_id="x" * 65)], ttl_seconds=60),
     Code.INVALID_USER_ID, "users[0].user_id 'xxx"),
    ("Locate", pb.LocateRequest(tenant="acme", user_ids=["u1", "u/2"]),
     Code.INVALID_USER_ID, "user_ids[1] 'u/2'"),
    ("ListConnections", pb.ListConnectionsRequest(tenant="acme", limit=0),
     Code.INVALID_PARAMETER, "limit 0"),
    ("ListConnections", pb.ListConnectionsRequest(tenant="acme", limit=1001),
     Code.INVALID_PARAMETER, "limit 1001"),
    ("ListConnections", pb.ListConnectionsRequest(tenant="acme", offset=-1, limit=10),
     Code.INVALID_PARAMETER, "offset -1"),
    ("ListConnections", pb.ListConnectionsRequest(tenant="acme", limit=10, user_id="a:b"),
     Code.INVALID_USER_ID, "user_id 'a:b'"),
    ("NodeMap", pb.NodeMapRequest(tenant="x" * 65),
     Code.INVALID_PARAMETER, "tenant 'xxx"),
    ("RegisterNode", pb.Node(node_id="n1", ttl_seconds=60),
     Code.INVALID_PARAMETER, "grpc_addr ''"),
    ("RegisterNode", pb.Node(node_id="n1", grpc_addr="h:99999", ttl_seconds=60),
     Code.INVALID_PARAMETER, "grpc_addr 'h:99999'"),
    ("RegisterNode", pb.Node(node_id="n1", grpc_addr="h:1", ttl_seconds=0),
     Code.INVALID_PARAMETER, "ttl_seconds 0"),
    ("UnregisterNode", pb.UnregisterNodeRequest(node_id="a b"),
     Code.INVALID_PARAMETER, "node_id 'a b'"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "request_message", "code", "fragment"), INVALID)
async def test_invalid_input_rejected(presence, method, request_message, code, fragment):
    with pytest.raises(PrimError) as raised:
        await presence.call(method, request_message)

    assert raised.value.code == code
    assert f"invalid {fragment}" in raised.value.msg


@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_call_without_service_token_rejected(presence, token):
    target = presence.peer.target
    stub = presence_pb2_grpc.PresenceStub
    peer = rpc.Peer("presence", target, stub, SERVICE, service_token=token)
    try:
        with pytest.raises(PrimError) as raised:
            await peer.call("ListNodes", pb.ListNodesRequest())
    finally:
        await peer.close()

    assert raised.value.code == Code.UNAUTHORIZED


# Backend selection and readiness


async def test_check_fails_while_redis_unreachable():
    closed_port = devcluster.free_port()
    async with running_presence(f"redis://127.0.0.1:{closed_port}/0") as running:
        assert await running.app.check() is False
        with pytest.raises(PrimError) as raised:
            await running.call("Locate", pb.LocateRequest(tenant="acme", user_ids=["u1"]))

    assert raised.value.code == Code.SERVER_ERROR
    assert "redis unavailable" in raised.value.msg


async def test_check_passes_with_redis(redis_presence):
    assert await redis_presence.app.check() is True


async def test_unknown_url_scheme_rejected():
    settings = Settings(SETTINGS, {"PRIM_REDIS_URL": "http://127.0.0.1:6379"})
    with pytest.raises(ConfigError, match="PRIM_REDIS_URL scheme 'http'"):
        await build(settings)


# The command


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
        except grpc.RpcError:
            return health_pb2.HealthCheckResponse.UNKNOWN


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_command_serves_then_stops_on_sigterm(backend, request, tmp_path):
    url = request.getfixturevalue("redis_server") if backend == "redis" else "memory://"
    port = devcluster.free_port()
    env = {
        **os.environ,
        "PRIM_LISTEN": f"127.0.0.1:{port}",
        "PRIM_REDIS_URL": url,
        "PRIM_SERVICE_TOKEN": TOKEN,
    }
    command = Path(sys.executable).parent / "prim-presence"
    log_path = tmp_path / "presence.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [str(command)], env=env, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL
        )
    try:
        devcluster.wait_port(port, proc)
        deadline = time.monotonic() + 10
        status = health_status(port)
        while status != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.1)
            status = health_status(port)
        assert status == health_pb2.HealthCheckResponse.SERVING

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    log_text = log_path.read_text()
    assert '"stopped"' in log_text
    if backend == "memory":
        assert "valid only when a single presence replica runs" in log_text



async def test_connect_batch_keeps_each_result(presence):
    """ConnectBatch applies each request as Connect would and reports each failure alone."""
    reply = await presence.call(
        "ConnectBatch",
        pb.ConnectBatchRequest(
            requests=[
                pb.ConnectRequest(user=record(conn="c1"), ttl_seconds=30),
                pb.ConnectRequest(user=record(user_id="bad id", conn="c3"), ttl_seconds=30),
            ]
        ),
    )
    ok, failed = reply.results
    assert ok.code == 0
    assert failed.code == 1002
    assert "user_id" in failed.msg
    reply = await presence.call(
        "ConnectBatch",
        pb.ConnectBatchRequest(
            requests=[pb.ConnectRequest(user=record(conn="c2"), ttl_seconds=30)]
        ),
    )
    (replaced,) = reply.results
    assert list(replaced.reply.replaced) == [loc("u1", "web", "n1", "c1")]
