"""The chat demo in Chromium: two pages on two edge nodes, and an edge restart.

The restart test stops and starts the cluster's second edge node and leaves
it running again.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from helpers import edge_url, new_tenant, unique, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"))
    yield client
    await client.close()


async def open_chat(open_page, cluster, tenant, edge: int, panel: str, user_id: str):
    """Open /demo on one edge node and connect one panel's user through that node."""
    chat = await open_page(edge_url(cluster, edge) + "/demo?backoffMax=1")
    page = chat.page
    await page.fill("#tenant-form input[name=account]", tenant.account)
    await page.fill("#tenant-form input[name=password]", tenant.password)
    root = f".panel[data-panel={panel}]"
    await page.fill(f"{root} .connect input[name=userId]", user_id)
    await page.click(f"{root} .connect button[type=submit]")
    await page.wait_for_selector(f"{root}[data-state=connected]")
    return chat, root


async def send(page, root: str, to: str, text: str) -> None:
    await page.fill(f"{root} .compose input[name=to]", to)
    await page.fill(f"{root} .compose input[name=message]", text)
    await page.click(f"{root} .compose button[type=submit]")
    await page.wait_for_selector(f"{root} .messages li.own:not(.pending):has-text('{text}')")


async def shown(page, root: str) -> list[dict]:
    return await page.locator(f"{root} .messages li").evaluate_all(
        """items => items.map(item => ({
            msgId: item.dataset.msgId,
            own: item.classList.contains('own'),
            text: item.querySelector('.text').textContent,
        }))"""
    )


async def test_demo_chat_across_edges_and_restart(cluster, acme, open_page):
    alice, alice_root = await open_chat(open_page, cluster, acme, 0, "a", "alice")
    bob, bob_root = await open_chat(open_page, cluster, acme, 1, "b", "bob")
    restarted = False
    try:
        assert "/acc" in await alice.page.inner_text(f"{alice_root} .state")
        await send(alice.page, alice_root, "bob", "hello bob")
        await bob.page.wait_for_selector(f"{bob_root} .messages li:has-text('hello bob')")
        await send(bob.page, bob_root, "alice", "hi alice")
        await alice.page.wait_for_selector(f"{alice_root} .messages li:has-text('hi alice')")

        # Bob's edge node restarts; alice keeps writing meanwhile.
        await asyncio.to_thread(cluster.processes["edge2"].stop)
        restarted = True
        await bob.page.wait_for_selector(f"{bob_root}:not([data-state=connected])")
        missed = [f"sent while the edge of bob is down {i}" for i in range(3)]
        for text in missed:
            await send(alice.page, alice_root, "bob", text)
        await asyncio.to_thread(cluster.start_edge, 1)
        restarted = False

        await bob.page.wait_for_selector(f"{bob_root}[data-state=connected]", timeout=30_000)
        for text in missed:
            await bob.page.wait_for_selector(f"{bob_root} .messages li:has-text('{text}')")
        await send(alice.page, alice_root, "bob", "after the restart")
        await bob.page.wait_for_selector(f"{bob_root} .messages li:has-text('after the restart')")
        await asyncio.sleep(0.5)  # time for a duplicate to show up, if one came

        items = await shown(bob.page, bob_root)
        texts = [item["text"] for item in items]
        assert texts == ["hello bob", "hi alice", *missed, "after the restart"]
        msg_ids = [item["msgId"] for item in items]
        assert len(set(msg_ids)) == len(msg_ids)
        assert [item["own"] for item in items] == [False, True, False, False, False, False]
        alice_texts = [item["text"] for item in await shown(alice.page, alice_root)]
        assert alice_texts == ["hello bob", "hi alice", *missed, "after the restart"]

        await alice.screenshot("demo-alice-edge1")
        await bob.screenshot("demo-bob-edge2-after-restart")
        assert alice.errors == []
        assert not [e for e in bob.errors if "WebSocket" not in e and "Failed to load" not in e]
    finally:
        if restarted:
            await asyncio.to_thread(cluster.start_edge, 1)


async def test_demo_kick_stops_client(cluster, acme, open_page):
    alice, root = await open_chat(open_page, cluster, acme, 0, "a", "alice")
    await acme.exit("alice")
    await alice.page.wait_for_selector(f"{root} .state:has-text('kicked: revoked')")
    assert await alice.page.get_attribute(root, "data-state") == "closed"
    await asyncio.sleep(1.0)
    assert not (await acme.user_online("alice")).online  # it did not log in again
    assert alice.errors == []


async def test_demo_moves_to_next_url_on_restart(cluster, acme, open_page):
    chat = await open_page(edge_url(cluster, 0) + "/demo?backoffMax=30")
    page = chat.page
    await page.fill("#tenant-form input[name=account]", acme.account)
    await page.fill("#tenant-form input[name=password]", acme.password)
    root = ".panel[data-panel=b]"
    second, first = ws_url(cluster, 1), ws_url(cluster, 0)
    await page.fill(f"{root} .connect input[name=userId]", "bob")
    await page.fill(f"{root} .connect input[name=urls]", f"{second}, {first}")
    await page.click(f"{root} .connect button[type=submit]")
    await page.wait_for_selector(f"{root} .state:has-text('connected to {second}')")

    stopping = asyncio.create_task(asyncio.to_thread(cluster.processes["edge2"].stop))
    try:
        # `reconnect` makes the client leave at once for the next URL, well
        # before the 30-second backoff could pass.
        await page.wait_for_selector(
            f"{root} .state:has-text('connected to {first}')", timeout=10_000
        )
        sent = await acme.send_msg("alice", "after the switch", to="bob")
        item = page.locator(f"{root} .messages li[data-msg-id='{sent.msg_id}']")
        await item.wait_for()
        assert await item.count() == 1
    finally:
        await stopping
        await asyncio.to_thread(cluster.start_edge, 1)


async def test_prim_js_served_as_module(cluster):
    async with httpx.AsyncClient(base_url=edge_url(cluster, 0)) as http:
        response = await http.get("/static/prim.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "export class PrimClient" in response.text


async def test_pages_have_security_headers(cluster):
    async with httpx.AsyncClient(base_url=edge_url(cluster, 1)) as http:
        for path in ("/console", "/demo"):
            response = await http.get(path)
            assert response.status_code == 200
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"


async def test_prim_js_fetches_missed_broadcasts(cluster, acme, open_page):
    """PrimClient with lastBroadcastSeq gets the broadcasts sent while it was away."""
    first = await acme.send_msg("boss", "before", all=True)
    missed = [await acme.send_msg("boss", f"missed {n}", all=True) for n in (1, 2)]
    token = (await acme.get_token("carol", "web"))["token"]
    chat = await open_page(edge_url(cluster, 0) + "/demo")
    received = await chat.page.evaluate(
        """async ([url, token, after]) => {
            const { PrimClient } = await import("/static/prim.js");
            const client = new PrimClient([url], token, { lastBroadcastSeq: after });
            await client.connect();
            const ids = [];
            for (let i = 0; i < 2; i++) ids.push((await client.receive(5)).msgId);
            const last = client.lastBroadcastSeq;
            await client.close();
            return { ids, last };
        }""",
        [ws_url(cluster, 1), token, first["broadcastSeq"]],
    )
    assert received["ids"] == [m["msgId"] for m in missed]
    assert received["last"] == missed[-1]["broadcastSeq"]
    assert chat.errors == []
