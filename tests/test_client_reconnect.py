"""The user client across edge restarts: every message exactly once, in seq order.

These tests stop and start the cluster's second edge node; each one leaves it
running again for the tests after it.
"""

from __future__ import annotations

import asyncio

import pytest

from prim.client import UserClient

from helpers import new_tenant, unique, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"), edge=0)
    yield client
    await client.close()


@pytest.fixture
def edge2(cluster):
    """Index of the second edge node, started again after the test if it was left stopped."""
    yield 1
    if cluster.processes["edge2"].proc.poll() is not None:
        cluster.start_edge(1)


async def stop_edge(cluster, index: int) -> None:
    await asyncio.to_thread(cluster.processes[f"edge{index + 1}"].stop)


async def start_edge(cluster, index: int) -> None:
    await asyncio.to_thread(cluster.start_edge, index)


async def wait_for(condition, timeout: float = 15.0, description: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{description} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def test_user_client_survives_two_edge_restarts(cluster, acme, edge2):
    token = (await acme.get_token("u2")).token
    states: list[str] = []
    u2 = UserClient(ws_url(cluster, edge2), token, backoff_max_seconds=1.0, on_state=states.append)
    await u2.connect()
    sent = []

    async def send_batch(label: str, count: int = 4) -> None:
        # The tenant sends through edge 1, which stays up.
        for i in range(count):
            sent.append(await acme.send_msg("u1", f"{label} {i}", to="u2"))

    try:
        await send_batch("live")
        await stop_edge(cluster, edge2)
        own = asyncio.create_task(u2.send("u1", "sent while the edge is down"))
        await send_batch("while down 1")
        await start_edge(cluster, edge2)
        own_reply = await asyncio.wait_for(own, 30)
        await send_batch("after restart 1")

        await stop_edge(cluster, edge2)
        await send_batch("while down 2")
        await start_edge(cluster, edge2)
        await send_batch("after restart 2")

        received = [await u2.receive(30) for _ in sent]
        assert [m.msg_id for m in received] == [s.msg_id for s in sent]
        seqs = [m.seq for m in received]
        assert seqs == sorted(seqs)
        # u2's timeline: every received message plus the one it sent, with no gap.
        assert sorted([*seqs, own_reply.seq]) == list(range(1, len(sent) + 2))
        with pytest.raises(TimeoutError):
            extra = await u2.receive(1.0)
            raise AssertionError(f"unexpected message {extra}")

        assert u2.reconnects >= 2
        assert states.count("connected") >= 3
        history = await acme.get_msg("u2", "u1", limit=200)
        assert [m.message for m in history.messages].count("sent while the edge is down") == 1
        assert u2.last_seq == len(sent) + 1
    finally:
        await u2.close()


async def test_reconnect_push_moves_to_next_url_at_once(cluster, acme, edge2):
    token = (await acme.get_token("u2")).token
    # A long backoff: only the immediate reconnect after `reconnect` can pass this test.
    u2 = UserClient(
        [ws_url(cluster, edge2), ws_url(cluster, 0)],
        token,
        backoff_initial_seconds=30.0,
        backoff_max_seconds=30.0,
    )
    await u2.connect()
    stopping = None
    try:
        before = await acme.send_msg("u1", "before", to="u2")
        assert (await u2.receive(10)).msg_id == before.msg_id

        stopping = asyncio.create_task(stop_edge(cluster, edge2))
        await wait_for(lambda: u2.connected and u2.url == ws_url(cluster, 0), 10, "login on edge 1")
        after = await acme.send_msg("u1", "after", to="u2")
        message = await u2.receive(10)
        assert (message.msg_id, message.seq) == (after.msg_id, 2)
        await stopping
        with pytest.raises(TimeoutError):
            extra = await u2.receive(0.5)
            raise AssertionError(f"unexpected message {extra}")
    finally:
        await u2.close()
        if stopping is not None:
            await stopping
            await start_edge(cluster, edge2)
