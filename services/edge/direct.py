"""Online-only messages sent by the edge itself, without the router.

An online-only message is stored nowhere, so the router adds a gRPC hop, a
process switch and a share of a core to its way and nothing else. With
PRIM_DIRECT_LIVE on, the sending edge does the router's part. It checks the
message and drops a resend of a recent clientMsgId. It looks up the
connections of the recipient and of the sender, in presence's Redis through
the same cache the router keeps, or with presence's Locate call. Then it
queues the pushes on one DeliverStream call per edge node. Pushes for its
own connections go straight into its hub.

Order:

* A connection's messages reach each edge node in the order sent, since one
  dispatcher takes them in that order and each node's lane keeps it.
* A stored message goes through the router, and its pushes reach the
  recipient's edge on the router's stream, which has no order with this
  edge's streams. So once a user sent a stored message through this edge,
  that user's online-only messages go through the router too, until
  PRIM_LIVE_ORDER_GUARD_SECONDS have passed since the router's last reply
  to the user. The router queues a message's pushes before it replies, so
  by then the push has reached its node, or failed after the router's
  delivery deadline. A failed routed send starts no guard, so a router
  outage does not hold the user's online-only messages. The router may
  still push the failed one later, and a later online-only message may
  then come first.
* A message that goes through the router waits until the nodes have
  confirmed the deliveries of the same user's earlier messages sent here,
  so it does not overtake them. A node confirms once the pushes are in its
  connections' queues. Every step of a delivery has a deadline, and the
  wait ends after the sum of them (``confirm_wait``).

Resends of a clientMsgId are caught within one edge process, whichever way
each message went: the router's replies to online-only messages are
recorded here too. After a routed send failed, the resends of its
clientMsgId go through the router, which may have taken it. Another edge
node or a router replica does not know the ids recorded here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from prim import metrics
from prim.config import Settings
from prim.errors import PrimError
from prim.pb import edge_pb2, router_pb2
from prim.router.delivery import EdgeNodes
from prim.router.dispatch import Dispatcher
from prim.router.locations import start_location_cache
from prim.router.servicer import RecentIds, observe_delivery, outgoing
from prim.router.store import Outgoing
from prim.rpc import Peer

from .hub import Hub, deliver_pushes

log = logging.getLogger("prim.edge.direct")


class _Nodes(EdgeNodes):
    """Edge nodes as seen by the sending edge: its own pushes go to its hub without a call."""

    def __init__(self, hub: Hub, node_id: str, presence: Peer, settings: Settings):
        super().__init__(
            presence,
            settings.service_token,
            settings.edge_deadline_seconds,
            settings.node_cache_seconds,
            logger=log,
        )
        self.hub = hub
        self.node_id = node_id

    def deliver_in_order(self, node_id: str, pushes: list[edge_pb2.Push]) -> asyncio.Future:
        if node_id != self.node_id:
            return super().deliver_in_order(node_id, pushes)
        future = asyncio.get_running_loop().create_future()
        future.set_result(deliver_pushes(self.hub, pushes))
        return future


class DirectSender:
    """Sender of online-only one-to-one messages from this edge, without the router."""

    def __init__(
        self, hub: Hub, node_id: str, presence: Peer, settings: Settings, clock=time.monotonic
    ):
        self.order_guard = settings.live_order_guard_seconds
        # Maximum time a delivery from here takes to settle: a failed read of
        # presence's Redis, then Locate, two ListNodes calls, then the node's reply.
        self.confirm_wait = 4 * settings.grpc_deadline_seconds + settings.edge_deadline_seconds
        self.clock = clock
        self.nodes = _Nodes(hub, node_id, presence, settings)
        self.locator = start_location_cache(settings, log)
        self.dispatcher = Dispatcher(presence, self.nodes, self.locator, log)
        self.recent_ids = RecentIds()
        # clientMsgIds of online-only messages whose routed send failed. The
        # router may have pushed them anyway, so their resends go through it too.
        self.unsure_ids = RecentIds()
        # (tenant, user) -> monotonic time until which the user's online-only
        # messages go through the router.
        self._routed_until: dict[tuple[str, str], float] = {}
        # (tenant, user) -> deliveries of the user's messages sent here that
        # the nodes have not confirmed yet.
        self._in_flight: dict[tuple[str, str], set[asyncio.Future]] = {}
        log.info(
            "delivering online-only messages from this edge",
            extra={"node_id": node_id, "order_guard_seconds": self.order_guard},
        )

    def takes(self, requests: list[router_pb2.SendRequest]) -> bool:
        """Return whether a group of one sender's messages goes out here, not through the router.

        A group with a stored message goes through the router. So do the
        sender's online-only messages until the guard time has passed since
        the router's last reply to the sender (see ``routed``), so none
        overtakes one routed before it, and the resends of a clientMsgId
        whose routed send failed.
        """
        now = self.clock()
        for request in requests:
            if request.persist:
                return False
            if self._routed_until.get((request.tenant, request.sender.user_id), 0.0) > now:
                return False
            if request.client_msg_id and self.unsure_ids.seen(
                request.tenant, request.sender.user_id, request.client_msg_id
            ):
                return False
        return True

    def routed(self, request: router_pb2.SendRequest, sent: asyncio.Future) -> None:
        """Record the router's reply to a message sent through it.

        The router queues a message's pushes before it replies, so the guard
        starts again from the reply. A failed send starts no guard, so while
        the router is down, the sender's online-only messages go direct. The
        reply to an online-only message with a clientMsgId is recorded, so a
        resend of it sent here later gets that reply and pushes nothing.
        """
        failed = sent.cancelled() or sent.exception() is not None
        if not failed:
            self._guard(request, self.clock())
        if request.persist or not request.client_msg_id:
            return
        sender_id = request.sender.user_id
        if failed:
            self.unsure_ids.record(request.tenant, sender_id, request.client_msg_id, "", 0)
            return
        reply = sent.result()
        if not reply.duplicate:
            self.recent_ids.record(
                request.tenant, sender_id, request.client_msg_id, reply.msg_id, reply.time
            )

    def resent(self, request: router_pb2.SendRequest) -> router_pb2.SendReply | None:
        """Return the reply to an online-only resend of a clientMsgId seen here, or None."""
        if request.persist or not request.client_msg_id:
            return None
        first = self.recent_ids.seen(request.tenant, request.sender.user_id, request.client_msg_id)
        if first is None:
            return None
        return router_pb2.SendReply(msg_id=first[0], time=first[1], duplicate=True)

    def _guard(self, request: router_pb2.SendRequest, now: float) -> None:
        key = (request.tenant, request.sender.user_id)
        # Moved to the end, so the dict stays in the order of expiry.
        self._routed_until.pop(key, None)
        self._routed_until[key] = now + self.order_guard

    def send(self, requests: list[router_pb2.SendRequest]) -> list[asyncio.Future]:
        """Check and dispatch online-only messages, and return a future of each reply, already done.

        Like the router's batch replies, these do not wait for the deliveries.
        """
        loop = asyncio.get_running_loop()
        futures = []
        fresh = []
        for request in requests:
            future = loop.create_future()
            futures.append(future)
            try:
                reply, item = self._accept(request)
            except PrimError as exc:
                future.set_exception(exc)
                continue
            if item is not None:
                fresh.append(item)
            future.set_result(reply)
        self.dispatcher.submit(fresh)
        ready_at = time.perf_counter()
        for item in fresh:
            item.delivery.add_done_callback(functools.partial(observe_delivery, ready_at))
            self._track(item)
        return futures

    def in_flight(self, requests: list[router_pb2.SendRequest]) -> list[asyncio.Future]:
        """Return the unconfirmed deliveries of messages sent here by the senders of ``requests``.

        A routed message waits for them, so that it does not overtake them.
        """
        found: list[asyncio.Future] = []
        for key in {(request.tenant, request.sender.user_id) for request in requests}:
            found += self._in_flight.get(key, ())
        return found

    def _track(self, item: Outgoing) -> None:
        key = (item.tenant, item.sender_id)
        futures = self._in_flight.setdefault(key, set())
        futures.add(item.delivery)
        item.delivery.add_done_callback(functools.partial(self._settled, key))

    def _settled(self, key: tuple[str, str], delivery: asyncio.Future) -> None:
        futures = self._in_flight.get(key)
        if futures is not None:
            futures.discard(delivery)
            if not futures:
                del self._in_flight[key]

    async def send_counted(self, request: router_pb2.SendRequest) -> router_pb2.SendReply:
        """Send one online-only message and return its reply with the connections it reached.

        Raise PrimError when the message is invalid.
        """
        reply, item = self._accept(request)
        if item is None:
            return reply
        self.dispatcher.submit([item])
        self._track(item)
        ready_at = time.perf_counter()
        # Shielded: a cancelled request must not cancel the delivery, which
        # later routed messages of this sender wait for.
        reply.delivered = await asyncio.shield(item.delivery)
        metrics.observe_delivery("direct", reply.delivered, ready_at)
        return reply

    def _accept(
        self, request: router_pb2.SendRequest
    ) -> tuple[router_pb2.SendReply, Outgoing | None]:
        """Check a message and return its reply and the message to dispatch (None for a resend)."""
        item = outgoing(request)
        first = self.recent_ids.first(item)
        if first is not None:
            return router_pb2.SendReply(msg_id=first[0], time=first[1], duplicate=True), None
        return router_pb2.SendReply(msg_id=item.msg_id, time=item.time), item

    def forget_expired(self) -> None:
        """Drop the guards that ended, so users who stopped sending are not remembered."""
        now = self.clock()
        while self._routed_until:
            key, until = next(iter(self._routed_until.items()))
            if until > now:
                return
            del self._routed_until[key]

    async def close(self) -> None:
        await self.dispatcher.close()
        await self.nodes.close()
        if self.locator is not None:
            await self.locator.close()
