"""Shared steps of the end-to-end tests."""

from __future__ import annotations

import asyncio
import secrets

from prim.client import TenantClient, UserConnection


def edge_url(cluster, index: int) -> str:
    return f"http://127.0.0.1:{cluster.edge_http_ports[index]}"


def ws_url(cluster, index: int) -> str:
    return f"ws://127.0.0.1:{cluster.edge_http_ports[index]}/acc"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def new_tenant(cluster, account: str | None = None, edge: int = 0) -> TenantClient:
    """Create a tenant through the operator and return a client with its credentials."""
    account = account or unique("t")
    password = "pw-" + secrets.token_hex(8)
    async with TenantClient(edge_url(cluster, edge), admin_token=cluster.admin_token) as operator:
        await operator.create_sys_client(account, password, "+15550100")
    client = TenantClient(edge_url(cluster, edge), account, password)
    client.account = account
    client.password = password
    return client


async def connect_user(cluster, tenant: TenantClient, user_id: str, edge: int, platform: str = "web", **token_args):
    token = (await tenant.get_token(user_id, platform, **token_args))["token"]
    conn = await UserConnection.connect(ws_url(cluster, edge), token)
    conn.token = token
    return conn


async def next_msg(conn: UserConnection, timeout: float = 5.0) -> dict:
    """The next ``msg`` push, skipping other pushes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        push = await conn.next_push(max(left, 0.01))
        if push["cmd"] == "msg":
            return push["response"]["data"]


async def no_push(conn: UserConnection, wait: float = 0.5) -> None:
    try:
        push = await conn.next_push(wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected push {push}")
