"""The prim.v1.Router servicer: store, then deliver."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any

from bson import ObjectId

from prim import background, ids, metrics, telemetry
from prim.errors import Code, PrimError, abort, invalid
from prim.messages import profile_dict, push_frame, wire_message
from prim.pb import common_pb2, edge_pb2, router_pb2, router_pb2_grpc
from prim.rpc import SEND_STREAM_HEADER, Peer

from .delivery import EdgeNodes
from .dispatch import Dispatcher
from .store import MessageStore, Outgoing, now_ms

log = logging.getLogger("prim.router")

SYNC_LIMIT_MAX = 500
HISTORY_LIMIT_MAX = 200
KICK_REASONS = ("replaced", "revoked", "expired")
# Batches of one SendStream call handled at once. Past it, reading waits.
MAX_STREAM_BATCHES = 64
# The reply that requests an edge to end its SendStream call; see end_streams.
DRAINING = router_pb2.SendStreamReply(draining=True)


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


def observe_delivery(since: float, delivery: asyncio.Future) -> None:
    """Count a direct message's pushes once its ``delivery`` future is done."""
    if not delivery.cancelled():
        metrics.observe_delivery("direct", delivery.result(), since)


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


class RecentIds:
    """clientMsgIds of recent online-only messages, kept in memory for ``ttl_seconds``.

    Online-only messages are not stored, so this replica's memory is the
    only record of a clientMsgId: a resend within the window gets the first
    message's msgId and time and pushes nothing. Expired ids are dropped as
    new ones come, and past ``max_entries`` the oldest go first.
    """

    def __init__(self, ttl_seconds: float = 600.0, max_entries: int = 100_000):
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[tuple[str, str, str], tuple[float, str, int]] = (
            collections.OrderedDict()
        )

    def first(self, item: Outgoing) -> tuple[str, int] | None:
        """Return the msgId and time of the first message with ``item``'s clientMsgId,
        or record ``item`` as the first and return None (always None without a clientMsgId)."""
        if not item.client_msg_id:
            return None
        found = self.seen(item.tenant, item.sender_id, item.client_msg_id)
        if found is None:
            self.record(item.tenant, item.sender_id, item.client_msg_id, item.msg_id, item.time)
        return found

    def seen(self, tenant: str, sender_id: str, client_msg_id: str) -> tuple[str, int] | None:
        """Return the msgId and time recorded for a clientMsgId, or None when none is current."""
        entry = self._entries.get((tenant, sender_id, client_msg_id))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1], entry[2]
        return None

    def record(
        self, tenant: str, sender_id: str, client_msg_id: str, msg_id: str, sent_at: int
    ) -> None:
        """Record the message that first used a clientMsgId."""
        key = (tenant, sender_id, client_msg_id)
        now = time.monotonic()
        self._entries[key] = (now + self.ttl_seconds, msg_id, sent_at)
        self._entries.move_to_end(key)
        # Every entry lives ttl_seconds, so the oldest expire first.
        while self._entries and (
            len(self._entries) > self.max_entries or next(iter(self._entries.values()))[0] <= now
        ):
            self._entries.popitem(last=False)


def _stored_reply(item: Outgoing, ready_at: float) -> router_pb2.SendReply:
    """Build the reply to a stored message, without waiting for its delivery."""
    if item.duplicate:
        return router_pb2.SendReply(msg_id=item.msg_id, seq=item.sender_seq, time=item.time, duplicate=True)
    metrics.MESSAGES_STORED.labels("direct").inc()
    item.delivery.add_done_callback(functools.partial(observe_delivery, ready_at))
    return router_pb2.SendReply(msg_id=item.msg_id, seq=item.sender_seq, time=item.time)


def outgoing(request) -> Outgoing:
    """Check a SendRequest and build its message."""
    _check_message_fields(request)
    ids.check_user_id("to", request.to)
    return Outgoing(
        tenant=request.tenant,
        sender=profile_dict(request.sender),
        to=request.to,
        message=request.message,
        msg_type=request.msg_type or "info",
        msg_cont_type=request.msg_cont_type or "text",
        client_msg_id=request.client_msg_id,
        origin_conn_id=request.origin_conn_id,
        delivery=asyncio.get_running_loop().create_future(),
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, store: MessageStore, presence: Peer, nodes: EdgeNodes, dispatcher: Dispatcher):
        self.store = store
        self.presence = presence
        self.nodes = nodes
        self.dispatcher = dispatcher
        self.recent_ids = RecentIds()
        # Reply queues of the open SendStream calls, and whether end_streams ran.
        self._send_outboxes: set[asyncio.Queue] = set()
        self._stopping = False

    @_handled
    async def Send(self, request, context):
        return await self._send(request)

    async def SendBatch(self, request, context):
        return router_pb2.SendBatchReply(results=await self._send_batch(request.requests))

    async def SendStream(self, requests, context):
        # Each stored batch runs in a task of its own, as concurrent SendBatch
        # calls would, and its reply goes out when it is ready. The edge bounds
        # its batches in flight, and MAX_STREAM_BATCHES guards against one that does not.
        outbox: asyncio.Queue[router_pb2.SendStreamReply | None] = asyncio.Queue()
        # The edge waits for this header before its first batch; see SendLane.
        await context.send_initial_metadata(((SEND_STREAM_HEADER, "1"),))
        reader = background.spawn(self._read_batches(requests, outbox, context.peer()))
        # Ends the replies however the reader ends, even cancelled before it ran.
        reader.add_done_callback(lambda _: outbox.put_nowait(None))
        self._send_outboxes.add(outbox)
        if self._stopping:
            outbox.put_nowait(DRAINING)
        try:
            while (reply := await outbox.get()) is not None:
                yield reply
        finally:
            self._send_outboxes.discard(outbox)
            reader.cancel()

    def end_streams(self) -> None:
        """Ask the edges to write no more on their SendStream calls, and to end them.

        Each edge half-closes its call once it has read this, and the batches
        it wrote before are still read and replied to, so none is lost. The
        edge's next batch opens a new call, which another replica can take.
        """
        self._stopping = True
        for outbox in self._send_outboxes:
            outbox.put_nowait(DRAINING)

    async def _read_batches(self, requests, outbox: asyncio.Queue, peer: str) -> None:
        slots = asyncio.Semaphore(MAX_STREAM_BATCHES)
        tasks: set[asyncio.Task] = set()

        async def answer(request) -> None:
            started = time.perf_counter()
            ok = False
            try:
                with telemetry.remote_span("/prim.v1.Router/SendStream", request.trace):
                    results = await self._send_batch(request.requests)
                ok = True
            except Exception:
                log.exception("a batch of the send stream failed", extra={"peer": peer, "batch": request.id})
                failed = router_pb2.SendResult(code=int(Code.SERVER_ERROR), msg="server error")
                results = [failed] * len(request.requests)
            finally:
                slots.release()
                metrics.observe_stream_batch(ok, started)
            outbox.put_nowait(router_pb2.SendStreamReply(id=request.id, results=results))

        try:
            async for request in requests:
                await slots.acquire()
                if not any(single.persist for single in request.requests):
                    # Online-only messages are never awaited (see _send_runs), so
                    # the reply to the batch is built here, without a task of its own.
                    await answer(request)
                    continue
                task = background.spawn(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except Exception as exc:
            # The call broke. The batches already read still finish, without a reply.
            log.info("send stream ended by its caller", extra={"peer": peer, "error": repr(exc)})
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_batch(self, requests) -> list[router_pb2.SendResult]:
        # Each message's reply is ready once it is stored, without waiting for
        # its delivery calls. A batch mixes recipients on many edge nodes, so
        # waiting would let one hung node hold back the replies to all of
        # them, and through the edge's limit on batches in flight, later sends.
        results: list[router_pb2.SendResult | None] = [None] * len(requests)
        valid: list[tuple[int, Outgoing, bool]] = []
        for index, single in enumerate(requests):
            try:
                valid.append((index, outgoing(single), single.persist))
            except PrimError as exc:
                results[index] = router_pb2.SendResult(code=int(exc.code), msg=exc.msg)
        if len({persist for _, _, persist in valid}) <= 1:
            await self._send_runs(requests, valid, results)
        else:
            # Each sender's messages go in order, and senders do not wait for each other.
            by_sender: dict[tuple[str, str], list[tuple[int, Outgoing, bool]]] = {}
            for entry in valid:
                by_sender.setdefault((entry[1].tenant, entry[1].sender_id), []).append(entry)
            await asyncio.gather(
                *(self._send_runs(requests, entries, results) for entries in by_sender.values())
            )
        return results

    async def _send_runs(self, requests, entries, results: list) -> None:
        """Store or dispatch ``entries`` in runs of one kind, in order, filling ``results``.

        A run of online-only messages is dispatched only after the stored run
        before it has committed, so a sender's messages keep their order.
        """
        runs: list[tuple[bool, list[tuple[int, Outgoing]]]] = []
        for index, item, persist in entries:
            if not runs or runs[-1][0] != persist:
                runs.append((persist, []))
            runs[-1][1].append((index, item))
        for persist, run in runs:
            if persist:
                # The store queues them in this order, which is each sender's order.
                outcomes = await self.store.store_many([item for _, item in run])
                ready_at = time.perf_counter()
                for (index, _), outcome in zip(run, outcomes, strict=True):
                    if isinstance(outcome, Outgoing):
                        outcome = _stored_reply(outcome, ready_at)
                    results[index] = self._send_result(requests[index], outcome)
                continue
            # Online-only messages need no await: one dispatcher call takes them all.
            fresh = []
            for index, item in run:
                first = self.recent_ids.first(item)
                if first is not None:
                    reply = router_pb2.SendReply(msg_id=first[0], time=first[1], duplicate=True)
                else:
                    fresh.append(item)
                    reply = router_pb2.SendReply(msg_id=item.msg_id, time=item.time)
                results[index] = router_pb2.SendResult(reply=reply)
            self.dispatcher.submit(fresh)
            ready_at = time.perf_counter()
            for item in fresh:
                item.delivery.add_done_callback(functools.partial(observe_delivery, ready_at))

    @staticmethod
    def _send_result(single, outcome) -> router_pb2.SendResult:
        if isinstance(outcome, PrimError):
            return router_pb2.SendResult(code=int(outcome.code), msg=outcome.msg)
        if isinstance(outcome, BaseException):
            log.error(
                "sending a message failed",
                extra={"tenant": single.tenant, "to": single.to, "error": repr(outcome)},
            )
            return router_pb2.SendResult(code=int(Code.SERVER_ERROR), msg="server error")
        return router_pb2.SendResult(reply=outcome)

    async def _send(self, request) -> router_pb2.SendReply:
        """Store the message, hand it to delivery, and reply with the connections it reached."""
        item = outgoing(request)
        if request.persist:
            # The store hands the stored message to the dispatcher, in seq order.
            item = await self.store.store(item)
            if item.duplicate:
                return router_pb2.SendReply(
                    msg_id=item.msg_id, seq=item.sender_seq, time=item.time, duplicate=True
                )
            metrics.MESSAGES_STORED.labels("direct").inc()
        else:
            first = self.recent_ids.first(item)
            if first is not None:
                return router_pb2.SendReply(msg_id=first[0], time=first[1], duplicate=True)
            self.dispatcher.submit([item])
        ready_at = time.perf_counter()
        delivered = await item.delivery
        metrics.observe_delivery("direct", delivered, ready_at)
        return router_pb2.SendReply(
            msg_id=item.msg_id, seq=item.sender_seq, time=item.time, delivered=delivered
        )

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
            item = await self.store.store_broadcast(request.tenant, stored)
            if item.duplicate:
                return router_pb2.SendReply(
                    msg_id=item.data["msgId"],
                    time=item.data["time"],
                    broadcast_seq=item.broadcast_seq,
                    duplicate=True,
                )
            broadcast_seq = item.broadcast_seq
            data["broadcastSeq"] = broadcast_seq
            metrics.MESSAGES_STORED.labels("broadcast").inc()
        ready_at = time.perf_counter()
        delivered = await self.nodes.deliver_tenant(request.tenant, push_frame("msg", data))
        metrics.observe_delivery("broadcast", delivered, ready_at)
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
            closed = await self._kick_user(request)
        else:
            closed = await self._kick_targets(request.tenant, targets, request.reason)
        log.info(
            "kicked connections",
            extra={"tenant": request.tenant, "user_id": request.user_id, "reason": request.reason, "closed": closed},
        )
        return router_pb2.KickReply(closed=closed)

    async def _kick_user(self, request) -> int:
        """Ask every live edge node to close the user's connections that its hub holds.

        Each node looks the user up in its own hub rather than in presence, so a
        connection whose presence entry is missing (lost with Redis, or not
        written yet) is closed too.
        """
        kick = edge_pb2.EdgeKickRequest(
            tenant=request.tenant,
            user_id=request.user_id,
            app_platform=request.app_platform,
            reason=request.reason,
        )
        node_ids = await self.nodes.addresses(refresh=True)
        results = await asyncio.gather(
            *(self.nodes.kick(request.tenant, node_id, kick) for node_id in node_ids)
        )
        return sum(results)

    async def _kick_targets(self, tenant: str, targets, reason: str) -> int:
        by_node: dict[str, list[str]] = {}
        for location in targets:
            by_node.setdefault(location.node_id, []).append(location.conn_id)
        results = await asyncio.gather(
            *(
                self.nodes.kick(
                    tenant,
                    node_id,
                    edge_pb2.EdgeKickRequest(tenant=tenant, conn_ids=conn_ids, reason=reason),
                )
                for node_id, conn_ids in by_node.items()
            )
        )
        return sum(results)
