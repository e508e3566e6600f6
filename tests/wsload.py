"""A light WebSocket client for load tests: one asyncio protocol per connection.

It speaks just enough of RFC 6455 to log in to ``/acc`` and count broadcast
pushes: no extensions, no fragmentation, unmasked server frames. A thousand
of these cost far less CPU than a thousand full clients, which matters when
the servers under test share the same two cores.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
BROADCAST_KEY = b'"broadcastSeq":'
HEARTBEAT_SECONDS = 20.0


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame, as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class LoadClient(asyncio.Protocol):
    """One logged-in connection that records the broadcastSeq of each push it reads."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshake_done = False
        self.handshake = asyncio.Event()
        self.replies: asyncio.Queue[dict] = asyncio.Queue()
        self.broadcast_seqs: list[int] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.progress: asyncio.Event | None = None
        self.wanted = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._heartbeat_timer = asyncio.get_running_loop().call_later(
            HEARTBEAT_SECONDS, self._heartbeat
        )

    def connection_lost(self, exc) -> None:
        self._heartbeat_timer.cancel()
        self.closed.set()

    def _heartbeat(self) -> None:
        # The edge closes a connection that sends nothing for 90 seconds.
        if self.handshake_done and not self.transport.is_closing():
            self.send_json({"seq": "", "cmd": "heartbeat", "data": {}})
        self._heartbeat_timer = asyncio.get_running_loop().call_later(
            HEARTBEAT_SECONDS, self._heartbeat
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.handshake_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:12])
            if b" 101" not in status:
                raise ConnectionError(f"handshake failed: {bytes(self.buffer[:end])!r}")
            del self.buffer[: end + 4]
            self.handshake_done = True
            self.handshake.set()
        self._parse()

    def _parse(self) -> None:
        buffer = self.buffer
        offset = 0
        while len(buffer) - offset >= 2:
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset + 2)
                start = offset + 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
                start = offset + 10
            if len(buffer) - start < length:
                break
            payload = bytes(buffer[start : start + length])
            offset = start + length
            self._on_frame(opcode, payload)
        del buffer[:offset]

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            at = payload.find(BROADCAST_KEY)
            if at >= 0:
                end = at + len(BROADCAST_KEY)
                stop = end
                while payload[stop] in b"0123456789":
                    stop += 1
                self.broadcast_seqs.append(int(payload[end:stop]))
                if self.progress is not None and len(self.broadcast_seqs) >= self.wanted:
                    self.progress.set()
            elif payload.startswith(b'{"seq":"') and not payload.startswith(b'{"seq":""'):
                self.replies.put_nowait(json.loads(payload))
        elif opcode == OP_PING:
            self.transport.write(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.transport.write(encode_frame(OP_CLOSE, payload[:2]))
            self.transport.close()

    def send_json(self, frame: dict) -> None:
        self.transport.write(encode_frame(OP_TEXT, json.dumps(frame).encode()))


async def connect(port: int, token: str, receive_buffer: int | None = None) -> LoadClient:
    """Open ``/acc`` on 127.0.0.1:port and log in; ``receive_buffer`` sets SO_RCVBUF."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    _, client = await loop.create_connection(LoadClient, sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    client.transport.write(
        (
            f"GET /acc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(client.handshake.wait(), 30)
    client.send_json({"seq": "1", "cmd": "login", "data": {"token": token}})
    reply = await asyncio.wait_for(client.replies.get(), 30)
    if reply["response"]["code"] != 200:
        raise ConnectionError(f"login failed: {reply}")
    return client
