"""An end user's WebSocket connection to ``/acc``."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import msgspec
import websockets

from .errors import ApiError

log = logging.getLogger("prim.client")

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class UserConnection:
    """One WebSocket: requests get their replies by ``seq``; pushes are queued.

    ``await UserConnection.connect(url, token)`` logs in with a ``login``
    frame (or ``?token=`` when ``token_in_query``). :meth:`request` sends a
    frame and returns the reply's ``data``; :meth:`next_push` returns the next
    push (``msg``, ``kick``, ``reconnect``) as a dict.
    """

    def __init__(self, ws: websockets.ClientConnection):
        self.ws = ws
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.user: dict[str, Any] | None = None
        self.close_code: int | None = None
        self._waiting: dict[str, asyncio.Future] = {}
        self._seq = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, token: str | None = None, *, token_in_query: bool = False, **connect_kwargs
    ) -> UserConnection:
        target = f"{url}?token={token}" if token and token_in_query else url
        ws = await websockets.connect(target, max_size=None, **connect_kwargs)
        conn = cls(ws)
        if token and not token_in_query:
            conn.user = await conn.request("login", {"token": token})
        return conn

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    frame = _decoder.decode(raw)
                except msgspec.DecodeError:
                    log.warning("invalid frame from the server: not JSON")
                    continue
                if not isinstance(frame, dict):
                    log.warning("invalid frame from the server: not an object")
                    continue
                future = self._waiting.pop(frame.get("seq") or "", None)
                if future is not None and not future.done():
                    future.set_result(frame)
                else:
                    await self.pushes.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"connection closed ({self.close_code})"))
            self._waiting.clear()

    async def send_frame(self, cmd: str, data: Any = None, frame_seq: str | None = None) -> str:
        frame_seq = frame_seq or str(next(self._seq))
        await self.ws.send(
            _encoder.encode({"seq": frame_seq, "cmd": cmd, "data": data or {}}).decode()
        )
        return frame_seq

    async def request(self, cmd: str, data: Any = None, timeout: float = 10.0) -> Any:
        """Send a request and return its reply's data; raise ApiError on an error code."""
        if self._reader.done():
            raise ConnectionError(f"connection closed ({self.close_code})")
        frame_seq = str(next(self._seq))
        future = asyncio.get_running_loop().create_future()
        self._waiting[frame_seq] = future
        try:
            await self.send_frame(cmd, data, frame_seq)
            frame = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(frame_seq, None)
        response = frame["response"]
        if response["code"] != 200:
            raise ApiError(response["code"], response["codeMsg"], data=response.get("data"))
        return response["data"]

    async def send(self, to: str, message: str, **fields) -> dict:
        return await self.request("msg", {"to": to, "message": message, **fields})

    async def sync(self, after_seq: int, limit: int | None = None) -> dict:
        data = {"afterSeq": after_seq}
        if limit is not None:
            data["limit"] = limit
        return await self.request("sync", data)

    async def sync_broadcast(self, after_seq: int, limit: int | None = None) -> dict:
        data = {"afterSeq": after_seq}
        if limit is not None:
            data["limit"] = limit
        return await self.request("syncBroadcast", data)

    async def next_push(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.pushes.get(), timeout)

    async def receive_push(self) -> dict[str, Any] | None:
        """Wait for the next push; return None once the connection closed and none is left."""
        if self.pushes.empty() and not self._reader.done():
            getter = asyncio.ensure_future(self.pushes.get())
            await asyncio.wait({getter, self._reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            # A cancelled Queue.get() leaves its item in the queue.
            getter.cancel()
        if not self.pushes.empty():
            return self.pushes.get_nowait()
        return None

    @property
    def closed(self) -> bool:
        """Whether the connection closed and its last frames were read."""
        return self._reader.done()

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader
