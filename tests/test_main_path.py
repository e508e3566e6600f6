"""End to end: the main path across two edge nodes, with every service real."""

from __future__ import annotations

import asyncio

import pytest

from prim.client import ApiError, TenantClient, UserConnection

from helpers import connect_user, edge_url, new_tenant, next_msg, no_push, unique, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"))
    yield client
    await client.close()


@pytest.fixture
async def globex(cluster):
    client = await new_tenant(cluster, unique("globex"))
    yield client
    await client.close()


async def test_operator_creates_tenant_without_password(cluster):
    account = unique("acme")
    async with TenantClient(edge_url(cluster, 0), admin_token=cluster.admin_token) as operator:
        created = await operator.create_sys_client(account, "secret-pass-1", "+4930123")
        fetched = await operator.get_sys_client(account)
    assert created["account"] == account
    assert created["phoneNum"] == "+4930123"
    assert set(fetched) == {"account", "phoneNum", "createdAt"}
    assert "secret-pass-1" not in str(fetched)


async def test_message_stored_before_reply_and_sender_from_token(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0, "web", nickname="Ann")
    u2 = await connect_user(cluster, acme, "u2", 1, "android")
    try:
        reply = await u1.request("msg", {"to": "u2", "message": "hi", "from": "mallory"})
        assert set(reply) == {"msgId", "seq", "time"}
        assert reply["seq"] == 1

        # The reply came after storing: history already holds the message.
        history = await acme.get_msg("u1", "u2")
        assert [m["msgId"] for m in history["messages"]] == [reply["msgId"]]

        pushed = await next_msg(u2)
        assert pushed["from"] == {"userId": "u1", "nickname": "Ann", "avatar": ""}
        assert pushed["message"] == "hi"
        assert pushed["msgId"] == reply["msgId"]
        assert pushed["seq"] == 1
        await no_push(u1)
    finally:
        await u1.close()
        await u2.close()


async def test_backend_send_and_history_in_seq_order(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    u2 = await connect_user(cluster, acme, "u2", 1, "android")
    try:
        first = await u1.send("u2", "from u1")
        await next_msg(u2)
        sent = await acme.send_msg("u2", "from backend", to="u1")
        # u1's connection, and u2's own connection as the sender's other device.
        assert sent["delivered"] == 2
        pushed = await next_msg(u1)
        assert pushed["from"]["userId"] == "u2"
        assert pushed["message"] == "from backend"
        assert pushed["seq"] == 2
        echoed = await next_msg(u2)
        assert echoed["msgId"] == sent["msgId"]
        assert echoed["seq"] == sent["seq"] == 2

        history = await acme.get_msg("u1", "u2")
        assert [m["message"] for m in history["messages"]] == ["from u1", "from backend"]
        assert [m["seq"] for m in history["messages"]] == [first["seq"], first["seq"] + 1]
        assert history["hasMore"] is False
    finally:
        await u1.close()
        await u2.close()


async def test_sync_after_reconnect_on_other_edge(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    u2 = await connect_user(cluster, acme, "u2", 1)
    await u1.send("u2", "before")
    last_seq = (await next_msg(u2))["seq"]
    await u2.close()

    sent = [await u1.send("u2", f"missed {i}") for i in range(3)]
    u2 = await connect_user(cluster, acme, "u2", 0)
    try:
        page = await u2.sync(last_seq)
        assert [m["message"] for m in page["messages"]] == ["missed 0", "missed 1", "missed 2"]
        assert [m["seq"] for m in page["messages"]] == [last_seq + 1, last_seq + 2, last_seq + 3]
        assert [m["msgId"] for m in page["messages"]] == [s["msgId"] for s in sent]
        assert page["hasMore"] is False
    finally:
        await u1.close()
        await u2.close()


async def test_other_tenant_cannot_reach_acme(cluster, acme, globex):
    acme_u1 = await connect_user(cluster, acme, "u1", 0)
    globex_u1 = await connect_user(cluster, globex, "u1", 1)
    try:
        await acme.send_msg("u2", "for acme only", to="u1")
        assert (await next_msg(acme_u1))["message"] == "for acme only"
        await no_push(globex_u1)

        listed = await globex.user_list()
        assert listed["total"] == 1
        assert {u["sysAccount"] for u in listed["users"]} == {globex.account}
        assert (await globex.get_msg("u1", "u2"))["messages"] == []

        await globex.send_msg("u9", "for globex u1", to="u1")
        assert (await next_msg(globex_u1))["message"] == "for globex u1"
        await no_push(acme_u1)

        # globex's password does not open acme's account.
        async with TenantClient(edge_url(cluster, 0), acme.account, globex.password) as wrong:
            for call in (wrong.user_list(), wrong.get_msg("u1", "u2"), wrong.send_msg("u2", "x", to="u1")):
                with pytest.raises(ApiError) as failure:
                    await call
                assert failure.value.status == 401
                assert failure.value.code == 1003
        # A tenant cannot create tenants or read another tenant's account.
        with pytest.raises(ApiError) as failure:
            await globex.create_sys_client(unique("x"), "password-123")
        assert (failure.value.status, failure.value.code) == (403, 1013)
        with pytest.raises(ApiError) as failure:
            await globex.get_sys_client(acme.account)
        assert (failure.value.status, failure.value.code) == (404, 1005)
    finally:
        await acme_u1.close()
        await globex_u1.close()


async def test_no_credentials_rejected(cluster):
    async with TenantClient(edge_url(cluster, 1)) as anonymous:
        for call in (anonymous.user_list(), anonymous.get_msg("u1", "u2"), anonymous.get_token("u1")):
            with pytest.raises(ApiError) as failure:
                await call
            assert (failure.value.status, failure.value.code) == (401, 1003)


async def test_bad_frames_get_errors_and_connection_survives(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    u2 = await connect_user(cluster, acme, "u2", 1)
    try:
        await u1.ws.send("not json")
        reply = await u1.next_push()
        assert reply["response"]["code"] == 1001
        await u1.ws.send('["a"]')
        assert (await u1.next_push())["response"]["code"] == 1001
        await u1.send_frame("fly", {}, "7")
        reply = await u1.next_push()
        assert (reply["seq"], reply["response"]["code"]) == ("7", 1010)
        await u1.send_frame("msg", {"to": 5, "message": "x"}, "8")
        reply = await u1.next_push()
        assert (reply["seq"], reply["response"]["code"]) == ("8", 1002)
        assert "to" in reply["response"]["codeMsg"]

        # Still usable, and u2 saw nothing of it.
        assert await u1.request("ping") == "pong"
        await u1.send("u2", "still here")
        assert (await next_msg(u2))["message"] == "still here"
        await no_push(u2)
    finally:
        await u1.close()
        await u2.close()


async def test_bad_token_closes_4001(cluster):
    conn = await UserConnection.connect(ws_url(cluster, 0))
    with pytest.raises(ApiError) as failure:
        await conn.request("login", {"token": "not-a-token"})
    assert failure.value.code == 1003
    assert await conn.wait_closed() == 4001

    conn = await UserConnection.connect(ws_url(cluster, 1), "bogus", token_in_query=True)
    reply = await conn.next_push()
    assert reply["response"]["code"] == 1003
    assert await conn.wait_closed() == 4001


async def test_commands_before_login_get_1000(cluster):
    conn = await UserConnection.connect(ws_url(cluster, 0))
    try:
        assert await conn.request("ping") == "pong"
        with pytest.raises(ApiError) as failure:
            await conn.request("msg", {"to": "u2", "message": "x"})
        assert failure.value.code == 1000
    finally:
        await conn.close()


async def test_heartbeat_exit_and_online(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    beat = await u1.request("heartbeat")
    assert beat["heartbeatTime"] > 0
    online = await acme.user_online("u1")
    assert online["online"] is True
    assert online["devices"][0]["userId"] == "u1"
    await u1.request("exit")
    assert await u1.wait_closed() == 1000
    assert (await acme.user_online("u1"))["online"] is False


async def test_user_list_pages_in_order(cluster, acme):
    conns = [await connect_user(cluster, acme, f"user{i}", i % 2) for i in range(5)]
    try:
        first = await acme.user_list(page=1, size=2)
        second = await acme.user_list(page=2, size=2)
        third = await acme.user_list(page=3, size=2)
        assert first["total"] == 5
        ids = [u["userId"] for page in (first, second, third) for u in page["users"]]
        assert ids == [f"user{i}" for i in range(5)]
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_system_state_public_and_operator(cluster):
    async with TenantClient(edge_url(cluster, 0)) as anonymous:
        state = await anonymous.system_state()
    assert state["status"] == "ok"
    assert state["edgesAlive"] == 2
    assert "details" not in state
    async with TenantClient(edge_url(cluster, 0), admin_token=cluster.admin_token) as operator:
        state = await operator.system_state()
    assert {e["nodeId"] for e in state["details"]["edges"]} == {"edge1", "edge2"}
