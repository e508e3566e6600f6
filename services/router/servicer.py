"""The prim.v1.Router servicer: store, then deliver."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bson import ObjectId

from prim import ids
from prim.errors import Code, PrimError, abort, invalid
from prim.messages import profile_dict, push_frame, wire_message
from prim.pb import common_pb2, edge_pb2, presence_pb2, router_pb2, router_pb2_grpc
from prim.rpc import Peer

from .delivery import EdgeNodes
from .store import MessageStore, Outgoing, now_ms

log = logging.getLogger("prim.router")

SYNC_LIMIT_MAX = 500
HISTORY_LIMIT_MAX = 200
KICK_REASONS = ("replaced", "revoked", "expired")


def _handled(method):
    """Turn a PrimError raised by ``method`` into an aborted call."""

    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except PrimError as exc:
            await abort(context, exc)

    wrapper.__name__ = method.__name__
    return wrapper


def _check_message_fields(request) -> None:
    ids.check_id("tenant", request.tenant)
    ids.check_user_id("from", request.sender.user_id)
    if request.msg_type:
        ids.check_choice("msgType", request.msg_type, ids.MSG_TYPES)
    if request.msg_cont_type:
        ids.check_choice("msgContType", request.msg_cont_type, ids.MSG_CONT_TYPES)
    if len(request.client_msg_id) > 128:
        raise invalid("clientMsgId", request.client_msg_id[:16] + "...", "must be at most 128 characters")


def _message_proto(doc: dict[str, Any], broadcast: bool = False) -> common_pb2.Message:
    sender = doc.get("from") or {}
    return common_pb2.Message(
        msg_id=doc["msgId"],
        seq=0 if broadcast else doc["seq"],
        time=doc["time"],
        sender=common_pb2.Profile(
            user_id=sender.get("userId", ""),
            nickname=sender.get("nickname", ""),
            avatar=sender.get("avatar", ""),
        ),
        to=doc.get("to", ""),
        message=doc["message"],
        msg_type=doc.get("msgType", ""),
        msg_cont_type=doc.get("msgContType", ""),
        client_msg_id=doc.get("clientMsgId", ""),
        broadcast_seq=doc["seq"] if broadcast else 0,
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, store: MessageStore, presence: Peer, nodes: EdgeNodes):
        self.store = store
        self.presence = presence
        self.nodes = nodes

    @_handled
    async def Send(self, request, context):
        _check_message_fields(request)
        ids.check_user_id("to", request.to)
        item = Outgoing(
            tenant=request.tenant,
            sender=profile_dict(request.sender),
            to=request.to,
            message=request.message,
            msg_type=request.msg_type or "info",
            msg_cont_type=request.msg_cont_type or "text",
            client_msg_id=request.client_msg_id,
        )
        if request.persist:
            item = await self.store.store(item)
            if item.duplicate:
                return router_pb2.SendReply(
                    msg_id=item.msg_id, seq=item.sender_seq, time=item.time, duplicate=True
                )
        delivered = await self._deliver(item, request.origin_conn_id)
        return router_pb2.SendReply(
            msg_id=item.msg_id, seq=item.sender_seq, time=item.time, delivered=delivered
        )

    async def _deliver(self, item: Outgoing, origin_conn_id: str) -> int:
        """Push to the recipient's connections and to the sender's other ones."""
        wanted = [item.to] if item.to == item.sender_id else [item.to, item.sender_id]
        reply = await self.presence.call(
            "Locate", presence_pb2.LocateRequest(tenant=item.tenant, user_ids=wanted)
        )
        to_recipient = push_frame("msg", item.wire(item.recipient_seq))
        to_sender = (
            to_recipient
            if item.to == item.sender_id
            else push_frame("msg", item.wire(item.sender_seq))
        )
        frames = []
        for location in reply.locations:
            if location.conn_id == origin_conn_id:
                continue
            frame = to_recipient if location.user_id == item.to else to_sender
            frames.append((location, frame))
        return await self.nodes.deliver(item.tenant, frames)

    @_handled
    async def Broadcast(self, request, context):
        _check_message_fields(request)
        msg_id = str(ObjectId())
        sent_at = now_ms()
        data = wire_message(
            msg_id=msg_id,
            seq=0,
            time=sent_at,
            sender=profile_dict(request.sender),
            to="",
            message=request.message,
            msg_type=request.msg_type or "info",
            msg_cont_type=request.msg_cont_type or "text",
            client_msg_id=request.client_msg_id,
        )
        broadcast_seq = 0
        if request.persist:
            stored = {k: v for k, v in data.items() if k != "seq"}
            broadcast_seq = await self.store.store_broadcast(request.tenant, stored)
            data["broadcastSeq"] = broadcast_seq
        delivered = await self.nodes.deliver_tenant(request.tenant, push_frame("msg", data))
        return router_pb2.SendReply(
            msg_id=msg_id, time=sent_at, delivered=delivered, broadcast_seq=broadcast_seq
        )

    @_handled
    async def Sync(self, request, context):
        ids.check_id("tenant", request.tenant)
        ids.check_user_id("userId", request.user_id)
        if request.after_seq < 0:
            raise invalid("afterSeq", request.after_seq, "must be 0 or more")
        limit = ids.check_int("limit", request.limit, 1, SYNC_LIMIT_MAX)
        docs, has_more = await self.store.page(
            "timeline",
            {"tenant": request.tenant, "user": request.user_id},
            before=None,
            after=request.after_seq,
            limit=limit,
        )
        return common_pb2.MessagePage(messages=[_message_proto(d) for d in docs], has_more=has_more)

    @_handled
    async def History(self, request, context):
        ids.check_id("tenant", request.tenant)
        ids.check_user_id("userId", request.user_id)
        ids.check_user_id("peerId", request.peer_id)
        before, after = self._cursors(request)
        limit = ids.check_int("limit", request.limit, 1, HISTORY_LIMIT_MAX)
        docs, has_more = await self.store.page(
            "timeline",
            {"tenant": request.tenant, "user": request.user_id, "peer": request.peer_id},
            before=before,
            after=after,
            limit=limit,
        )
        return common_pb2.MessagePage(messages=[_message_proto(d) for d in docs], has_more=has_more)

    @_handled
    async def BroadcastHistory(self, request, context):
        ids.check_id("tenant", request.tenant)
        before, after = self._cursors(request)
        limit = ids.check_int("limit", request.limit, 1, HISTORY_LIMIT_MAX)
        docs, has_more = await self.store.page(
            "broadcasts", {"tenant": request.tenant}, before=before, after=after, limit=limit
        )
        return common_pb2.MessagePage(
            messages=[_message_proto(d, broadcast=True) for d in docs], has_more=has_more
        )

    @staticmethod
    def _cursors(request) -> tuple[int | None, int | None]:
        before = request.before_seq if request.HasField("before_seq") else None
        after = request.after_seq if request.HasField("after_seq") else None
        if before is not None and after is not None:
            raise PrimError(Code.INVALID_PARAMETER, "invalid beforeSeq/afterSeq: set at most one of them")
        if before is not None and before < 1:
            raise invalid("beforeSeq", before, "must be 1 or more")
        if after is not None and after < 0:
            raise invalid("afterSeq", after, "must be 0 or more")
        return before, after

    @_handled
    async def Kick(self, request, context):
        ids.check_id("tenant", request.tenant)
        ids.check_choice("reason", request.reason, KICK_REASONS)
        targets = list(request.targets)
        if not targets:
            ids.check_user_id("userId", request.user_id)
            reply = await self.presence.call(
                "Locate", presence_pb2.LocateRequest(tenant=request.tenant, user_ids=[request.user_id])
            )
            targets = [
                loc
                for loc in reply.locations
                if not request.app_platform or loc.app_platform == request.app_platform
            ]
        by_node: dict[str, list[str]] = {}
        for location in targets:
            by_node.setdefault(location.node_id, []).append(location.conn_id)
        results = await asyncio.gather(
            *(
                self.nodes.kick(
                    request.tenant,
                    node_id,
                    edge_pb2.EdgeKickRequest(
                        tenant=request.tenant, conn_ids=conn_ids, reason=request.reason
                    ),
                )
                for node_id, conn_ids in by_node.items()
            )
        )
        closed = sum(results)
        log.info(
            "kicked connections",
            extra={"tenant": request.tenant, "user_id": request.user_id, "reason": request.reason, "closed": closed},
        )
        return router_pb2.KickReply(closed=closed)
