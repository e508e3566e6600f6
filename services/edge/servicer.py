"""The prim.v1.Edge servicer: pushes and kicks from the router."""

from __future__ import annotations

import asyncio

from prim.pb import edge_pb2, edge_pb2_grpc

from .node import EdgeNode


class EdgeServicer(edge_pb2_grpc.EdgeServicer):
    def __init__(self, node: EdgeNode):
        self.node = node

    async def Deliver(self, request, context):
        hub = self.node.hub
        delivered = 0
        for push in request.pushes:
            for conn_id in push.conn_ids:
                conn = hub.get(push.tenant, conn_id)
                if conn is not None and conn.push(push.frame):
                    delivered += 1
        return edge_pb2.DeliverReply(delivered=delivered)

    async def DeliverTenant(self, request, context):
        delivered = 0
        for conn in self.node.hub.of_tenant(request.tenant):
            if conn.push(request.frame):
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
