"""Delivery to edge nodes: one long-lived channel per node.

The list of live nodes comes from presence and is reused for a couple of
seconds. Deliveries to different nodes run concurrently, each under its own
deadline, so a dead or slow node costs that deadline and nothing more, and
never delays the other nodes. A node that restarts at the same address is
reached again by the same channel, which reconnects by itself.

Pushes of one-to-one messages go through a :class:`NodeLane` per node: one
long-lived DeliverStream call whose requests carry everything queued since
the previous request, in the order queued. The node handles a stream's
requests in order and queues a request's pushes in request order, so every
connection gets this router's pushes in the order they were queued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import grpc

from prim import background, telemetry
from prim.errors import PrimError
from prim.pb import edge_pb2, edge_pb2_grpc, presence_pb2
from prim.rpc import Peer

log = logging.getLogger("prim.router.delivery")


class EdgeNodes:
    def __init__(
        self,
        presence: Peer,
        service_token: str,
        deadline: float,
        cache_seconds: float,
        logger: logging.Logger = log,
    ):
        # The edge, which delivers its online-only messages without the router, passes its own.
        self.log = logger
        self.presence = presence
        self.service_token = service_token
        self.deadline = deadline
        self.cache_seconds = cache_seconds
        self._addresses: dict[str, str] = {}
        self._peers: dict[str, Peer] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._lanes: dict[str, NodeLane] = {}

    async def addresses(self, refresh: bool = False) -> dict[str, str]:
        """Live node ids and their gRPC addresses."""
        fresh = time.monotonic() - self._fetched_at < self.cache_seconds
        if fresh and not refresh:
            return self._addresses
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.cache_seconds and not refresh:
                return self._addresses
            reply = await self.presence.call("ListNodes", presence_pb2.ListNodesRequest())
            self._addresses = {node.node_id: node.grpc_addr for node in reply.nodes}
            self._fetched_at = time.monotonic()
            await self._forget_gone()
        return self._addresses

    async def _forget_gone(self) -> None:
        """Close the channels and idle lanes of nodes no longer listed.

        Node ids change when pods are replaced, so without this the router
        would keep a channel to every edge node it ever reached. A node that
        comes back gets a new channel on its next push.
        """
        for node_id in [n for n in self._peers if n not in self._addresses]:
            lane = self._lanes.get(node_id)
            if lane is not None and not lane.idle():
                continue
            if lane is not None:
                await self._lanes.pop(node_id).close()
            await self._peers.pop(node_id).close()
            self.log.info("closed the channel to a departed edge node", extra={"node_id": node_id})

    async def peer(self, node_id: str) -> Peer | None:
        addresses = await self.addresses()
        if node_id not in addresses:
            addresses = await self.addresses(refresh=True)
        address = addresses.get(node_id)
        if address is None:
            return None
        peer = self._peers.get(node_id)
        if peer is None or peer.target != address:
            if peer is not None:
                await peer.close()
            peer = Peer(
                f"edge {node_id}",
                address,
                edge_pb2_grpc.EdgeStub,
                "prim.v1.Edge",
                service_token=self.service_token,
                deadline=self.deadline,
            )
            self._peers[node_id] = peer
        return peer

    async def close(self) -> None:
        for lane in self._lanes.values():
            await lane.close()
        for peer in self._peers.values():
            await peer.close()

    # Delivery

    def deliver_in_order(self, node_id: str, pushes: list[edge_pb2.Push]) -> asyncio.Future:
        """Queue pushes for a node behind those queued before.

        Returns a future of the connections that accepted each push (zeros
        when the node cannot be reached).
        """
        lane = self._lanes.get(node_id)
        if lane is None:
            lane = self._lanes[node_id] = NodeLane(self, node_id)
        return lane.add(pushes)

    async def deliver_tenant(self, tenant: str, frame: bytes) -> int:
        """Push a frame to every connection of a tenant on every live node."""
        addresses = await self.addresses(refresh=True)
        request = edge_pb2.DeliverTenantRequest(tenant=tenant, frame=frame)
        replies = await asyncio.gather(
            *(self._call(node_id, "DeliverTenant", request, tenant) for node_id in addresses)
        )
        return sum(reply.delivered for reply in replies if reply is not None)

    async def kick(self, tenant: str, node_id: str, request: edge_pb2.EdgeKickRequest) -> int:
        reply = await self._call(node_id, "Kick", request, tenant)
        return reply.closed if reply is not None else 0

    async def _call(self, node_id: str, method: str, request, tenant: str = ""):
        """Call a node; return its reply, or None when it cannot be reached."""
        try:
            peer = await self.peer(node_id)
        except PrimError as exc:
            self.log.warning(
                "listing edge nodes failed", extra={"node_id": node_id, "error": exc.msg}
            )
            return None
        if peer is None:
            self.log.warning(
                "edge node not registered", extra={"node_id": node_id, "tenant": tenant}
            )
            return None
        try:
            return await peer.call(method, request)
        except PrimError as exc:
            # The message is stored; the client recovers it with sync.
            self.log.warning(
                "delivery to edge failed",
                extra={"node_id": node_id, "method": method, "tenant": tenant, "error": exc.msg},
            )
            return None


class NodeLane:
    """Ordered deliveries to one edge node over one DeliverStream call.

    Pushes queued while earlier requests are on the way go out together in
    the next request, up to ``MAX_REQUEST_BYTES`` of frames, and at most
    ``MAX_IN_FLIGHT`` requests wait for their replies at once. The node
    replies in order, so each reply settles the oldest request.

    A reply that does not come within the deadline, or a stream that fails,
    ends the stream: the requests waiting for replies and the pushes queued
    meanwhile settle with zeros (the messages are stored, and sync returns
    them), and the next push opens a new stream.
    """

    MAX_REQUEST_BYTES = 4 * 1024 * 1024
    MAX_IN_FLIGHT = 8

    def __init__(self, nodes: EdgeNodes, node_id: str):
        self.nodes = nodes
        self.node_id = node_id
        # Queued pushes: (pushes, future of their counts, span context of their trace).
        self._queue: collections.deque[tuple[list[edge_pb2.Push], asyncio.Future, Any]] = (
            collections.deque()
        )
        self._sender: asyncio.Task | None = None
        self._call = None
        self._reader: asyncio.Task | None = None
        # Requests written on the stream, oldest first, each as its queue entries.
        self._waiting: collections.deque[list[tuple[list[edge_pb2.Push], asyncio.Future, Any]]] = (
            collections.deque()
        )
        self._room = asyncio.Event()  # set when a request leaves _waiting
        self._timer: asyncio.TimerHandle | None = None  # deadline of the oldest waiting request

    def idle(self) -> bool:
        """Return whether nothing is queued or waiting for a reply."""
        return self._sender is None and not self._queue and not self._waiting

    def add(self, pushes: list[edge_pb2.Push]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((pushes, future, telemetry.current_span_context()))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return future

    async def _send_all(self) -> None:
        try:
            while self._queue:
                if len(self._waiting) >= self.MAX_IN_FLIGHT:
                    self._room.clear()
                    await self._room.wait()
                    continue
                call = await self._stream()
                if call is None:
                    self._drop_queued()
                    return
                entries = self._take()
                request = edge_pb2.DeliverRequest(
                    pushes=[push for pushes, _, _ in entries for push in pushes],
                    trace=telemetry.trace_carrier([context for _, _, context in entries]),
                )
                self._waiting.append(entries)
                if self._timer is None:
                    self._arm_deadline(call)
                try:
                    await call.write(request)
                except (Exception, asyncio.CancelledError) as exc:
                    # A write on a call that _fail cancelled can raise
                    # CancelledError. Only a cancellation of this task ends it.
                    if background.cancelling():
                        raise
                    self._fail(call, exc)  # the stream broke; _fail settles what waits
        except Exception:
            self.nodes.log.exception("delivery to edge failed", extra={"node_id": self.node_id})
            self._settle_waiting()
            self._drop_queued()
        finally:
            self._sender = None
            # Pushes must not wait for a sender that is gone.
            self._drop_queued()

    async def _stream(self):
        """Return the open DeliverStream call to the node, opening one if needed (None when the node is unknown)."""
        if self._call is not None:
            return self._call
        try:
            peer = await self.nodes.peer(self.node_id)
        except PrimError as exc:
            self.nodes.log.warning(
                "listing edge nodes failed", extra={"node_id": self.node_id, "error": exc.msg}
            )
            return None
        if peer is None:
            self.nodes.log.warning("edge node not registered", extra={"node_id": self.node_id})
            return None
        call = peer.open_stream("DeliverStream")
        self._call = call
        self._reader = asyncio.create_task(self._read(call))
        self.nodes.log.debug("delivery stream opened", extra={"node_id": self.node_id})
        return call

    async def _read(self, call) -> None:
        """Settle the waiting requests with the node's replies, oldest first.

        It reads even while nothing waits, so a stream the node ends is
        noticed at once and the next push opens a new one.
        """
        try:
            while True:
                reply = await call.read()
                if self._call is not call:
                    return  # the stream was replaced while this reply was on its way
                if reply is grpc.aio.EOF:
                    raise ConnectionError("the node ended the delivery stream")
                if not self._waiting:
                    raise ConnectionError("a reply came for no request")
                entries = self._waiting.popleft()
                self._room.set()
                self._arm_deadline(call)
                _settle_entries(entries, _accepted(reply, entries))
        except asyncio.CancelledError as exc:
            if background.cancelling():
                raise
            self._fail(call, exc)  # grpc's error for a call that was cancelled
        except Exception as exc:
            self._fail(call, exc)

    def _arm_deadline(self, call) -> None:
        """Give the oldest waiting request the deadline for its reply, counted from now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(
                self.nodes.deadline, self._fail, call, TimeoutError()
            )

    def _fail(self, call, exc: BaseException) -> None:
        """End a broken or hung stream and settle what it carried with zeros."""
        if self._call is not call:
            return
        self._call = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if isinstance(exc, grpc.aio.AioRpcError):
            error = f"{exc.code().name}: {exc.details()}"
        elif isinstance(exc, TimeoutError):
            error = f"no reply within {self.nodes.deadline} s"
        else:
            error = str(exc) or repr(exc)
        lost = sum(len(pushes) for entries in self._waiting for pushes, _, _ in entries)
        extra = {"node_id": self.node_id, "error": error, "pushes_unconfirmed": lost}
        if lost:
            self.nodes.log.warning("delivery stream to edge failed", extra=extra)
        else:
            self.nodes.log.info("delivery stream to edge ended", extra=extra)
        call.cancel()
        self._settle_waiting()
        self._drop_queued()

    def _settle_waiting(self) -> None:
        while self._waiting:
            _settle_entries(self._waiting.popleft(), None)
        self._room.set()

    def _drop_queued(self) -> None:
        """Settle the pushes queued during a failed call with zeros, without sending them.

        They already waited for that call, up to a deadline. Sending them in a
        call of their own could make them wait one more, so a hung node would
        cost them two deadlines. The messages are stored, and sync returns them.
        """
        while self._queue:
            pushes, future, _ = self._queue.popleft()
            if not future.done():
                future.set_result([0] * len(pushes))

    def _take(self) -> list[tuple[list[edge_pb2.Push], asyncio.Future, Any]]:
        entries, size = [], 0
        while self._queue:
            pushes = self._queue[0][0]
            entry_size = sum(len(push.frame) for push in pushes)
            if entries and size + entry_size > self.MAX_REQUEST_BYTES:
                break
            entries.append(self._queue.popleft())
            size += entry_size
        return entries

    async def close(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._reader, self._sender):
            if task is not None:
                task.cancel()
        # The lane is closed, so what it still holds settles with zeros.
        self._settle_waiting()
        self._drop_queued()


def _accepted(reply: edge_pb2.DeliverReply, entries) -> list[int]:
    """Connections that took each push of a request, in request order."""
    pushes = [push for entry_pushes, _, _ in entries for push in entry_pushes]
    if len(reply.accepted) == len(pushes):
        return list(reply.accepted)
    # A reply without per-push counts: credit the total in order.
    counts, left = [], reply.delivered
    for push in pushes:
        counts.append(min(left, len(push.conn_ids)))
        left -= counts[-1]
    return counts


def _settle_entries(entries, counts: list[int] | None) -> None:
    """Give each entry's future its pushes' counts (zeros when ``counts`` is None)."""
    offset = 0
    for pushes, future, _ in entries:
        if not future.done():
            if counts is None:
                future.set_result([0] * len(pushes))
            else:
                future.set_result(counts[offset : offset + len(pushes)])
        offset += len(pushes)
