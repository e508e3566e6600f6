"""The ceiling: one picows process that forwards frames from an in-memory map.

``python -m bench.peers.relay --port P --stats-port S``. A client connects to
``/?user=U`` and gets ``{"ready": 1}``. A frame ``{"to": U2, "m": ...}`` is
forwarded as ``{"m": ...}`` to the latest connection of U2, and a frame
``{"all": true, "m": ...}`` to every connection. Nothing is stored, there is
no authentication and no second process: this measures what one Python
process with the fastest WebSocket library here can forward.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from urllib.parse import parse_qs, urlsplit

import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_create_server

from bench.peers.stats import COUNTERS, snapshot

CLIENTS: dict[str, WSTransport] = {}


class RelayListener(WSListener):
    def __init__(self, user: str):
        self.user = user

    def on_ws_connected(self, transport: WSTransport) -> None:
        CLIENTS[self.user] = transport
        transport.send(WSMsgType.TEXT, b'{"ready": 1}')

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if CLIENTS.get(self.user) is transport:
            del CLIENTS[self.user]

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        request = json.loads(frame.get_payload_as_utf8_text())
        out = json.dumps({"m": request["m"]}).encode()
        if request.get("all"):
            for target in CLIENTS.values():
                target.send(WSMsgType.TEXT, out)
            return
        target = CLIENTS.get(request["to"])
        if target is None:
            COUNTERS["no_route"] += 1
            return
        target.send(WSMsgType.TEXT, out)


def listener_for(request):
    query = parse_qs(urlsplit(request.path.decode()).query)
    users = query.get("user")
    return RelayListener(users[0]) if users else None


async def serve_stats(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = snapshot()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
    await writer.drain()
    writer.close()


async def main(port: int, stats_port: int) -> None:
    server = await ws_create_server(listener_for, "127.0.0.1", port, backlog=2048)
    stats = await asyncio.start_server(serve_stats, "127.0.0.1", stats_port)
    async with server, stats:
        await asyncio.gather(server.serve_forever(), stats.serve_forever())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="WebSocket port on 127.0.0.1")
    parser.add_argument("--stats-port", type=int, required=True, help="port of GET /stats")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(main(args.port, args.stats_port))
