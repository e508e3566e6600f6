"""The prim.v1.Edge servicer: pushes and kicks from the router."""

from __future__ import annotations

import asyncio

from prim import telemetry
from prim.pb import edge_pb2, edge_pb2_grpc

from .hub import deliver_pushes
from .node import EdgeNode


async def _read_into(requests, inbox: asyncio.Queue) -> None:
    """Put each request of a stream into ``inbox``, then None when the stream ends."""
    try:
        async for request in requests:
            inbox.put_nowait(request)
    finally:
        inbox.put_nowait(None)


class EdgeServicer(edge_pb2_grpc.EdgeServicer):
    def __init__(self, node: EdgeNode):
        self.node = node
        self._inboxes: set[asyncio.Queue] = set()

    async def Deliver(self, request, context):
        return self._deliver(request)

    async def DeliverStream(self, requests, context):
        # A task reads the requests into an inbox, so end_streams() can end
        # the call by putting None there while a read is pending.
        inbox: asyncio.Queue[edge_pb2.DeliverRequest | None] = asyncio.Queue()
        self._inboxes.add(inbox)
        reader = asyncio.create_task(_read_into(requests, inbox))
        try:
            while (request := await inbox.get()) is not None:
                with telemetry.remote_span("/prim.v1.Edge/DeliverStream", request.trace):
                    reply = self._deliver(request)
                yield reply
        finally:
            self._inboxes.discard(inbox)
            reader.cancel()

    def end_streams(self) -> None:
        """End the open DeliverStream calls; their routers open new ones where needed."""
        for inbox in self._inboxes:
            inbox.put_nowait(None)

    def _deliver(self, request: edge_pb2.DeliverRequest) -> edge_pb2.DeliverReply:
        accepted = deliver_pushes(self.node.hub, request.pushes)
        return edge_pb2.DeliverReply(delivered=sum(accepted), accepted=accepted)

    async def DeliverTenant(self, request, context):
        delivered = 0
        for conn in self.node.hub.of_tenant(request.tenant):
            if conn.push(request.frame, "msg"):
                delivered += 1
        return edge_pb2.DeliverReply(delivered=delivered)

    async def Kick(self, request, context):
        hub = self.node.hub
        if request.conn_ids:
            conns = [hub.get(request.tenant, conn_id) for conn_id in request.conn_ids]
        else:
            conns = list(hub.of_user(request.tenant, request.user_id, request.app_platform))
        targets = [conn for conn in conns if conn is not None and not conn.closed]
        await asyncio.gather(*(self.node.kick(conn, request.reason or "revoked") for conn in targets))
        return edge_pb2.EdgeKickReply(closed=len(targets))
