"""The prim.v1.Edge servicer: pushes and kicks from the router."""

from __future__ import annotations

import asyncio

import msgspec

from prim import telemetry
from prim.pb import edge_pb2, edge_pb2_grpc

from .hub import Connection
from .node import EdgeNode


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
        # No await in here: pushes enter the send queues in request order, and
        # the router sends its requests to a node in order on one stream, so
        # each connection gets the router's pushes in seq order.
        # A connection's pushes of one request leave in one socket write: under
        # load a request often carries several for the same connection.
        hub = self.node.hub
        accepted = [0] * len(request.pushes)
        by_conn: dict[Connection, list[tuple[int, bytes]]] = {}
        for index, push in enumerate(request.pushes):
            seq = _push_seq(push.frame)
            for conn_id in push.conn_ids:
                conn = hub.get(push.tenant, conn_id)
                if conn is not None and conn.take_seq(seq):
                    by_conn.setdefault(conn, []).append((index, push.frame))
        for conn, entries in by_conn.items():
            written = conn.push_frames([frame for _, frame in entries], "msg")
            for index, _ in entries[:written]:
                accepted[index] += 1
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
