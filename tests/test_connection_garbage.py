"""A closed WebSocket connection leaves nothing for the garbage collector.

Reference cycles kept each closed connection's objects alive until a full
collection: the Session and its Connection, the ASGI scope and the
WebSocket protocol, uvicorn's HTTP protocol and its parser, and a failed
handshake's traceback. A full collection walks every live object of the
edge, so a busy edge would pause all its connections for it.
This test counts, in a real edge process, what a full collection finds
after connections close.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import websockets

from prim import devcluster
from prim.client import UserConnection

from helpers import new_tenant

pytestmark = pytest.mark.integration

PROBE = Path(__file__).resolve().parent / "gc_probe"
CLOSED_CLEANLY = 60
DROPPED = 20
FAILED_HANDSHAKES = 20


@pytest.fixture
def probed_edge(cluster, tmp_path):
    """A third edge node on the shared cluster that reports its garbage on SIGUSR1."""
    report = tmp_path / "gc.json"
    http_port, grpc_port = devcluster.free_port(), devcluster.free_port()
    probe = {"PYTHONPATH": str(PROBE), "PRIM_TEST_GC_REPORT": str(report)}
    process = cluster.spawn_edge("edge-gc-probe", http_port, grpc_port, probe, tmp_path)
    try:
        yield process, http_port, report
    finally:
        process.stop()


async def garbage_report(pid: int, report: Path) -> dict:
    report.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    # The handler runs when the edge's main thread next runs Python code.
    deadline = time.monotonic() + 20
    while not report.exists():
        assert time.monotonic() < deadline, "the edge wrote no garbage report"
        await asyncio.sleep(0.1)
    return json.loads(report.read_text())


async def test_closed_connections_leave_no_cycles(cluster, probed_edge):
    process, http_port, report = probed_edge
    tenant = await new_tenant(cluster)
    url = f"ws://127.0.0.1:{http_port}/acc"
    try:
        tokens = []
        for index in range(CLOSED_CLEANLY + DROPPED):
            tokens.append((await tenant.get_token(f"u{index}"))["token"])
        # A collection first, so that the count below covers only these connections.
        await garbage_report(process.proc.pid, report)

        conns = [await UserConnection.connect(url, token) for token in tokens[:CLOSED_CLEANLY]]
        for conn in conns[:5]:
            await conn.request("ping", {})
        await asyncio.gather(*(conn.close() for conn in conns))
        # Clients that vanish without a close frame, as a dropped network would leave them.
        for token in tokens[CLOSED_CLEANLY:]:
            ws = await websockets.connect(f"{url}?token={token}")
            ws.transport.abort()

        # Upgrade requests that fail the WebSocket handshake (no Sec-WebSocket-Key).
        for _ in range(FAILED_HANDSHAKES):
            reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
            writer.write(
                b"GET /acc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 400"), status
            writer.close()
            await writer.wait_closed()

        # The edge notices the closes and unregisters the users. Wait until
        # presence has none of them left.
        deadline = time.monotonic() + 20
        while (online := await tenant.list_user_maps()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not online, online
        found = await garbage_report(process.proc.pid, report)
    finally:
        await tenant.close()
    # With the cycles in place, each connection left about 50 objects and
    # each failed handshake about 80.
    assert found["unreachable"] < 0.5 * (CLOSED_CLEANLY + DROPPED + FAILED_HANDSHAKES), found
