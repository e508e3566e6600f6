"""The Python SDK against the whole suite: typed REST results and the user client."""

from __future__ import annotations

import asyncio

import pytest

from prim.client import (
    ApiError,
    Kicked,
    Message,
    MessagePage,
    SendResult,
    SysClient,
    SysClientPage,
    TenantClient,
    Token,
    User,
    UserClient,
    UserPage,
)

from helpers import edge_url, new_tenant, unique, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"))
    yield client
    await client.close()


async def user_client(
    cluster, tenant, user_id, edges=(0,), platform="web", **options
) -> UserClient:
    token = (await tenant.get_token(user_id, platform, nickname=user_id.upper())).token
    options.setdefault("backoff_max_seconds", 1.0)
    client = UserClient([ws_url(cluster, edge) for edge in edges], token, **options)
    await client.connect()
    return client


async def receive(client: UserClient, count: int, timeout: float = 20.0) -> list[Message]:
    return [await client.receive(timeout) for _ in range(count)]


async def assert_nothing_more(client: UserClient, wait: float = 0.5) -> None:
    try:
        extra = await client.receive(wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {extra}")


# TenantClient


async def test_tenant_results_are_typed(cluster, acme):
    token = await acme.get_token("u1", "android", nickname="Ann")
    assert isinstance(token, Token)
    assert (token.user_id, token.app_platform) == ("u1", "android")
    assert token.expires_at > 0

    sent = await acme.send_msg("u2", "hello", to="u1")
    assert isinstance(sent, SendResult)
    assert sent.seq == 1
    assert sent.delivered == 0

    page = await acme.get_msg("u1", "u2")
    assert isinstance(page, MessagePage)
    assert page.has_more is False
    [message] = page.messages
    assert message.msg_id == sent.msg_id
    assert message.sender.user_id == "u2"
    assert message.to == "u1"

    lifetime = await acme.update_token_val(3600)
    assert lifetime.default_ttl == 3600
    assert "expiresAt" not in lifetime
    lifetime = await acme.update_token_val(60, token.token)
    assert lifetime.expires_at > 0

    revoked = await acme.exit("u1")
    assert (revoked.revoked, revoked.closed) == (1, 0)


async def test_results_read_like_dicts(cluster, acme):
    sent = await acme.send_msg("u2", "hello", to="u1")
    assert sent["msgId"] == sent.msg_id
    assert "broadcastSeq" not in sent
    assert sent.get("broadcastSeq") is None
    page = await acme.get_msg("u1", "u2")
    assert page["messages"][0]["from"]["userId"] == "u2"
    assert page.to_dict()["messages"][0]["from"] == {"userId": "u2", "nickname": "", "avatar": ""}
    with pytest.raises(KeyError):
        sent["msg_id"]


async def test_api_error_carries_code_and_status(cluster, acme):
    with pytest.raises(ApiError) as failure:
        await acme.get_msg("u1", "u2", before_seq=5, after_seq=1)
    assert (failure.value.status, failure.value.code) == (400, 1001)
    assert "beforeSeq" in failure.value.msg
    with pytest.raises(ApiError) as failure:
        await acme.update_token_val(5)
    assert (failure.value.status, failure.value.code) == (400, 1001)
    assert "ttl" in failure.value.msg


async def test_list_sys_clients_pages_for_operator(cluster):
    prefix = unique("list")
    async with TenantClient(edge_url(cluster, 0), admin_token=cluster.admin_token) as operator:
        for name in ("b", "a", "c"):
            await operator.create_sys_client(f"{prefix}-{name}", "password-123")
        first = await operator.list_sys_clients(page=1, size=500)
        assert isinstance(first, SysClientPage)
        accounts = [tenant.account for tenant in first.sys_clients]
        assert accounts == sorted(accounts)
        assert [a for a in accounts if a.startswith(prefix)] == [f"{prefix}-{n}" for n in "abc"]
        assert first.total == len(accounts)
        assert all(isinstance(tenant, SysClient) for tenant in first.sys_clients)
        assert set(first.sys_clients[0]) == {"account", "phoneNum", "createdAt"}

        single = await operator.list_sys_clients(page=2, size=1)
        assert [tenant.account for tenant in single.sys_clients] == accounts[1:2]
        with pytest.raises(ApiError) as failure:
            await operator.list_sys_clients(size=501)
        assert (failure.value.status, failure.value.code) == (400, 1001)


async def test_list_sys_clients_operator_only(cluster, acme):
    with pytest.raises(ApiError) as failure:
        await acme.list_sys_clients()
    assert (failure.value.status, failure.value.code) == (403, 1013)
    async with TenantClient(edge_url(cluster, 1)) as anonymous:
        with pytest.raises(ApiError) as failure:
            await anonymous.list_sys_clients()
    assert (failure.value.status, failure.value.code) == (401, 1003)


async def test_user_list_and_maps_typed(cluster, acme):
    u1 = await user_client(cluster, acme, "u1", edges=(1,))
    try:
        listed = await acme.user_list()
        assert isinstance(listed, UserPage)
        [user] = listed.users
        assert isinstance(user, User)
        assert (user.user_id, user.nickname, user.sys_account) == ("u1", "U1", acme.account)
        maps = await acme.list_user_maps()
        assert [u.user_id for u in maps["edge2"]] == ["u1"]
        online = await acme.user_online("u1")
        assert online.online is True
        assert online.devices[0].acc_port == str(cluster.edge_http_ports[1])
    finally:
        await u1.close()


# UserClient


async def test_user_clients_chat_across_edges(cluster, acme):
    u1 = await user_client(cluster, acme, "u1", edges=(0,))
    u2 = await user_client(cluster, acme, "u2", edges=(1,))
    try:
        assert u1.user.user_id == "u1"
        sent = await u1.send("u2", "hi from u1")
        assert sent.seq == 1
        [received] = await receive(u2, 1)
        assert (received.msg_id, received.seq, received.message) == (sent.msg_id, 1, "hi from u1")
        assert received.sender.nickname == "U1"
        assert len(received.client_msg_id) == 32  # generated by send()

        reply = await u2.send("u1", "hi from u2")
        [received] = await receive(u1, 1)
        assert received.msg_id == reply.msg_id
        assert received.seq == 2  # u1's timeline: its own message, then this one
        assert u1.last_seq == 2
        await assert_nothing_more(u1)
        await assert_nothing_more(u2)
    finally:
        await u1.close()
        await u2.close()


async def test_user_client_resend_is_idempotent(cluster, acme):
    u1 = await user_client(cluster, acme, "u1")
    u2 = await user_client(cluster, acme, "u2", edges=(1,))
    try:
        first = await u1.send("u2", "once", client_msg_id="fixed-id-1")
        again = await u1.send("u2", "once", client_msg_id="fixed-id-1")
        assert again.msg_id == first.msg_id
        assert again.seq == first.seq
        await receive(u2, 1)
        await assert_nothing_more(u2)
        history = await acme.get_msg("u1", "u2")
        assert [m.msg_id for m in history.messages] == [first.msg_id]
    finally:
        await u1.close()
        await u2.close()


async def test_user_client_syncs_history_on_connect(cluster, acme):
    sent = [await acme.send_msg("u1", f"offline {i}", to="u2") for i in range(5)]
    u2 = await user_client(cluster, acme, "u2", sync_limit=2)
    try:
        received = await receive(u2, 5)
        assert [m.msg_id for m in received] == [s.msg_id for s in sent]
        assert [m.seq for m in received] == [1, 2, 3, 4, 5]
        await assert_nothing_more(u2)
    finally:
        await u2.close()


async def test_user_client_stops_on_revoked_kick(cluster, acme):
    states = []
    u1 = await user_client(cluster, acme, "u1", on_state=states.append)
    await acme.exit("u1")
    with pytest.raises(Kicked) as kicked:
        await u1.receive(10)
    assert kicked.value.reason == "revoked"
    assert u1.kick_reason == "revoked"
    assert states[-1] == "closed"
    assert await u1.wait_closed() is kicked.value
    await asyncio.sleep(1.0)
    assert not (await acme.user_online("u1")).online  # it did not log in again
    await u1.close()


async def test_user_client_replaced_kick_surfaces(cluster, acme):
    old = await user_client(cluster, acme, "u1", edges=(0,))
    new = await user_client(cluster, acme, "u1", edges=(1,))
    try:
        with pytest.raises(Kicked) as kicked:
            await old.receive(10)
        assert kicked.value.reason == "replaced"
        assert new.connected
        assert [d.acc_port for d in (await acme.user_online("u1")).devices] == [
            str(cluster.edge_http_ports[1])
        ]
    finally:
        await old.close()
        await new.close()


async def test_user_client_rejects_bad_token(cluster):
    client = UserClient(ws_url(cluster, 0), "not-a-token")
    with pytest.raises(ApiError) as failure:
        await client.connect()
    assert failure.value.code == 1003
    assert client.state == "closed"


async def test_user_client_broadcast_once(cluster, acme):
    u1 = await user_client(cluster, acme, "u1", edges=(0,))
    try:
        sent = await acme.send_msg("u9", "to everyone", all=True)
        [received] = await receive(u1, 1)
        assert received.msg_id == sent.msg_id
        assert received.seq == 0
        assert received.broadcast_seq == sent.broadcast_seq
        assert u1.last_seq == 0
        await assert_nothing_more(u1)
    finally:
        await u1.close()
