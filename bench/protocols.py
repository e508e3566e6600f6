"""Client side of each measured system, as the load generator speaks it.

Each protocol turns a credential into a URL, logs in, recognises the frame
that confirms the server has registered the client (so no message can arrive
before the receiver is routable), encodes a message to one user and hands
every pushed payload to the client's ``on_push(payload, order)``, where
``order`` is the server's sequence number when the order to check is not the
payload's own.

- ``prim``: ``/acc`` frames of docs/contract.md (login with a token, ``msg``
  with ``persist``, pushes with ``cmd`` ``msg``); broadcasts go through REST
  ``sendMsg`` with ``all: true``.
- ``socketio``: Engine.IO 4 over a raw WebSocket (no polling): the server's
  open packet ``0{...}``, the client's ``40{auth}`` connect packet, events as
  ``42["msg",{...}]``, and a ``3`` pong for each ``2`` ping.
- ``channels`` and ``relay``: plain JSON text frames ``{"to", "m"}`` in,
  ``{"m"}`` out, ``{"ready": 1}`` once registered.
"""

from __future__ import annotations

import base64
import json

import httpx
import orjson


class Protocol:
    def url(self, base: str, credential: dict) -> str:
        raise NotImplementedError

    def on_open(self, client) -> None:
        pass

    def on_text(self, client, text: str) -> None:
        raise NotImplementedError

    def send_message(self, client, to: str, payload: str, n: int, config: dict) -> None:
        raise NotImplementedError

    async def broadcast_sender(self, config: dict, clients: list):
        raise NotImplementedError


class WebSocketBroadcaster:
    """Sends broadcast requests as frames on one of the clients' own connections."""

    def __init__(self, client, encode):
        self.client = client
        self.encode = encode

    async def send(self, payload: str) -> None:
        self.client.send_text(self.encode(payload))

    async def close(self) -> None:
        pass


class PrimProtocol(Protocol):
    def url(self, base: str, credential: dict) -> str:
        return base + "/acc"

    def on_open(self, client) -> None:
        token = client.credential["token"]
        client.send_text(
            orjson.dumps({"seq": "login", "cmd": "login", "data": {"token": token}}).decode()
        )

    def on_text(self, client, text: str) -> None:
        frame = orjson.loads(text)
        cmd, frame_seq, response = frame.get("cmd"), frame.get("seq"), frame.get("response") or {}
        if cmd == "msg" and frame_seq == "":
            if client.on_push is not None:
                data = response["data"]
                # Concurrent sendMsg calls have no order between them; a
                # broadcast's order is its broadcastSeq, ascending on every connection.
                client.on_push(data["message"], data.get("broadcastSeq"))
        elif cmd == "login":
            if response.get("code") == 200:
                client.mark_ready()
            else:
                client.fail_ready(f"login failed: {response.get('code')} {response.get('codeMsg')}")
        elif cmd == "msg":
            if response.get("code") != 200:
                client.rejected.append(int(frame_seq))
                client.errors += 1
        elif response.get("code") != 200 or cmd in ("kick", "reconnect"):
            client.errors += 1

    def send_message(self, client, to: str, payload: str, n: int, config: dict) -> None:
        data = {"to": to, "message": payload, "persist": config.get("persist", True)}
        client.send_text(orjson.dumps({"seq": str(n), "cmd": "msg", "data": data}).decode())

    async def broadcast_sender(self, config: dict, clients: list):
        return PrimRestBroadcaster(config)


class PrimRestBroadcaster:
    """POSTs ``sendMsg`` with ``all: true`` as the tenant backend."""

    def __init__(self, config: dict):
        basic = base64.b64encode(f"{config['account']}:{config['password']}".encode()).decode()
        self.http = httpx.AsyncClient(
            base_url=config["rest_url"],
            headers={"Authorization": f"Basic {basic}"},
            timeout=30.0,
            limits=httpx.Limits(max_connections=config["window"]),
        )
        self.sender_id = config["broadcast_from"]

    async def send(self, payload: str) -> None:
        body = {"from": self.sender_id, "all": True, "message": payload}
        response = await self.http.post("/msg/sendMsg", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"sendMsg failed with HTTP {response.status_code}: {response.text}")

    async def close(self) -> None:
        await self.http.aclose()


class SocketIOProtocol(Protocol):
    def url(self, base: str, credential: dict) -> str:
        return base + "/socket.io/?EIO=4&transport=websocket"

    def on_text(self, client, text: str) -> None:
        kind = text[:1]
        if kind == "4":  # Engine.IO message: a Socket.IO packet follows
            packet = text[1:2]
            if packet == "2":  # EVENT
                name, data = json.loads(text[2:])
                if name == "msg" and client.on_push is not None:
                    client.on_push(data["m"])
            elif packet == "0":  # CONNECT accepted, after the server's connect handler ran
                client.mark_ready()
            elif packet == "4":  # CONNECT_ERROR
                client.fail_ready(f"Socket.IO connect error: {text[2:]}")
        elif kind == "2":  # Engine.IO ping
            client.send_text("3")
        elif kind == "0":  # Engine.IO open: connect to the default namespace
            client.send_text("40" + json.dumps({"user": client.credential["user"]}))

    def send_message(self, client, to: str, payload: str, n: int, config: dict) -> None:
        client.send_text("42" + json.dumps(["msg", {"to": to, "m": payload}]))

    async def broadcast_sender(self, config: dict, clients: list):
        return WebSocketBroadcaster(clients[0], lambda p: "42" + json.dumps(["bcast", {"m": p}]))


class JsonProtocol(Protocol):
    path = "/"

    def url(self, base: str, credential: dict) -> str:
        return f"{base}{self.path}?user={credential['user']}"

    def on_text(self, client, text: str) -> None:
        frame = json.loads(text)
        if "m" in frame:
            if client.on_push is not None:
                client.on_push(frame["m"])
        elif frame.get("ready"):
            client.mark_ready()
        else:
            client.errors += 1

    def send_message(self, client, to: str, payload: str, n: int, config: dict) -> None:
        client.send_text(json.dumps({"to": to, "m": payload}))

    async def broadcast_sender(self, config: dict, clients: list):
        return WebSocketBroadcaster(clients[0], lambda p: json.dumps({"all": True, "m": p}))


class ChannelsProtocol(JsonProtocol):
    path = "/ws/"


class RelayProtocol(JsonProtocol):
    path = "/"


PROTOCOLS = {
    "prim": PrimProtocol,
    "socketio": SocketIOProtocol,
    "channels": ChannelsProtocol,
    "relay": RelayProtocol,
}
