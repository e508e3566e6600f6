"""Delivery to edge nodes: one long-lived channel per node.

The list of live nodes comes from presence and is reused for a couple of
seconds. Deliveries to different nodes run concurrently, each under its own
deadline, so a dead or slow node costs that deadline and nothing more, and
never delays the other nodes. A node that restarts at the same address is
reached again by the same channel, which reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

from prim.errors import PrimError
from prim.pb import common_pb2, edge_pb2, edge_pb2_grpc, presence_pb2
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

    async def deliver(self, tenant: str, frames: Iterable[tuple[common_pb2.Location, bytes]]) -> int:
        """Push each frame to its connection; return how many connections took one."""
        by_node: dict[str, dict[bytes, list[str]]] = defaultdict(lambda: defaultdict(list))
        for location, frame in frames:
            by_node[location.node_id][frame].append(location.conn_id)
        if not by_node:
            return 0
        results = await asyncio.gather(
            *(self._deliver_node(tenant, node_id, pushes) for node_id, pushes in by_node.items())
        )
        return sum(results)

    async def _deliver_node(self, tenant: str, node_id: str, pushes: dict[bytes, list[str]]) -> int:
        request = edge_pb2.DeliverRequest(
            pushes=[
                edge_pb2.Push(tenant=tenant, conn_ids=conn_ids, frame=frame)
                for frame, conn_ids in pushes.items()
            ]
        )
        return await self._call(node_id, "Deliver", request, tenant)

    async def deliver_tenant(self, tenant: str, frame: bytes) -> int:
        """Push a frame to every connection of a tenant on every live node."""
        addresses = await self.addresses(refresh=True)
        request = edge_pb2.DeliverTenantRequest(tenant=tenant, frame=frame)
        results = await asyncio.gather(
            *(self._call(node_id, "DeliverTenant", request, tenant) for node_id in addresses)
        )
        return sum(results)

    async def kick(self, tenant: str, node_id: str, request: edge_pb2.EdgeKickRequest) -> int:
        return await self._call(node_id, "Kick", request, tenant, field="closed")

    async def _call(self, node_id: str, method: str, request, tenant: str, field: str = "delivered") -> int:
        try:
            peer = await self.peer(node_id)
        except PrimError as exc:
            log.warning("listing edge nodes failed", extra={"node_id": node_id, "error": exc.msg})
            return 0
        if peer is None:
            log.warning("edge node not registered", extra={"node_id": node_id, "tenant": tenant})
            return 0
        try:
            reply = await peer.call(method, request)
        except PrimError as exc:
            # The message is stored; the client recovers it with sync.
            log.warning(
                "delivery to edge failed",
                extra={"node_id": node_id, "method": method, "tenant": tenant, "error": exc.msg},
            )
            return 0
        return getattr(reply, field)
