"""The user client's protocol rules against a scripted edge node.

A real edge has no way to drop a reply or to skip a seq on request, so these tests
run a small WebSocket server on 127.0.0.1 that replies to ``/acc`` frames as
each test needs.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from prim.client import Kicked, UserClient

USER = {"userId": "u1", "appPlatform": "web", "sysAccount": "acme", "nickname": "Ann"}


def message(seq: int, msg_id: str | None = None) -> dict:
    return {
        "msgId": msg_id or f"m{seq}",
        "seq": seq,
        "time": 1000 + seq,
        "from": {"userId": "u2", "nickname": "", "avatar": ""},
        "to": "u1",
        "message": f"text {seq}",
        "msgType": "info",
        "msgContType": "text",
        "clientMsgId": "",
    }


class FakeEdge:
    """A scripted ``/acc``: replies to login, sync and heartbeat from ``timeline``.

    Subclasses override :meth:`on_msg` and :meth:`after_sync`. ``frames``
    records (connection number, frame) of every request received.
    """

    def __init__(self, timeline: list[dict] | None = None):
        self.timeline = timeline or []
        self.frames: list[tuple[int, dict]] = []
        self.connections = 0

    async def __aenter__(self) -> FakeEdge:
        self.server = await websockets.serve(self._serve, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/acc"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    def requests(self, cmd: str) -> list[tuple[int, dict]]:
        return [(number, frame) for number, frame in self.frames if frame["cmd"] == cmd]

    @staticmethod
    async def reply(ws, frame: dict, data) -> None:
        response = {"code": 200, "codeMsg": "ok", "data": data}
        await ws.send(json.dumps({"seq": frame["seq"], "cmd": frame["cmd"], "response": response}))

    @staticmethod
    async def push(ws, cmd: str, data) -> None:
        response = {"code": 200, "codeMsg": "ok", "data": data}
        await ws.send(json.dumps({"seq": "", "cmd": cmd, "response": response}))

    async def _serve(self, ws) -> None:
        self.connections += 1
        number = self.connections
        try:
            async for raw in ws:
                frame = json.loads(raw)
                self.frames.append((number, frame))
                await self.handle(ws, number, frame)
        except websockets.ConnectionClosed:
            pass

    async def handle(self, ws, number: int, frame: dict) -> None:
        cmd, data = frame["cmd"], frame["data"]
        if cmd == "login":
            await self.reply(ws, frame, USER)
        elif cmd == "sync":
            after, limit = data["afterSeq"], data.get("limit", 100)
            later = [m for m in self.timeline if m["seq"] > after]
            await self.reply(ws, frame, {"messages": later[:limit], "hasMore": len(later) > limit})
            await self.after_sync(ws, number)
        elif cmd == "heartbeat":
            await self.reply(ws, frame, {"heartbeatTime": 1})
        elif cmd == "msg":
            await self.on_msg(ws, number, frame)
        elif cmd == "exit":
            await self.reply(ws, frame, None)
            await ws.close()

    async def after_sync(self, ws, number: int) -> None:
        pass

    async def on_msg(self, ws, number: int, frame: dict) -> None:
        await self.reply(ws, frame, {"msgId": "sent-1", "seq": len(self.timeline) + 1, "time": 1})


async def test_resend_after_lost_reply_keeps_client_msg_id():
    class DropFirstReply(FakeEdge):
        async def on_msg(self, ws, number, frame):
            if number == 1:
                await ws.close(1011, "lost")  # the reply never comes
            else:
                await super().on_msg(ws, number, frame)

    async with DropFirstReply() as edge:
        async with UserClient(edge.url, "token", backoff_max_seconds=0.2) as client:
            result = await client.send("u2", "hello")
        sends = edge.requests("msg")
        assert [number for number, _ in sends] == [1, 2]
        assert sends[0][1]["data"]["clientMsgId"] == sends[1][1]["data"]["clientMsgId"]
        assert len(sends[0][1]["data"]["clientMsgId"]) == 32
        assert result.msg_id == "sent-1"


async def test_gap_in_pushes_syncs_first():
    class SkipSeq(FakeEdge):
        async def after_sync(self, ws, number):
            if len(self.requests("sync")) == 1:
                self.timeline += [message(2), message(3)]
                await self.push(ws, "msg", message(3))  # seq 2 was never pushed
                await self.push(ws, "msg", message(3))  # and a duplicate

    async with SkipSeq([message(1)]) as edge:
        async with UserClient(edge.url, "token") as client:
            received = [await client.receive(5) for _ in range(3)]
            with pytest.raises(TimeoutError):
                await client.receive(0.3)
        assert [m.seq for m in received] == [1, 2, 3]
        assert [frame["data"]["afterSeq"] for _, frame in edge.requests("sync")] == [0, 1]
        assert client.last_seq == 3


async def test_sync_pages_until_has_more_false():
    async with FakeEdge([message(seq) for seq in range(1, 8)]) as edge:
        async with UserClient(edge.url, "token", last_seq=2, sync_limit=2) as client:
            received = [await client.receive(5) for _ in range(5)]
        assert [m.seq for m in received] == [3, 4, 5, 6, 7]
        assert [frame["data"]["afterSeq"] for _, frame in edge.requests("sync")] == [2, 4, 6]


async def test_sync_after_reconnect_from_last_seq():
    class DropAfterFirstSync(FakeEdge):
        async def after_sync(self, ws, number):
            if number == 1:
                await self.push(ws, "msg", message(2))
                self.timeline += [message(2), message(3)]
                await ws.close(1011, "gone")

    async with DropAfterFirstSync([message(1)]) as edge:
        async with UserClient(edge.url, "token", backoff_max_seconds=0.2) as client:
            received = [await client.receive(5) for _ in range(3)]
        assert [m.msg_id for m in received] == ["m1", "m2", "m3"]
        syncs = [(number, frame["data"]["afterSeq"]) for number, frame in edge.requests("sync")]
        assert syncs == [(1, 0), (2, 2)]


@pytest.mark.parametrize("reconnect_on_kick", [False, {"replaced"}])
async def test_expired_kick_stops_client(reconnect_on_kick):
    class KickOnce(FakeEdge):
        async def after_sync(self, ws, number):
            await self.push(ws, "kick", {"reason": "expired"})
            await ws.close(4001, "expired")

    async with KickOnce() as edge:
        client = UserClient(edge.url, "token", reconnect_on_kick=reconnect_on_kick)
        await client.connect()
        with pytest.raises(Kicked) as kicked:
            await client.receive(5)
        assert kicked.value.reason == "expired"
        with pytest.raises(Kicked):
            await client.receive(5)  # the iterator stays stopped
        await asyncio.sleep(0.3)
        assert edge.connections == 1
        await client.close()


async def test_kick_reconnects_when_told():
    class KickOnce(FakeEdge):
        async def after_sync(self, ws, number):
            if number == 1:
                await self.push(ws, "kick", {"reason": "replaced"})
                await ws.close(4001, "replaced")

    async with KickOnce() as edge:
        async with UserClient(
            edge.url, "token", reconnect_on_kick=True, backoff_max_seconds=0.2
        ) as client:
            for _ in range(100):
                if edge.connections == 2 and client.connected:
                    break
                await asyncio.sleep(0.05)
            assert edge.connections == 2
            assert client.connected


async def test_heartbeat_on_timer():
    async with FakeEdge() as edge:
        async with UserClient(edge.url, "token", heartbeat_seconds=0.1):
            await asyncio.sleep(0.45)
        assert len(edge.requests("heartbeat")) >= 3
        assert len(edge.requests("exit")) == 1


async def test_login_fields_sent_with_token():
    async with FakeEdge() as edge:
        async with UserClient(edge.url, "secret", login_fields={"deviceInfo": "pixel"}) as client:
            assert client.user.nickname == "Ann"
        [(_, login)] = edge.requests("login")
        assert login["data"] == {"token": "secret", "deviceInfo": "pixel"}


def test_backoff_is_jittered_and_capped():
    client = UserClient(
        "ws://127.0.0.1:1/acc", "t", backoff_initial_seconds=0.5, backoff_max_seconds=4
    )
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (100, 4.0)]:
        delays = [client._backoff(attempt) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays), attempt
        assert max(delays) > ceiling / 2, attempt
