"""Delivery of one-to-one messages in the order they were stored.

The store hands each committed batch to :meth:`Dispatcher.submit` before it
replies to the senders, so batches arrive here in commit order, which is seq
order on every timeline. One task takes them in that order, looks up the
connections of all the batch's users with one read per tenant, and queues
the pushes on each node's lane. The read goes straight to presence's Redis
when PRIM_PRESENCE_REDIS_URL is set, which saves a gRPC round trip, and to
presence's Locate call otherwise or while Redis cannot be read. Lanes send in queue order and the edge
queues a request's pushes in request order, so every connection gets this
router's pushes in ascending seq.

An edge node uses a Dispatcher of its own for the online-only messages it
sends without the router (see ``prim.edge.direct``).

This order is kept per router replica. Two replicas can swap two messages to
one user; the edge then drops the push that comes after a higher seq (see
``Connection.take_seq``), and the client, which saw the gap, fetches
it with ``sync``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from prim import telemetry
from prim.errors import PrimError
from prim.messages import push_frame
from prim.pb import common_pb2, edge_pb2, presence_pb2
from prim.rpc import Peer

from .delivery import EdgeNodes
from .store import Outgoing

log = logging.getLogger("prim.router.dispatch")

# Maximum number of messages in one round of presence lookups; the rest wait
# for the next round.
MAX_ITEMS_PER_ROUND = 1024
# After a failed read of presence's Redis, rounds ask presence for this long.
LOCATOR_RETRY_SECONDS = 5.0


class Locator(Protocol):
    """Reads the live connections of users from presence's store."""

    async def locate(self, tenant: str, user_ids: Sequence[str]) -> list[common_pb2.Location]: ...


class Dispatcher:
    """Deliveries of one router's messages, or of one edge's online-only ones, in submit order."""

    def __init__(
        self,
        presence: Peer,
        nodes: EdgeNodes,
        locator: Locator | None = None,
        logger: logging.Logger = log,
    ):
        self.log = logger
        self.presence = presence
        self.nodes = nodes
        # Reads presence's store directly when set; see PRIM_PRESENCE_REDIS_URL.
        self.locator = locator
        self._locator_retry_at = 0.0
        self._batches: collections.deque[list[Outgoing]] = collections.deque()
        self._worker: asyncio.Task | None = None

    def submit(self, items: Iterable[Outgoing]) -> None:
        """Queue messages for delivery behind everything submitted before.

        Each item's ``delivery`` future gets the number of connections that
        took its push.
        """
        batch = list(items)
        if not batch:
            return
        loop = asyncio.get_running_loop()
        for item in batch:
            if item.delivery is None:
                item.delivery = loop.create_future()
        self._batches.append(batch)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop dispatching, and settle every message not dispatched yet with zero connections."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        while self._batches:
            _settle(self._batches.popleft(), {})

    async def _run(self) -> None:
        try:
            while self._batches:
                items: list[Outgoing] = []
                while self._batches and len(items) < MAX_ITEMS_PER_ROUND:
                    items += self._batches.popleft()
                try:
                    # The lookups and the lanes' Deliver calls join the first message's
                    # trace. NOTE: a lane that is already sending carries these pushes
                    # in a call started under an earlier batch's trace.
                    contexts = [item.trace_context for item in items]
                    with telemetry.batch_span("deliver messages", contexts):
                        await self._dispatch(items)
                except Exception:
                    self.log.exception(
                        "dispatching messages failed", extra={"messages": len(items)}
                    )
                    _settle(items, {})
                except asyncio.CancelledError:
                    _settle(items, {})
                    raise
        finally:
            self._worker = None

    async def _dispatch(self, items: list[Outgoing]) -> None:
        locations = await self._locate(items)
        by_node: dict[str, dict[bytes, edge_pb2.Push]] = collections.defaultdict(dict)
        targets: dict[str, list[tuple[Outgoing, bytes]]] = collections.defaultdict(list)
        for item in items:
            for location, frame in _pushes(item, locations):
                pushes = by_node[location.node_id]
                push = pushes.get(frame)
                if push is None:
                    push = pushes[frame] = edge_pb2.Push(tenant=item.tenant, frame=frame)
                    targets[location.node_id].append((item, frame))
                push.conn_ids.append(location.conn_id)
        lanes = {
            node_id: (self.nodes.deliver_in_order(node_id, list(pushes.values())), targets[node_id])
            for node_id, pushes in by_node.items()
        }
        if not lanes:
            _settle(items, {})
            return
        # Count as the lanes reply, without waiting here, so the next batch
        # is queued on the lanes at once instead of after this one's calls return.
        _count(items, lanes)

    async def _locate(
        self, items: list[Outgoing]
    ) -> dict[tuple[str, str], list[common_pb2.Location]]:
        """Live connections of every sender and recipient, by (tenant, user)."""
        users: dict[str, set[str]] = collections.defaultdict(set)
        for item in items:
            users[item.tenant].update((item.sender_id, item.to))
        if len(users) == 1:
            # Most rounds hold one tenant: awaiting it directly spares gather's task.
            ((tenant, ids),) = users.items()
            replies = [await self._locate_tenant(tenant, sorted(ids))]
        else:
            replies = await asyncio.gather(
                *(self._locate_tenant(tenant, sorted(ids)) for tenant, ids in users.items())
            )
        found: dict[tuple[str, str], list[common_pb2.Location]] = collections.defaultdict(list)
        for tenant, locations in replies:
            for location in locations:
                found[tenant, location.user_id].append(location)
        return found

    async def _locate_tenant(self, tenant: str, user_ids: list[str]):
        if self.locator is not None and time.monotonic() >= self._locator_retry_at:
            try:
                return tenant, await self.locator.locate(tenant, user_ids)
            except PrimError as exc:
                # Ask presence for a while instead of failing on every round.
                self._locator_retry_at = time.monotonic() + LOCATOR_RETRY_SECONDS
                self.log.warning(
                    "reading presence's Redis failed; asking presence",
                    extra={"tenant": tenant, "error": exc.msg, "retry_in_seconds": LOCATOR_RETRY_SECONDS},
                )
        try:
            reply = await self.presence.call(
                "Locate", presence_pb2.LocateRequest(tenant=tenant, user_ids=user_ids)
            )
        except PrimError as exc:
            # Stored already: the recipients get these messages with sync.
            self.log.warning(
                "locating recipients failed", extra={"tenant": tenant, "error": exc.msg}
            )
            return tenant, []
        return tenant, list(reply.locations)


def _pushes(item: Outgoing, locations) -> list[tuple[common_pb2.Location, bytes]]:
    """Pair each connection of the recipient and the sender with the frame it gets.

    The recipient's connections get the recipient's seq, and the sender's
    other connections get the sender's seq. The sending connection gets
    nothing, because its reply carries the message's seq. A frame is encoded
    only when some connection gets it.
    """
    pushes = []
    timelines = [(item.to, item.recipient_seq)]
    if item.to != item.sender_id:
        timelines.append((item.sender_id, item.sender_seq))
    for user_id, seq in timelines:
        frame = None
        for location in locations.get((item.tenant, user_id), ()):
            if location.conn_id != item.origin_conn_id:
                if frame is None:
                    frame = push_frame("msg", item.wire(seq))
                pushes.append((location, frame))
    return pushes


def _count(items: list[Outgoing], lanes) -> None:
    """Settle each message as soon as the lanes that carry its pushes have replied.

    A message waits only for its own nodes, so a hung node delays the
    replies to the senders of its messages and to no other sender.
    """
    delivered: dict[int, int] = collections.defaultdict(int)
    lanes_left: dict[int, int] = collections.defaultdict(int)
    for _, targets in lanes.values():
        for item_id in {id(item) for item, _ in targets}:
            lanes_left[item_id] += 1
    _settle([item for item in items if id(item) not in lanes_left], delivered)

    def replied(targets, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            counts = [0] * len(targets)
        else:
            counts = future.result()
        for (item, _), count in zip(targets, counts):
            delivered[id(item)] += count
        finished = []
        for item in {id(item): item for item, _ in targets}.values():
            lanes_left[id(item)] -= 1
            if lanes_left[id(item)] == 0:
                finished.append(item)
        _settle(finished, delivered)

    for future, targets in lanes.values():
        future.add_done_callback(functools.partial(replied, targets))


def _settle(items: list[Outgoing], delivered: dict[int, int]) -> None:
    for item in items:
        if item.delivery is not None and not item.delivery.done():
            item.delivery.set_result(delivered.get(id(item), 0))
