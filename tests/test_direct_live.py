"""End to end: online-only messages go from edge to edge without the router.

The module starts its own suite with two edge nodes (A and B), so it can
stop the router and show which messages still get through. Online-only
ones do. Stored ones do not, nor, for a while after a stored one, the same
user's online-only ones. The order guard is 3 s here instead of 5 s, and the
delivery deadline 10 s instead of 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal

import httpx
import pytest
from helpers import connect_user, edge_url, new_tenant, next_msg, no_push, unique

from prim import devcluster
from prim.client import ApiError, UserConnection
from prim.config import Settings
from prim.errors import Unavailable
from prim.edge.direct import DirectSender
from prim.edge.hub import Hub
from prim.edge.settings import SETTINGS as EDGE_SETTINGS
from prim.pb.common_pb2 import Profile
from prim.pb.presence_pb2_grpc import PresenceStub
from prim.pb.router_pb2 import SendReply, SendRequest
from prim.rpc import Peer

pytestmark = pytest.mark.integration

A, B = 0, 1
ORDER_GUARD = 3.0


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cluster = devcluster.Cluster(
        admin_token=secrets.token_urlsafe(16),
        log_dir=tmp_path_factory.mktemp("direct-logs"),
        edge_http_ports=[devcluster.free_port() for _ in range(2)],
        extra_env={
            "PRIM_LIVE_ORDER_GUARD_SECONDS": str(ORDER_GUARD),
            # Long enough that a node stopped for a test is waited for, not given up.
            "PRIM_EDGE_DEADLINE_SECONDS": "10",
        },
    )
    with cluster.running():
        yield cluster


@pytest.fixture
async def acme(suite):
    client = await new_tenant(suite, unique("acme"))
    yield client
    await client.close()


async def start_router(suite) -> None:
    """Start the router again and wait until both edges reach it."""
    await asyncio.to_thread(suite.start_service, "router", suite.router_port)
    await wait_edges_ready(suite)


async def wait_edges_ready(suite) -> None:
    """Wait until both edges report ready, which needs the router."""
    async with httpx.AsyncClient() as http:
        for edge in (A, B):
            for _ in range(150):
                if (await http.get(f"{edge_url(suite, edge)}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"edge {edge} is not ready 15 s after the router restarted")


@pytest.fixture
async def router_down(suite):
    """Stop the router for one test and start it again after."""
    await asyncio.to_thread(suite.processes["router"].stop, signal.SIGTERM)
    yield
    await start_router(suite)


async def close_all(*conns: UserConnection) -> None:
    await asyncio.gather(*(conn.close() for conn in conns))


async def test_online_only_needs_no_router(suite, acme, router_down):
    u1 = await connect_user(suite, acme, "u1", A)
    u1_phone = await connect_user(suite, acme, "u1", B, "android")
    u2 = await connect_user(suite, acme, "u2", B)
    u3 = await connect_user(suite, acme, "u3", A)
    try:
        reply = await u1.send("u2", "typing", persist=False)
        assert reply["seq"] == 0
        pushed = await next_msg(u2)
        assert (pushed["msgId"], pushed["seq"]) == (reply["msgId"], 0)
        assert (await next_msg(u1_phone))["msgId"] == reply["msgId"]

        # A recipient on the sender's own edge.
        local = await u1.send("u3", "typing here", persist=False)
        assert (await next_msg(u3))["msgId"] == local["msgId"]

        # REST counts the connections reached: u2, and both of u1's.
        rest = await acme.send_msg("u1", "from the server", to="u2", persist=False)
        assert (rest["seq"], rest["delivered"]) == (0, 3)
        assert (await next_msg(u2))["message"] == "from the server"

        # A stored message needs the router, which is down.
        with pytest.raises(ApiError) as failed:
            await u3.send("u2", "stored")
        assert failed.value.code == 1004
        await no_push(u2)
    finally:
        await close_all(u1, u1_phone, u2, u3)


async def test_edge_logs_direct_path_as_edge(suite, acme, router_down):
    u1 = await connect_user(suite, acme, "u1", A)
    u2 = await connect_user(suite, acme, "u2", B)
    try:
        await u1.send("u2", "typing", persist=False)
        await next_msg(u2)
    finally:
        await close_all(u1, u2)
    for edge in ("edge1", "edge2"):
        lines = suite.processes[edge].log_path.read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        loggers = {record["logger"] for record in records}
        assert not [name for name in loggers if name.startswith("prim.router")], loggers
        located = [r for r in records if r["event"] == "locating recipients in presence's Redis"]
        assert [r["logger"] for r in located] == ["prim.edge.direct"]


async def test_direct_parts_share_edge_logger():
    settings = Settings(EDGE_SETTINGS, {})
    presence = Peer("presence", "127.0.0.1:1", PresenceStub, "prim.v1.Presence")
    sender = DirectSender(Hub(), "edge1", presence, settings)
    assert sender.nodes.log.name == "prim.edge.direct"
    assert sender.dispatcher.log.name == "prim.edge.direct"


async def test_guard_with_hung_router(suite, acme):
    u1 = await connect_user(suite, acme, "u1", A)
    u2 = await connect_user(suite, acme, "u2", B)
    router = suite.processes["router"].proc.pid
    try:
        await u1.send("u2", "stored first")
        assert (await next_msg(u2))["message"] == "stored first"
        os.kill(router, signal.SIGSTOP)
        try:
            # Within the guard, u1's online-only messages go through the
            # router, which is stopped, so the send times out.
            with pytest.raises(ApiError) as failed:
                await u1.send("u2", "typing", persist=False, clientMsgId="x-1")
            assert failed.value.code == 1004
            # Another user's do not wait for u1's guard.
            u3 = await connect_user(suite, acme, "u3", A)
            other = await u3.send("u2", "typing", persist=False)
            assert (await next_msg(u2))["msgId"] == other["msgId"]
            await u3.close()
            # The guard ran out during that timeout, and the failed send did
            # not start it again, so u1's next one goes direct.
            direct = await u1.send("u2", "typing again", persist=False)
            assert (await next_msg(u2))["msgId"] == direct["msgId"]
        finally:
            os.kill(router, signal.SIGCONT)
        await wait_edges_ready(suite)
        # The router may push the timed-out message late, so its resend goes
        # through the router, which has recorded the clientMsgId.
        await u1.send("u2", "typing", persist=False, clientMsgId="x-1")
        pushes = []
        with contextlib.suppress(TimeoutError):
            while True:
                pushes.append((await next_msg(u2, 1.0))["message"])
        assert pushes.count("typing") <= 1
    finally:
        await close_all(u1, u2)


async def test_resend_caught_on_either_path(suite, acme):
    u1 = await connect_user(suite, acme, "u1", A)
    u2 = await connect_user(suite, acme, "u2", B)
    try:
        direct = await u1.send("u2", "typing", persist=False, clientMsgId="k-1")
        assert (await next_msg(u2))["msgId"] == direct["msgId"]
        await u1.send("u2", "stored")
        assert (await next_msg(u2))["message"] == "stored"
        # Routed now, yet the resend gets the first reply and pushes nothing.
        again = await u1.send("u2", "typing", persist=False, clientMsgId="k-1")
        assert (again["msgId"], again["time"]) == (direct["msgId"], direct["time"])
        routed = await u1.send("u2", "typing", persist=False, clientMsgId="k-2")
        assert (await next_msg(u2))["msgId"] == routed["msgId"]
        await no_push(u2)

        # Once the guard is over, a resend of the routed one goes nowhere either.
        await asyncio.sleep(ORDER_GUARD + 0.2)
        later = await u1.send("u2", "typing", persist=False, clientMsgId="k-2")
        assert later["msgId"] == routed["msgId"]
        fresh = await u1.send("u2", "typing", persist=False, clientMsgId="k-3")
        assert (await next_msg(u2))["msgId"] == fresh["msgId"]
        await no_push(u2)
    finally:
        await close_all(u1, u2)


async def test_online_only_stays_in_its_tenant(suite, acme, router_down):
    other = await new_tenant(suite, unique("other"))
    sender = await connect_user(suite, acme, "u1", A)
    mine = await connect_user(suite, acme, "u2", B)
    theirs_b = await connect_user(suite, other, "u2", B)
    theirs_a = await connect_user(suite, other, "u2", A, "android")
    try:
        reply = await sender.send("u2", "for acme only", persist=False)
        assert (await next_msg(mine))["msgId"] == reply["msgId"]
        await no_push(theirs_b)
        await no_push(theirs_a)
        rest = await acme.send_msg("u1", "for acme only", to="u2", persist=False)
        assert rest["delivered"] == 2
        await no_push(theirs_b)
    finally:
        await close_all(sender, mine, theirs_b, theirs_a)
        await other.close()


async def test_mixed_burst_keeps_order(suite, acme):
    sender = await connect_user(suite, acme, "u1", A)
    far = await connect_user(suite, acme, "u2", B)
    near = await connect_user(suite, acme, "u2", A, "android")
    try:
        sends = [(f"m{n}", n % 7 == 3) for n in range(200)]
        # Pipelined: the client sends them all before reading a reply.
        replies = await asyncio.gather(
            *(sender.send("u2", text, persist=stored) for text, stored in sends)
        )
        assert len({reply["msgId"] for reply in replies}) == len(sends)
        for conn in (far, near):
            assert [(await next_msg(conn))["message"] for _ in sends] == [text for text, _ in sends]
    finally:
        await close_all(sender, far, near)


async def test_edge_without_direct_live_uses_router(suite, acme, router_down, tmp_path):
    http_port, grpc_port = devcluster.free_port(), devcluster.free_port()
    edge = suite.spawn_edge(
        "edge-routed", http_port, grpc_port, {"PRIM_DIRECT_LIVE": "false"}, log_dir=tmp_path
    )
    try:
        token = (await acme.get_token("u1", "web"))["token"]
        sender = await UserConnection.connect(f"ws://127.0.0.1:{http_port}/acc", token)
        try:
            with pytest.raises(ApiError) as failed:
                await sender.send("u2", "typing", persist=False)
            assert failed.value.code == 1004
        finally:
            await sender.close()
    finally:
        edge.stop()


async def test_order_guard_renews_while_routed():
    now = [100.0]
    settings = Settings(EDGE_SETTINGS, {"PRIM_LIVE_ORDER_GUARD_SECONDS": "5"})
    presence = Peer("presence", "127.0.0.1:1", PresenceStub, "prim.v1.Presence")
    sender = DirectSender(Hub(), "edge1", presence, settings, clock=lambda: now[0])

    def message(user_id: str, persist: bool, tenant: str = "acme") -> SendRequest:
        return SendRequest(tenant=tenant, sender=Profile(user_id=user_id), to="u9", persist=persist)

    def replied(request: SendRequest, error: Exception | None = None) -> None:
        sent = asyncio.get_running_loop().create_future()
        if error is None:
            sent.set_result(SendReply(msg_id="m", time=1))
        else:
            sent.set_exception(error)
        sender.routed(request, sent)

    try:
        assert sender.takes([message("u1", False)])
        stored = message("u1", True)
        assert not sender.takes([message("u1", False), stored])
        replied(stored)
        now[0] += 4.0
        live = message("u1", False)
        assert not sender.takes([live])
        assert sender.takes([message("u2", False)])
        assert sender.takes([message("u1", False, tenant="other")])
        # The router's reply to a routed message starts the guard again.
        replied(live)
        now[0] += 4.0
        assert not sender.takes([message("u1", False)])
        # A failed send does not.
        replied(message("u1", False), Unavailable("router unavailable"))
        now[0] += 1.0
        assert sender.takes([message("u1", False)])
        sender.forget_expired()
        assert not sender._routed_until

        # After a failed routed send, that clientMsgId keeps going through the router.
        unsure = SendRequest(
            tenant="acme", sender=Profile(user_id="u4"), to="u9", client_msg_id="c-1"
        )
        replied(unsure, Unavailable("router unavailable"))
        assert not sender.takes([unsure])
        unsure.client_msg_id = "c-2"
        assert sender.takes([unsure])

        # An online-only message's delivery stays in flight until settled. Presence
        # cannot be reached here, so it settles with no connection reached.
        sender.send([message("u3", False)])
        (delivery,) = sender.in_flight([message("u3", True)])
        assert await asyncio.wait_for(delivery, 30) == 0
        assert sender.in_flight([message("u3", True)]) == []
    finally:
        await sender.close()
        await presence.close()


async def test_stored_waits_for_earlier_live(suite, acme):
    u1 = await connect_user(suite, acme, "u1", A)
    u2 = await connect_user(suite, acme, "u2", B)
    edge_b = suite.processes["edge2"].proc.pid
    try:
        os.kill(edge_b, signal.SIGSTOP)
        try:
            await u1.send("u2", "typing", persist=False)
            stored = asyncio.create_task(u1.send("u2", "stored"))
            await asyncio.sleep(0.5)
            # Edge B has not confirmed the online-only push, so the stored
            # message has not gone to the router yet.
            assert not stored.done()
        finally:
            os.kill(edge_b, signal.SIGCONT)
        await stored
        assert [(await next_msg(u2))["message"] for _ in range(2)] == ["typing", "stored"]
    finally:
        await close_all(u1, u2)
