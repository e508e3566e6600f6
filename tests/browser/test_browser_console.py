"""The web console in Chromium: the tenant's and the operator's views."""

from __future__ import annotations

import pytest

from prim.client import Kicked, UserClient

from helpers import edge_url, new_tenant, unique, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"))
    yield client
    await client.close()


async def connect(cluster, tenant, user_id: str, edge: int) -> UserClient:
    token = (await tenant.get_token(user_id, "android", nickname=f"{user_id} nick")).token
    client = UserClient(ws_url(cluster, edge), token)
    await client.connect()
    return client


async def sign_in_tenant(page, tenant) -> None:
    await page.fill("#tenant-form input[name=account]", tenant.account)
    await page.fill("#tenant-form input[name=password]", tenant.password)
    await page.click("#tenant-form button[type=submit]")
    await page.wait_for_selector("#tenant-view:not([hidden])")


async def test_console_tenant_view(cluster, acme, open_page):
    u1 = await connect(cluster, acme, "u1", 0)
    u2 = await connect(cluster, acme, "u2", 1)
    try:
        console = await open_page(edge_url(cluster, 0) + "/console?poll=300")
        page = console.page
        await sign_in_tenant(page, acme)

        # Both users online, each on its own edge node.
        await page.wait_for_selector("#users tr[data-user-id=u1]")
        await page.wait_for_selector("#users tr[data-user-id=u2]")
        assert await page.inner_text("#online-total") == "(2)"
        assert await page.inner_text("#users tr[data-user-id=u1] td.node") == "edge1"
        assert await page.inner_text("#users tr[data-user-id=u2] td.node") == "edge2"
        assert await page.inner_text("#users tr[data-user-id=u1] td:nth-child(2)") == "u1 nick"
        await page.wait_for_selector("#nodes li[data-node-id=edge2]")
        await console.screenshot("console-tenant-online")

        await page.click("#users tr[data-user-id=u2] button.devices")
        await page.wait_for_selector("#devices-panel:not([hidden])")
        assert await page.inner_text("#devices-user") == "u2"
        device = await page.inner_text("#devices tbody tr")
        assert "android" in device
        assert "edge2" in device

        # A message from the console reaches u2's client.
        await page.fill("#send-form input[name=from]", "u1")
        await page.fill("#send-form input[name=to]", "u2")
        await page.fill("#send-form textarea[name=message]", "hello from the console")
        await page.click("#send-form button[type=submit]")
        # u2's connection, and u1's as the sender's other device.
        await page.wait_for_selector("#send-result:has-text('2 connection(s) reached')")
        for client in (u2, u1):
            received = await client.receive(10)
            assert received.message == "hello from the console"
            assert received.sender.user_id == "u1"

        await page.fill("#history-form input[name=userId]", "u2")
        await page.fill("#history-form input[name=peerId]", "u1")
        await page.click("#history-form button[type=submit]")
        await page.wait_for_selector("#history li:has-text('hello from the console')")

        await page.fill("#ttl-form input[name=ttl]", "3600")
        await page.click("#ttl-form button[type=submit]")
        await page.wait_for_selector("#ttl-result:has-text('New tokens now live 3600 seconds')")

        # Force u1 offline: its client is kicked and the list drops it.
        exit_button = page.locator("#users tr[data-user-id=u1] button.exit")
        await exit_button.click()
        await page.wait_for_selector("#users tr[data-user-id=u1] button.exit:has-text('Confirm')")
        await exit_button.click()
        await page.wait_for_selector("#status:has-text('u1: 1 token(s) revoked')")
        await page.wait_for_selector("#users tr[data-user-id=u1]", state="detached")
        await page.wait_for_selector("#online-total:has-text('(1)')")
        assert await page.locator("#users tr[data-user-id=u2]").count() == 1
        with pytest.raises(Kicked) as kicked:
            await u1.receive(10)
        assert kicked.value.reason == "revoked"
        await console.screenshot("console-tenant-after-exit")

        assert console.errors == []
    finally:
        await u1.close()
        await u2.close()


async def test_console_users_paged(cluster, acme, open_page):
    clients = [await connect(cluster, acme, f"user{i}", i % 2) for i in range(3)]
    try:
        console = await open_page(edge_url(cluster, 1) + "/console?poll=300")
        page = console.page
        await sign_in_tenant(page, acme)
        await page.select_option("#users-size", "10")
        await page.wait_for_selector("#users tr[data-user-id=user2]")
        assert await page.inner_text("#users-page") == "Page 1 of 1"
        assert await page.locator("#users tbody tr").count() == 3
        assert console.errors == []
    finally:
        for client in clients:
            await client.close()


async def test_console_wrong_password_shows_error(cluster, acme, open_page):
    console = await open_page(edge_url(cluster, 0) + "/console")
    page = console.page
    await page.fill("#tenant-form input[name=account]", acme.account)
    await page.fill("#tenant-form input[name=password]", "wrong-password")
    await page.click("#tenant-form button[type=submit]")
    await page.wait_for_selector("#status.error:has-text('Sign-in failed')")
    assert await page.is_hidden("#tenant-view")
    assert "wrong-password" not in await page.content()


async def test_console_operator_view(cluster, acme, open_page):
    console = await open_page(edge_url(cluster, 0) + "/console")
    page = console.page
    await page.fill("#operator-form input[name=token]", cluster.admin_token)
    await page.click("#operator-form button[type=submit]")
    await page.wait_for_selector("#operator-view:not([hidden])")
    await page.wait_for_selector("#edges li:has-text('edge2')")

    created = unique("made-in-console")
    await page.fill("#create-form input[name=account]", created)
    await page.fill("#create-form input[name=password]", "console-pass-1")
    await page.fill("#create-form input[name=phoneNum]", "+15550199")
    await page.click("#create-form button[type=submit]")
    await page.wait_for_selector(f"#create-result:has-text('Created tenant {created}')")
    async with acme.__class__(edge_url(cluster, 0), admin_token=cluster.admin_token) as operator:
        fetched = await operator.get_sys_client(created)
        listing = await operator.list_sys_clients(size=20)
    assert fetched.phone_num == "+15550199"
    first_accounts = [tenant.account for tenant in listing.sys_clients]
    rows = await page.locator("#tenants tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.account)"
    )
    assert rows == first_accounts
    assert await page.inner_text("#tenant-total") == f"({listing.total})"
    await console.screenshot("console-operator")
    assert console.errors == []
