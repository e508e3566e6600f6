"""The hub: this node's registry of live connections and their send queues.

A frame pushed to a :class:`Connection` is written to its socket's transport
at once while the transport takes data, with no task and no await. When the
client stops reading, the kernel buffers fill (the WebSocket protocol caps
them with SO_SNDBUF), the transport's buffer passes its high-water mark and
the transport pauses. Frames pushed from then on wait in the connection's
bounded send queue, which one task writes out when the transport resumes.
Pushing only writes or appends, with no await, so delivery to other
connections does not wait for this one.

A connection whose queue passes its frame or byte limit is a slow consumer:
it is closed with code 1008, and the client recovers what it missed with
``sync``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

import msgspec

from prim import background, metrics
from prim.pb import common_pb2

log = logging.getLogger("prim.edge.hub")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_RESTART = 1012
CLOSE_KICK = 4001


def now_ms() -> int:
    return int(time.time() * 1000)


# The empty queue every connection starts with; push replaces it before appending.
_NO_FRAMES: list[bytes] = []


class FrameWriter(Protocol):
    """The socket side of a connection, as the edge's WebSocket protocol provides it."""

    def can_write(self) -> bool: ...

    def is_open(self) -> bool: ...

    def write_text_frames(self, payloads: Sequence[bytes]) -> bool: ...

    async def wait_writable(self) -> None: ...


class Connection:
    """One logged-in WebSocket on this node."""

    def __init__(
        self,
        conn_id: str,
        writer: FrameWriter,
        close: Callable[[int, str], Awaitable[None]],
        max_frames: int,
        max_bytes: int,
    ):
        self.conn_id = conn_id
        self.user: common_pb2.User | None = None
        self.tenant = ""
        self.user_id = ""
        self.token_id = ""
        self.expires_at = 0
        self.last_seen = time.monotonic()
        self.closed = False
        self._io = writer
        self._close = close
        # Frames waiting for a paused transport; a list, made when first needed,
        # since an idle connection should not hold an empty deque.
        self._queue: list[bytes] = _NO_FRAMES
        self._queued_bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._writer: asyncio.Task | None = None
        # Highest timeline seq pushed on this connection; see take_seq.
        self.last_pushed_seq = 0

    def take_seq(self, seq: int) -> bool:
        """Record that a message push at timeline position ``seq`` goes out next (0 for none).

        Pushes leave in ascending seq: one router sends them in that order,
        but two router replicas can swap two messages. Return False for the
        one that comes after a higher seq, which the caller drops, because
        the client already saw the gap and fetches it with ``sync``.
        """
        if seq:
            if seq <= self.last_pushed_seq:
                log.debug(
                    "late push dropped",
                    extra={"conn_id": self.conn_id, "seq": seq, "last_seq": self.last_pushed_seq},
                )
                return False
            self.last_pushed_seq = seq
        return True

    def push_frames(self, frames: Sequence[bytes], cmd: str) -> int:
        """Write or queue several frames of ``cmd`` in order, with one write while the transport takes data.

        Return how many were written or queued: fewer than given when the
        connection is closed or its queue overflowed on the next one.
        """
        if self.closed:
            return 0
        if self._writer is None and self._io.can_write():
            if not self._io.write_text_frames(frames):
                return 0
            metrics.count_frames_sent(cmd, len(frames))
            return len(frames)
        for count, frame in enumerate(frames):
            if not self.push(frame, cmd):
                return count
        return len(frames)

    def push(self, frame: bytes, cmd: str) -> bool:
        """Write or queue a frame whose cmd is ``cmd``; return False when the connection is
        closed or overflows."""
        if self.closed:
            return False
        if self._writer is None and self._io.can_write():
            if not self._io.write_text_frames((frame,)):
                return False
            metrics.count_frames_sent(cmd)
            return True
        if not self._io.is_open():
            return False  # closing or gone: the frame could not be written
        if len(self._queue) >= self._max_frames or self._queued_bytes + len(frame) > self._max_bytes:
            log.warning(
                "slow consumer closed",
                extra={"conn_id": self.conn_id, "tenant": self.tenant, "user_id": self.user_id},
            )
            self.close_soon(CLOSE_POLICY, "send queue overflow")
            return False
        if self._queue is _NO_FRAMES:
            self._queue = []
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        metrics.count_frames_sent(cmd)
        if self._writer is None:
            self._writer = background.spawn(self._write())
        return True

    async def _write(self) -> None:
        """Write the queue out whenever the transport takes data again, until it is empty."""
        try:
            while self._queue and not self.closed:
                await self._io.wait_writable()
                if self.closed:
                    break
                frames, self._queue = self._queue, _NO_FRAMES
                self._queued_bytes = 0
                if not self._io.write_text_frames(frames):
                    break  # the socket went away; the reader notices and cleans up
        except Exception as exc:
            log.debug("write failed", extra={"conn_id": self.conn_id, "error": repr(exc)})
        finally:
            self._queue = _NO_FRAMES
            self._queued_bytes = 0
            self._writer = None

    async def flush(self, timeout: float) -> None:
        """Wait until queued frames are written, at most ``timeout`` seconds."""
        if self._writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass

    async def close(self, code: int, reason: str = "", flush_timeout: float = 1.0) -> None:
        """Write what is queued, then close the WebSocket with ``code``."""
        if self.closed:
            return
        await self.flush(flush_timeout)
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
        try:
            await self._close(code, reason)
        except Exception as exc:
            log.debug("close failed", extra={"conn_id": self.conn_id, "error": repr(exc)})

    def close_soon(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True  # stop queueing at once; the close itself runs in a task
        if self._writer is not None:
            self._writer.cancel()
        background.spawn(self._close_quietly(code, reason))

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            await self._close(code, reason)
        except Exception as exc:
            log.debug("close failed", extra={"conn_id": self.conn_id, "error": repr(exc)})


class Hub:
    """Logged-in connections of this node, by id and by tenant."""

    def __init__(self) -> None:
        self.by_id: dict[str, Connection] = {}
        self.by_tenant: dict[str, dict[str, Connection]] = collections.defaultdict(dict)

    def add(self, conn: Connection) -> None:
        self.by_id[conn.conn_id] = conn
        self.by_tenant[conn.tenant][conn.conn_id] = conn

    def remove(self, conn: Connection) -> bool:
        if self.by_id.pop(conn.conn_id, None) is None:
            return False
        tenant_conns = self.by_tenant.get(conn.tenant)
        if tenant_conns is not None:
            tenant_conns.pop(conn.conn_id, None)
            if not tenant_conns:
                del self.by_tenant[conn.tenant]
        return True

    def get(self, tenant: str, conn_id: str) -> Connection | None:
        """Return the connection with this id, only if it belongs to ``tenant``."""
        conn = self.by_id.get(conn_id)
        return conn if conn is not None and conn.tenant == tenant else None

    def of_tenant(self, tenant: str) -> list[Connection]:
        return list(self.by_tenant.get(tenant, {}).values())

    def of_user(self, tenant: str, user_id: str, app_platform: str = "") -> Iterator[Connection]:
        for conn in self.of_tenant(tenant):
            if conn.user_id == user_id and (not app_platform or conn.user.app_platform == app_platform):
                yield conn

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self.by_id.values()))


class _Message(msgspec.Struct):
    seq: int = 0


class _Response(msgspec.Struct):
    data: _Message | None = None


class _Push(msgspec.Struct):
    response: _Response


_push_decoder = msgspec.json.Decoder(_Push)


def _push_seq(frame: bytes) -> int:
    """Read the timeline seq of a push frame: 0 for online-only messages and broadcasts."""
    try:
        push = _push_decoder.decode(frame)
    except msgspec.DecodeError:
        return 0
    return push.response.data.seq if push.response.data is not None else 0


def deliver_pushes(hub: Hub, pushes) -> list[int]:
    """Queue pushes on this node's connections and return how many connections took each push.

    There is no await in here, so pushes enter the send queues in the order
    given. A sender (the router or an edge) writes its requests to a node in
    order on one stream, so each connection gets that sender's pushes in seq
    order. A connection's pushes of one request leave in one socket write,
    because under load a request often carries several for one connection.
    """
    accepted = [0] * len(pushes)
    by_conn: dict[Connection, list[tuple[int, bytes]]] = {}
    for index, push in enumerate(pushes):
        seq = _push_seq(push.frame)
        for conn_id in push.conn_ids:
            conn = hub.get(push.tenant, conn_id)
            if conn is not None and conn.take_seq(seq):
                by_conn.setdefault(conn, []).append((index, push.frame))
    for conn, entries in by_conn.items():
        written = conn.push_frames([frame for _, frame in entries], "msg")
        for index, _ in entries[:written]:
            accepted[index] += 1
    return accepted
