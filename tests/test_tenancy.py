"""Who may do what: the tenant isolation matrix, revocation, expiry and tenant settings.

Everything here runs against the shared suite (the ``cluster`` fixture), except
the rate limit and TLS tests at the end, which start their own suite with
internal gRPC over mutual TLS and login failure limits of a few seconds.
The last test reads every service log of both suites for the tokens and
passwords used here.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
import grpc
import httpx
import pytest
from helpers import edge_url, new_tenant, next_msg, no_push, unique, ws_url
from prim.edge.app import ROUTES
from prim.edge.session import HANDLERS
from starlette.routing import Route

from prim import devcluster, rpc
from prim.client import ApiError, UserConnection
from prim.errors import PrimError
from prim.pb import (
    auth_pb2,
    auth_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from prim.tls import GrpcTls

pytestmark = pytest.mark.integration

# Every token and password this module uses, searched for in the logs at the end.
SECRETS: set[str] = set()
# Log folders of the suites this module started itself.
EXTRA_LOG_DIRS: list[Path] = []

UNPROTECTED_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
COLUMNS = ("own", "other", "none", "wrong", "operator")

OK = (200, 200)
UNAUTHORIZED = (401, 1003)
FORBIDDEN = (403, 1013)
NOT_FOUND = (404, 1005)


def remember(tenant) -> None:
    SECRETS.add(tenant.password)


async def issue(tenant, user_id: str, platform: str = "web", **fields) -> dict:
    """Get a token through REST and remember it for the log check."""
    body = {"userId": user_id, "appPlatform": platform, **fields}
    reply = await tenant.call("POST", "/sysClient/getToken", json=body)
    SECRETS.add(reply["token"])
    return reply


async def login(cluster, tenant, user_id: str, edge: int, platform: str = "web", **fields):
    reply = await issue(tenant, user_id, platform, **fields)
    conn = await UserConnection.connect(ws_url(cluster, edge), reply["token"])
    conn.token = reply["token"]
    conn.expires_at = reply["expiresAt"]
    return conn


async def next_kick(conn: UserConnection, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        push = await conn.next_push(max(deadline - time.monotonic(), 0.01))
        if push["cmd"] == "kick":
            return push


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"))
    remember(client)
    yield client
    await client.close()


@pytest.fixture
async def globex(cluster):
    client = await new_tenant(cluster, unique("globex"))
    remember(client)
    yield client
    await client.close()


# The isolation matrix


class World:
    """Two tenants with data: acme's must never reach globex or an anonymous caller."""

    acme: Any
    globex: Any
    acme_token: str
    marker: str  # text of acme's stored messages and acme u1's nickname
    conns: list[UserConnection]


@pytest.fixture(scope="module")
async def world(cluster):
    w = World()
    w.acme = await new_tenant(cluster, unique("acme"))
    w.globex = await new_tenant(cluster, unique("globex"))
    remember(w.acme)
    remember(w.globex)
    w.marker = "acme-private-" + secrets.token_hex(6)
    u1 = await login(cluster, w.acme, "u1", 0, nickname=w.marker)
    u2 = await login(cluster, w.acme, "u2", 1)
    w.acme_token = u1.token
    await u1.send("u2", w.marker)
    await w.acme.call("POST", "/msg/sendMsg", json={"from": "u1", "all": True, "message": w.marker})
    w.conns = [u1, u2]
    # Take the message and the broadcast off the push queues.
    assert (await next_msg(u2))["message"] == w.marker
    assert (await next_msg(u2))["message"] == w.marker
    assert (await next_msg(u1))["message"] == w.marker
    yield w
    for conn in w.conns:
        await conn.close()
    await w.acme.close()
    await w.globex.close()


def args_create(w, column):
    return {"json": {"account": unique("m"), "password": "matrix-password-1"}}


def args_exit(w, column):
    # globex revokes "u1", a user id that acme's u1 also has: acme's u1 must stay.
    return {"json": {"userId": "u1" if column == "other" else "nobody"}}


REST_MATRIX: dict[tuple[str, str], tuple[dict[str, tuple[int, int]], Callable]] = {}
TENANT_ROUTE = {
    "own": OK,
    "other": OK,
    "none": UNAUTHORIZED,
    "wrong": UNAUTHORIZED,
    "operator": FORBIDDEN,
}
OPERATOR_ROUTE = {
    "own": FORBIDDEN,
    "other": FORBIDDEN,
    "none": UNAUTHORIZED,
    "wrong": UNAUTHORIZED,
    "operator": OK,
}
PUBLIC_ROUTE = dict.fromkeys(COLUMNS, OK)


def cell(method: str, path: str, expected: dict, args: Callable = lambda w, column: {}) -> None:
    REST_MATRIX[(method, path)] = (expected, args)


cell("POST", "/sysClient/createSysClient", OPERATOR_ROUTE, args_create)
cell(
    "GET",
    "/sysClient/getSysClient",
    {**TENANT_ROUTE, "other": NOT_FOUND, "operator": OK},
    lambda w, column: {"params": {"account": w.acme.account}},
)
cell("GET", "/sysClient/listSysClients", OPERATOR_ROUTE, lambda w, c: {"params": {"size": 500}})
cell("POST", "/sysClient/getToken", TENANT_ROUTE, lambda w, c: {"json": {"userId": "u1"}})
cell("POST", "/sysClient/exit", TENANT_ROUTE, args_exit)
cell(
    "POST",
    "/sysClient/updateTokenVal",
    {**TENANT_ROUTE, "other": NOT_FOUND},
    lambda w, c: {"json": {"ttl": 3600, "token": w.acme_token}},
)
cell("POST", "/sysClient/updateSettings", TENANT_ROUTE, lambda w, c: {"json": {}})
cell("GET", "/user/list", TENANT_ROUTE)
cell("POST", "/user/online", TENANT_ROUTE, lambda w, c: {"json": {"userId": "u1"}})
cell("GET", "/user/listUserMaps", TENANT_ROUTE)
cell(
    "POST",
    "/msg/sendMsg",
    TENANT_ROUTE,
    lambda w, c: {"json": {"from": "u9", "to": "u3", "message": f"matrix {c}"}},
)
cell("GET", "/msg/getMsg", TENANT_ROUTE, lambda w, c: {"params": {"userId": "u1", "peerId": "u2"}})
cell("GET", "/msg/getBroadcast", TENANT_ROUTE)
cell("GET", "/system/state", PUBLIC_ROUTE)


def api_routes() -> set[tuple[str, str]]:
    """(method, path) of every HTTP route in app.ROUTES that the matrix must cover."""
    found = set()
    for route in ROUTES:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        if route.path in UNPROTECTED_PATHS:
            continue
        for method in route.methods - {"HEAD"}:
            found.add((method, route.path))
    return found


def test_matrix_covers_every_route():
    missing = api_routes() - set(REST_MATRIX)
    assert not missing, f"routes missing from REST_MATRIX: {sorted(missing)}"
    stale = set(REST_MATRIX) - api_routes()
    assert not stale, f"REST_MATRIX rows without a route: {sorted(stale)}"


def test_matrix_covers_every_command():
    assert set(WS_MATRIX) == set(HANDLERS)


def accounts_in(value: Any) -> set[str]:
    """Every ``account`` and ``sysAccount`` value anywhere in a reply."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("account", "sysAccount") and isinstance(item, str):
                found.add(item)
            found |= accounts_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= accounts_in(item)
    return found


async def call_as(cluster, w, column: str, method: str, path: str, kwargs: dict, victim):
    auth: Any = None
    headers = {}
    if column == "own":
        auth = (w.acme.account, w.acme.password)
    elif column == "other":
        auth = (w.globex.account, w.globex.password)
    elif column == "wrong":
        auth = (victim.account, victim.password + "-wrong")
    elif column == "operator":
        headers["Authorization"] = f"Bearer {cluster.admin_token}"
    async with httpx.AsyncClient(base_url=edge_url(cluster, 0), auth=auth, headers=headers) as http:
        return await http.request(method, path, **kwargs)


@pytest.mark.parametrize("route", sorted(REST_MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
async def test_rest_matrix(cluster, world, route):
    expected, args = REST_MATRIX[route]
    method, path = route
    # Wrong passwords go to an account of their own, so the failures stay below its limit.
    victim = await new_tenant(cluster)
    remember(victim)
    try:
        for column in COLUMNS:
            response = await call_as(
                cluster, world, column, method, path, args(world, column), victim
            )
            body = response.json()
            got = (response.status_code, body["code"])
            assert got == expected[column], f"{method} {path} as {column}: {got} {body['msg']}"
            text = response.text
            assert world.acme_token not in text, f"{method} {path} as {column} returns a token"
            assert world.acme.password not in text
            if column in ("other", "none", "wrong"):
                assert world.marker not in text, f"{method} {path} as {column} leaks acme data"
                assert world.acme.account not in accounts_in(body["data"])
            if column == "other":
                assert accounts_in(body["data"]) <= {world.globex.account}
            if got != OK:
                assert body["data"] is None
    finally:
        await victim.close()

    # globex's exit of "u1" and its other calls left acme's connections alone.
    u1, u2 = world.conns
    assert await u1.request("ping") == "pong"
    assert await u2.request("ping") == "pong"


# WebSocket commands: (data, code per column for own, other and none). A
# wrong token and the operator token are rejected at login with 1003 and 4001.
WS_MATRIX: dict[str, tuple[dict, dict[str, int]]] = {
    "login": ({}, {"own": 1009, "other": 1009, "none": 1003}),
    "ping": ({}, {"own": 200, "other": 200, "none": 200}),
    "heartbeat": ({}, {"own": 200, "other": 200, "none": 1000}),
    "msg": ({"to": "u2", "message": "ws matrix"}, {"own": 200, "other": 200, "none": 1000}),
    "sync": ({"afterSeq": 0}, {"own": 200, "other": 200, "none": 1000}),
    "syncBroadcast": ({"afterSeq": 0}, {"own": 200, "other": 200, "none": 1000}),
    "exit": ({}, {"own": 200, "other": 200, "none": 1000}),
}


async def open_as(cluster, w, column: str) -> UserConnection:
    if column == "own":
        return await login(cluster, w.acme, "wsm", 1)
    if column == "other":
        # globex's u1 shares the user id of acme's u1, which has stored messages.
        return await login(cluster, w.globex, "u1", 1)
    if column == "none":
        return await UserConnection.connect(ws_url(cluster, 1))
    token = "not-a-token-" + secrets.token_hex(8) if column == "wrong" else cluster.admin_token
    return await UserConnection.connect(ws_url(cluster, 1), token, token_in_query=True)


@pytest.mark.parametrize("cmd", sorted(WS_MATRIX))
async def test_websocket_matrix(cluster, world, cmd):
    data, expected = WS_MATRIX[cmd]
    u1, u2 = world.conns
    for column in COLUMNS:
        conn = await open_as(cluster, world, column)
        try:
            if column in ("wrong", "operator"):
                reply = await conn.next_push()
                assert reply["response"]["code"] == 1003, (cmd, column, reply)
                assert await conn.wait_closed() == 4001
                continue
            body = {**data, "message": f"ws matrix {column}"} if "message" in data else data
            frame_seq = await conn.send_frame(cmd, body, f"m-{column}")
            reply = await reply_to(conn, frame_seq)
            code = reply["response"]["code"]
            assert code == expected[column], (cmd, column, reply)
            text = json.dumps(reply)
            assert world.acme_token not in text
            if column != "own":
                assert world.marker not in text, f"{cmd} as {column} leaks acme data"
                assert world.acme.account not in accounts_in(reply["response"]["data"])
            if cmd == "exit" and code == 200:
                assert await conn.wait_closed() == 1000
            if cmd == "login" and column == "none":
                assert await conn.wait_closed() == 4001
        finally:
            await conn.close()

    # globex's "u2" is not acme's u2: acme's u2 got acme's message alone.
    await asyncio.sleep(0.3)
    received = []
    while not u2.pushes.empty():
        received.append(u2.pushes.get_nowait()["response"]["data"]["message"])
    assert received == (["ws matrix own"] if cmd == "msg" else [])
    assert await u1.request("ping") == "pong"


async def reply_to(conn: UserConnection, frame_seq: str, timeout: float = 10.0) -> dict:
    """The reply with this seq; send_frame leaves replies to the push queue."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await conn.next_push(max(deadline - time.monotonic(), 0.01))
        if frame["seq"] == frame_seq:
            return frame


# Tenants and operator


async def test_duplicate_account_409(cluster):
    account = unique("dup")
    async with httpx.AsyncClient(
        base_url=edge_url(cluster, 1), headers={"Authorization": f"Bearer {cluster.admin_token}"}
    ) as operator:
        body = {"account": account, "password": "first-password-1"}
        first = await operator.post("/sysClient/createSysClient", json=body)
        assert first.status_code == 200
        again = await operator.post(
            "/sysClient/createSysClient", json={"account": account, "password": "other-password-2"}
        )
    reply = again.json()
    assert (again.status_code, reply["code"]) == (409, 1009)
    assert account in reply["msg"]
    assert "password" not in reply["msg"]


async def test_get_sys_client_hides_password(cluster, acme):
    for client in (acme,):
        data = await client.call("GET", "/sysClient/getSysClient", params={"account": acme.account})
        assert set(data) == {"account", "phoneNum", "createdAt"}
    async with httpx.AsyncClient(
        base_url=edge_url(cluster, 0), headers={"Authorization": f"Bearer {cluster.admin_token}"}
    ) as operator:
        response = await operator.get("/sysClient/getSysClient", params={"account": acme.account})
    assert response.status_code == 200
    assert acme.password not in response.text
    assert "argon2" not in response.text
    assert "hash" not in response.text.lower()


async def test_tenant_settings_round_trip(cluster, acme):
    before = await acme.call("POST", "/sysClient/updateSettings", json={})
    assert before == {
        "account": acme.account,
        "allowedOrigins": [],
        "devicePolicy": "per-platform",
        "maxDevices": 5,
        "defaultTtl": 43200,
    }
    after = await acme.call(
        "POST",
        "/sysClient/updateSettings",
        data={"allowedOrigins": "https://a.example, https://b.example:8443", "maxDevices": "7"},
    )
    assert after["allowedOrigins"] == ["https://a.example", "https://b.example:8443"]
    assert after["maxDevices"] == 7
    cleared = await acme.call(
        "POST", "/sysClient/updateSettings", json={"allowedOrigins": [], "defaultTtl": 600}
    )
    assert cleared["allowedOrigins"] == []
    assert cleared["defaultTtl"] == 600
    token = await issue(acme, "u1")
    expected = int(time.time() * 1000) + 600_000
    assert abs(token["expiresAt"] - expected) < 30_000


async def test_origin_allow_list(cluster, acme):
    await acme.call(
        "POST", "/sysClient/updateSettings", json={"allowedOrigins": ["https://app.acme.example"]}
    )
    token = (await issue(acme, "u1"))["token"]

    evil = await UserConnection.connect(ws_url(cluster, 0), origin="https://evil.example")
    with pytest.raises(ApiError) as failure:
        await evil.request("login", {"token": token})
    assert failure.value.code == 1013
    assert "https://evil.example" in failure.value.msg
    assert await evil.wait_closed() == 4001

    good = await UserConnection.connect(
        ws_url(cluster, 0), token, origin="https://app.acme.example"
    )
    assert good.user["userId"] == "u1"
    await good.close()
    app = await UserConnection.connect(ws_url(cluster, 1), token)  # no Origin header
    assert app.user["userId"] == "u1"
    await app.close()

    await acme.call("POST", "/sysClient/updateSettings", json={"allowedOrigins": []})
    anywhere = await UserConnection.connect(
        ws_url(cluster, 0), token, origin="https://evil.example"
    )
    assert anywhere.user["userId"] == "u1"
    await anywhere.close()


async def test_device_policy_setting_applies(cluster, acme):
    await acme.call("POST", "/sysClient/updateSettings", json={"devicePolicy": "single"})
    web = await login(cluster, acme, "u1", 0, "web")
    android = await login(cluster, acme, "u1", 1, "android")
    try:
        kick = await next_kick(web, 10.0)
        assert kick["response"]["data"] == {"reason": "replaced"}
        assert await web.wait_closed() == 4001
        assert await android.request("ping") == "pong"
    finally:
        await web.close()
        await android.close()


# Tokens


async def test_token_bound_to_tenant_user_platform(cluster, acme, globex):
    conn = await login(cluster, acme, "u1", 0, "ios")
    try:
        assert conn.user["sysAccount"] == acme.account
        assert conn.user["userId"] == "u1"
        assert conn.user["appPlatform"] == "ios"
        # Another tenant cannot change, or even see, this token.
        with pytest.raises(ApiError) as failure:
            await globex.call(
                "POST", "/sysClient/updateTokenVal", json={"ttl": 60, "token": conn.token}
            )
        assert (failure.value.status, failure.value.code) == (404, 1005)
        # The token names no one else: a frame's "from" is ignored.
        sent = await conn.request("msg", {"to": "u2", "message": "hi", "from": "u2"})
        history = await acme.call("GET", "/msg/getMsg", params={"userId": "u2", "peerId": "u1"})
        assert history["messages"][-1]["msgId"] == sent["msgId"]
        assert history["messages"][-1]["from"]["userId"] == "u1"
    finally:
        await conn.close()


async def test_update_token_val_token_and_default(cluster, acme):
    token = (await issue(acme, "u1", ttl=60))["token"]
    before = int(time.time() * 1000)
    data = await acme.call("POST", "/sysClient/updateTokenVal", json={"ttl": 7200, "token": token})
    assert set(data) == {"expiresAt"}
    assert before + 7_190_000 <= data["expiresAt"] <= int(time.time() * 1000) + 7_200_000
    data = await acme.call("POST", "/sysClient/updateTokenVal", data={"ttl": "900"})
    assert data == {"defaultTtl": 900}
    fresh = await issue(acme, "u2")
    assert abs(fresh["expiresAt"] - (int(time.time() * 1000) + 900_000)) < 30_000


async def test_two_tenants_same_user_ids_isolated(cluster, acme, globex):
    acme_u1 = await login(cluster, acme, "u1", 0)
    acme_u2 = await login(cluster, acme, "u2", 1)
    globex_u1 = await login(cluster, globex, "u1", 1)
    globex_u2 = await login(cluster, globex, "u2", 0)
    conns = [acme_u1, acme_u2, globex_u1, globex_u2]
    try:
        # Messages.
        await acme_u2.send("u1", "acme says hi")
        assert (await next_msg(acme_u1))["message"] == "acme says hi"
        await globex_u2.send("u1", "globex says hi")
        assert (await next_msg(globex_u1))["message"] == "globex says hi"
        await no_push(acme_u1)
        await no_push(globex_u1)

        # Presence.
        for tenant, edge_node in ((acme, "edge1"), (globex, "edge2")):
            online = await tenant.call("POST", "/user/online", json={"userId": "u1"})
            assert [d["sysAccount"] for d in online["devices"]] == [tenant.account]
            assert [d["accPort"] for d in online["devices"]] == [
                str(cluster.edge_http_ports[0 if edge_node == "edge1" else 1])
            ]
            listed = await tenant.call("GET", "/user/list")
            assert listed["total"] == 2
            assert {u["sysAccount"] for u in listed["users"]} == {tenant.account}
            maps = await tenant.call("GET", "/user/listUserMaps")
            assert sorted(u["userId"] for users in maps.values() for u in users) == ["u1", "u2"]
            assert {u["sysAccount"] for users in maps.values() for u in users} == {tenant.account}

        # History.
        acme_history = await acme.call(
            "GET", "/msg/getMsg", params={"userId": "u1", "peerId": "u2"}
        )
        globex_history = await globex.call(
            "GET", "/msg/getMsg", params={"userId": "u1", "peerId": "u2"}
        )
        assert [m["message"] for m in acme_history["messages"]] == ["acme says hi"]
        assert [m["message"] for m in globex_history["messages"]] == ["globex says hi"]
        acme_sync = await acme_u1.sync(0)
        assert [m["message"] for m in acme_sync["messages"]] == ["acme says hi"]

        # exit of acme's u1 leaves globex's u1 connected and its token valid.
        result = await acme.call("POST", "/sysClient/exit", json={"userId": "u1"})
        assert result["closed"] == 1
        assert (await next_kick(acme_u1))["response"]["data"] == {"reason": "revoked"}
        assert await acme_u1.wait_closed() == 4001
        assert await globex_u1.request("ping") == "pong"
        await no_push(globex_u1)
        again = await UserConnection.connect(ws_url(cluster, 0), globex_u1.token)
        assert again.user["sysAccount"] == globex.account
        conns.append(again)
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))


async def closed_at(conn: UserConnection) -> tuple[int | None, float]:
    code = await conn.wait_closed(10.0)
    return code, time.monotonic()


async def test_exit_kicks_every_edge(cluster, acme):
    web = await login(cluster, acme, "u1", 1, "web")
    android = await login(cluster, acme, "u1", 0, "android")
    spare = await issue(acme, "u1", "ios")  # a token without a connection
    try:
        watchers = [asyncio.create_task(closed_at(conn)) for conn in (web, android)]
        started = time.monotonic()
        result = await acme.call("POST", "/sysClient/exit", json={"userId": "u1"})
        assert result == {"revoked": 3, "closed": 2}
        closes = await asyncio.gather(*watchers)
        for conn, (code, when) in zip((web, android), closes, strict=True):
            assert code == 4001
            assert when - started <= 1.0, f"closed {when - started:.2f} s after exit"
            kick = await next_kick(conn, 0.1)
            assert kick["response"]["data"] == {"reason": "revoked"}

        for token in (web.token, android.token, spare["token"]):
            conn = await UserConnection.connect(ws_url(cluster, 0))
            with pytest.raises(ApiError) as failure:
                await conn.request("login", {"token": token})
            assert failure.value.code == 1003
            assert await conn.wait_closed() == 4001
        assert (await acme.call("POST", "/user/online", json={"userId": "u1"}))["online"] is False
    finally:
        await web.close()
        await android.close()


async def test_exit_closes_connection_missing_from_presence(cluster, acme):
    """Regression: exit found connections through presence, so one whose entry was lost stayed open."""
    conn = await login(cluster, acme, "u1", 1)
    presence = rpc.Peer(
        "presence",
        f"127.0.0.1:{cluster.presence_port}",
        presence_pb2_grpc.PresenceStub,
        "prim.v1.Presence",
        service_token=cluster.service_token,
    )
    try:
        listed = await presence.call(
            "ListConnections",
            presence_pb2.ListConnectionsRequest(tenant=acme.account, user_id="u1", limit=10),
        )
        [entry] = listed.users
        await presence.call(
            "Disconnect",
            presence_pb2.DisconnectRequest(
                tenant=acme.account, user_id="u1", conn_id=entry.conn_id
            ),
        )
        assert (await acme.call("POST", "/user/online", json={"userId": "u1"}))["online"] is False

        result = await acme.call("POST", "/sysClient/exit", json={"userId": "u1"})
        assert result == {"revoked": 1, "closed": 1}
        assert (await next_kick(conn))["response"]["data"] == {"reason": "revoked"}
        assert await conn.wait_closed() == 4001
    finally:
        await presence.close()
        await conn.close()


async def test_exit_one_platform_only(cluster, acme):
    web = await login(cluster, acme, "u1", 0, "web")
    android = await login(cluster, acme, "u1", 1, "android")
    try:
        result = await acme.call(
            "POST", "/sysClient/exit", data={"userId": "u1", "appPlatform": "android"}
        )
        assert result == {"revoked": 1, "closed": 1}
        assert (await next_kick(android))["response"]["data"] == {"reason": "revoked"}
        assert await android.wait_closed() == 4001
        assert await web.request("ping") == "pong"
        again = await UserConnection.connect(ws_url(cluster, 1), web.token)
        assert again.user["appPlatform"] == "web"
        await again.close()
    finally:
        await web.close()
        await android.close()


async def test_token_expiry_kicks_open_connection(cluster, acme):
    short = await login(cluster, acme, "u1", 0, "web", ttl=10)
    extended = await login(cluster, acme, "u2", 1, "web", ttl=10)
    try:
        await acme.call(
            "POST", "/sysClient/updateTokenVal", json={"ttl": 600, "token": extended.token}
        )
        kick = await next_kick(short, 25.0)
        kicked_ms = int(time.time() * 1000)
        assert kick["response"]["data"] == {"reason": "expired"}
        assert await short.wait_closed() == 4001
        late_ms = kicked_ms - short.expires_at
        assert -200 <= late_ms <= 2500, f"kicked {late_ms} ms after expiry"

        # The extended token's connection outlives its first expiry.
        await asyncio.sleep(max(0.0, (extended.expires_at - time.time() * 1000) / 1000) + 1.5)
        assert await extended.request("ping") == "pong"
        await no_push(extended, 0.1)

        conn = await UserConnection.connect(ws_url(cluster, 1))
        with pytest.raises(ApiError) as failure:
            await conn.request("login", {"token": short.token})
        assert failure.value.code == 1003
        assert await conn.wait_closed() == 4001
    finally:
        await short.close()
        await extended.close()


async def test_credentials_verified_once_then_cached(cluster, acme):
    """Repeated calls with the same password cost auth far less CPU than an argon2 check each."""
    hasher = argon2.PasswordHasher()
    password_hash = hasher.hash("measure-me-1")
    started = time.process_time()
    for _ in range(3):
        hasher.verify(password_hash, "measure-me-1")
    argon2_cpu = (time.process_time() - started) / 3

    await acme.call("GET", "/user/list")  # verified now, cached from here on
    auth_pid = cluster.processes["auth"].proc.pid
    calls = 30
    before = process_cpu_seconds(auth_pid)
    for _ in range(calls):
        await acme.call("GET", "/user/list")
    spent = process_cpu_seconds(auth_pid) - before
    assert spent < calls * argon2_cpu / 3, (
        f"auth spent {spent:.3f} s CPU on {calls} calls; one argon2 check takes {argon2_cpu:.3f} s"
    )

    # The cache never accepts another password for the account.
    wrong = httpx.BasicAuth(acme.account, acme.password + "x")
    response = await acme.http.get("/user/list", auth=wrong)
    assert (response.status_code, response.json()["code"]) == UNAUTHORIZED


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


# Internal gRPC


async def test_grpc_without_service_credential_rejected(cluster):
    calls = [
        (
            cluster.auth_port,
            auth_pb2_grpc.AuthStub,
            "VerifyToken",
            auth_pb2.VerifyTokenRequest(token="x"),
        ),
        (
            cluster.auth_port,
            auth_pb2_grpc.AuthStub,
            "GetTenant",
            auth_pb2.GetTenantRequest(account="a"),
        ),
        (
            cluster.presence_port,
            presence_pb2_grpc.PresenceStub,
            "DisconnectBatch",
            presence_pb2.DisconnectBatchRequest(
                requests=[presence_pb2.DisconnectRequest(tenant="a", user_id="u1", conn_id="c1")]
            ),
        ),
        (
            cluster.router_port,
            router_pb2_grpc.RouterStub,
            "Kick",
            router_pb2.KickRequest(tenant="a", user_id="u1", reason="revoked"),
        ),
    ]
    for port, stub_class, method, request in calls:
        for metadata in ((), (("authorization", "Bearer wrong-token"),)):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await getattr(stub_class(channel), method)(
                        request, metadata=metadata, timeout=10
                    )
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method, metadata)


def test_tls_settings_checked_at_start(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked here")
    env = {**os.environ, "PRIM_GRPC_TLS_CERT": str(cert)}
    env.pop("PRIM_GRPC_TLS_KEY", None)
    script = Path(sys.executable).parent / "prim-presence"
    result = subprocess.run(
        [script], env=env, check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "PRIM_GRPC_TLS_KEY is missing" in result.stderr

    env["PRIM_GRPC_TLS_KEY"] = str(tmp_path / "absent.pem")
    result = subprocess.run(
        [script], env=env, check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "PRIM_GRPC_TLS_KEY" in result.stderr
    assert "not a readable file" in result.stderr


# Login failure limits and TLS, on a suite of their own


def make_certificates(folder: Path) -> dict[str, str]:
    """Write a CA and a certificate for 127.0.0.1 signed by it; return the PRIM_GRPC_TLS_* env."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prim test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prim.internal")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("prim.internal"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = {
        "PRIM_GRPC_TLS_CA": ("ca.pem", ca.public_bytes(pem)),
        "PRIM_GRPC_TLS_CERT": ("cert.pem", cert.public_bytes(pem)),
        "PRIM_GRPC_TLS_KEY": (
            "key.pem",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    }
    env = {}
    for name, (filename, content) in files.items():
        path = folder / filename
        path.write_bytes(content)
        env[name] = str(path)
    return env


@pytest.fixture(scope="module")
def tls_suite(tmp_path_factory):
    """A whole suite with mutual TLS between services and login limits of 4 seconds."""
    folder = tmp_path_factory.mktemp("tls")
    logs = tmp_path_factory.mktemp("tls-cluster-logs")
    EXTRA_LOG_DIRS.append(logs)
    env = {
        **make_certificates(folder),
        "PRIM_LOGIN_FAILURES_PER_ACCOUNT": "3/4 seconds",
        "PRIM_LOGIN_FAILURES_PER_ADDRESS": "6/4 seconds",
    }
    suite = devcluster.Cluster(admin_token=secrets.token_urlsafe(16), log_dir=logs, extra_env=env)
    suite.tls_env = env
    with suite.running():
        yield suite


def tls_files(env: dict[str, str], **changes) -> GrpcTls:
    settings = {
        "grpc_tls_cert": env["PRIM_GRPC_TLS_CERT"],
        "grpc_tls_key": env["PRIM_GRPC_TLS_KEY"],
        "grpc_tls_ca": env["PRIM_GRPC_TLS_CA"],
        **changes,
    }
    grpc_tls = GrpcTls.from_settings(settings)
    assert grpc_tls is not None
    return grpc_tls


async def test_tls_suite_end_to_end(tls_suite):
    tenant = await new_tenant(tls_suite, unique("tls"))
    remember(tenant)
    u1 = await login(tls_suite, tenant, "u1", 0)
    u2 = await login(tls_suite, tenant, "u2", 1)
    try:
        await u1.send("u2", "over TLS")  # edge -> router -> edge, each over TLS
        assert (await next_msg(u2))["message"] == "over TLS"
        result = await tenant.call("POST", "/sysClient/exit", json={"userId": "u2"})
        assert result["closed"] == 1
        assert await u2.wait_closed() == 4001
        state = await tenant.call("GET", "/system/state")
        assert state["status"] == "ok"
    finally:
        await u1.close()
        await u2.close()
        await tenant.close()


async def test_tls_rejects_plaintext_and_unknown_clients(tls_suite):
    target = f"127.0.0.1:{tls_suite.auth_port}"
    env = tls_suite.tls_env
    request = auth_pb2.GetTenantRequest(account="nobody")

    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth_pb2_grpc.AuthStub(channel).GetTenant(request, timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE

    # A client that trusts the CA but shows no certificate of its own.
    ca = Path(env["PRIM_GRPC_TLS_CA"]).read_bytes()
    async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth_pb2_grpc.AuthStub(channel).GetTenant(request, timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE

    # A certificate without the service token.
    peer = rpc.Peer("auth", target, auth_pb2_grpc.AuthStub, "prim.v1.Auth", grpc_tls=tls_files(env))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await peer.stub.GetTenant(request, timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await peer.close()

    # Certificate and token, dialled by a name the certificate carries.
    peer = rpc.Peer(
        "auth",
        f"localhost:{tls_suite.auth_port}",
        auth_pb2_grpc.AuthStub,
        "prim.v1.Auth",
        service_token=tls_suite.service_token,
        grpc_tls=tls_files(env, grpc_tls_server_name="prim.internal"),
    )
    try:
        with pytest.raises(PrimError) as failure:
            await peer.call("GetTenant", request)
        assert failure.value.code == 1005
    finally:
        await peer.close()


async def fresh_call(suite, account: str, password: str) -> httpx.Response:
    """One request on a new TCP connection, so each comes from another client port."""
    async with httpx.AsyncClient(base_url=edge_url(suite, 0), auth=(account, password)) as http:
        return await http.get("/user/list")


async def wait_until_allowed(suite, account: str, password: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        response = await fresh_call(suite, account, password)
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.5)


async def test_login_failures_limited_per_account(tls_suite):
    tenant = await new_tenant(tls_suite, unique("rl"))
    remember(tenant)
    try:
        for _ in range(3):
            response = await fresh_call(tls_suite, tenant.account, "wrong-password")
            assert (response.status_code, response.json()["code"]) == UNAUTHORIZED
        response = await fresh_call(tls_suite, tenant.account, tenant.password)
        body = response.json()
        assert (response.status_code, body["code"]) == (429, 1012)
        assert 1 <= int(response.headers["Retry-After"]) <= 4
        assert f"account {tenant.account}" in body["msg"]
        assert tenant.password not in body["msg"]

        # The limit lifts by itself.
        response = await wait_until_allowed(tls_suite, tenant.account, tenant.password)
        assert response.status_code == 200
    finally:
        await tenant.close()


async def test_login_failures_limited_per_address(tls_suite):
    tenant = await new_tenant(tls_suite, unique("rl"))
    remember(tenant)
    try:
        await wait_until_allowed(tls_suite, tenant.account, tenant.password)
        # One failure each for six accounts, each on a new connection and port.
        for index in range(6):
            response = await fresh_call(tls_suite, unique(f"nobody{index}"), "wrong-password")
            assert (response.status_code, response.json()["code"]) == UNAUTHORIZED
        response = await fresh_call(tls_suite, tenant.account, tenant.password)
        body = response.json()
        assert (response.status_code, body["code"]) == (429, 1012), body
        # The address is counted without the client port.
        assert "address 127.0.0.1;" in body["msg"]
        assert "Retry-After" in response.headers
        response = await wait_until_allowed(tls_suite, tenant.account, tenant.password)
        assert response.status_code == 200
    finally:
        await tenant.close()


# Logs


async def test_logs_never_contain_tokens(cluster, acme):
    # A token in the query string reaches uvicorn's own log line of the handshake.
    reply = await issue(acme, "u1")
    conn = await UserConnection.connect(ws_url(cluster, 0), reply["token"], token_in_query=True)
    assert (await conn.next_push())["response"]["code"] == 200
    await conn.close()
    bad = "bad-token-" + secrets.token_hex(8)
    SECRETS.add(bad)
    conn = await UserConnection.connect(ws_url(cluster, 1), bad, token_in_query=True)
    await conn.wait_closed()
    await asyncio.sleep(0.5)  # let the services write their lines

    secrets_used = {s for s in SECRETS if s} | {cluster.admin_token, cluster.service_token}
    assert len(secrets_used) > 10
    folders = [cluster.log_dir, *EXTRA_LOG_DIRS]
    logs = [path for folder in folders for path in Path(folder).glob("*.log")]
    assert len(logs) >= 7
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets_used:
            assert secret not in text, f"{path.name} contains a token or password"
        assert "PRIVATE KEY" not in text
