"""Delivery to edge nodes: one long-lived channel per node.

The list of live nodes comes from presence and is reused for a couple of
seconds. Deliveries to different nodes run concurrently, each under its own
deadline, so a dead or slow node costs that deadline and nothing more, and
never delays the other nodes. A node that restarts at the same address is
reached again by the same channel, which reconnects by itself.

Pushes of one-to-one messages go through a :class:`NodeLane` per node: one
Deliver call at a time, carrying everything queued since the last one, in
the order queued. Since the edge queues a request's pushes in request order,
every connection gets this router's pushes in the order they were queued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from prim.errors import PrimError
from prim.pb import edge_pb2, edge_pb2_grpc, presence_pb2
from prim.rpc import Peer

log = logging.getLogger("prim.router.delivery")


class EdgeNodes:
    def __init__(self, presence: Peer, service_token: str, deadline: float, cache_seconds: float):
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
        return self._addresses

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
            log.warning("listing edge nodes failed", extra={"node_id": node_id, "error": exc.msg})
            return None
        if peer is None:
            log.warning("edge node not registered", extra={"node_id": node_id, "tenant": tenant})
            return None
        try:
            return await peer.call(method, request)
        except PrimError as exc:
            # The message is stored; the client recovers it with sync.
            log.warning(
                "delivery to edge failed",
                extra={"node_id": node_id, "method": method, "tenant": tenant, "error": exc.msg},
            )
            return None


class NodeLane:
    """Ordered deliveries to one edge node: one Deliver call in flight at a time.

    Pushes queued while a call is in flight go out together in the next call,
    up to ``MAX_REQUEST_BYTES`` of frames, so a busy lane sends fewer, larger
    requests instead of queueing one call per message.
    """

    MAX_REQUEST_BYTES = 4 * 1024 * 1024

    def __init__(self, nodes: EdgeNodes, node_id: str):
        self.nodes = nodes
        self.node_id = node_id
        self._queue: collections.deque[tuple[list[edge_pb2.Push], asyncio.Future]] = (
            collections.deque()
        )
        self._sender: asyncio.Task | None = None

    def add(self, pushes: list[edge_pb2.Push]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((pushes, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return future

    async def _send_all(self) -> None:
        try:
            while self._queue:
                entries = self._take()
                try:
                    counts = await self._send([push for pushes, _ in entries for push in pushes])
                except Exception:
                    log.exception("delivery to edge failed", extra={"node_id": self.node_id})
                    counts = None
                offset = 0
                for pushes, future in entries:
                    if not future.done():
                        if counts is None:
                            future.set_result([0] * len(pushes))
                        else:
                            future.set_result(counts[offset : offset + len(pushes)])
                    offset += len(pushes)
                if counts is None:
                    self._drop_queued()
        finally:
            self._sender = None

    def _drop_queued(self) -> None:
        """Settle the pushes queued during a failed call with zeros, without sending them.

        They already waited for that call, up to a deadline. Sending them in a
        call of their own could make them wait one more, so a hung node would
        cost them two deadlines. The messages are stored, and sync returns them.
        """
        while self._queue:
            pushes, future = self._queue.popleft()
            if not future.done():
                future.set_result([0] * len(pushes))

    def _take(self) -> list[tuple[list[edge_pb2.Push], asyncio.Future]]:
        entries, size = [], 0
        while self._queue:
            pushes = self._queue[0][0]
            entry_size = sum(len(push.frame) for push in pushes)
            if entries and size + entry_size > self.MAX_REQUEST_BYTES:
                break
            entries.append(self._queue.popleft())
            size += entry_size
        return entries

    async def _send(self, pushes: list[edge_pb2.Push]) -> list[int] | None:
        tenant = pushes[0].tenant if pushes else ""
        reply = await self.nodes._call(
            self.node_id, "Deliver", edge_pb2.DeliverRequest(pushes=pushes), tenant
        )
        if reply is None:
            return None
        if len(reply.accepted) == len(pushes):
            return list(reply.accepted)
        # An edge node older than the accepted field: credit the total in order.
        counts, left = [], reply.delivered
        for push in pushes:
            counts.append(min(left, len(push.conn_ids)))
            left -= counts[-1]
        return counts
