"""Message storage in MongoDB: timelines, broadcast history, idempotent sends.

Collections (every document and query carries the tenant):

* ``timeline``: one document per message per timeline it enters, the
  sender's and the recipient's (one for a message to oneself). ``seq`` is
  the position on ``user``'s timeline; unique on (tenant, user, seq).
* ``counters``: the last seq of each timeline, ``_id`` ``tenant/user``, and
  of each tenant's broadcast history, ``_id`` ``tenant/#broadcast`` (ids
  cannot contain ``/`` or ``#``).
* ``dedup``: one document per (tenant, sender, clientMsgId), expiring after
  ``DEDUP_DAYS``, holding the original reply.
* ``broadcasts``: the tenant's broadcast history by ``broadcastSeq``.

Seq numbers are gap-free because the counter increments and the inserts
commit in one transaction: a failed batch leaves no trace. Messages and
broadcasts are written in batches by one writer task: while one transaction
commits, the next batch gathers, so the write rate is not bound by one round
trip per message. Router replicas that write to the same counter at once
conflict. The server then aborts one transaction with a
TransientTransactionError and ``with_transaction`` runs it again, so seqs
stay gap-free across replicas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from prim import telemetry
from prim.errors import Unavailable
from prim.messages import wire_message

log = logging.getLogger("prim.router.store")

DEDUP_DAYS = 2
# The timeline's secondary indexes, with create_index options: a user's pages
# and sync by seq, and one conversation's pages.
TIMELINE_INDEXES: tuple[tuple[list[tuple[str, int]], dict[str, Any]], ...] = (
    ([("tenant", ASCENDING), ("user", ASCENDING), ("seq", ASCENDING)], {"unique": True}),
    ([("tenant", ASCENDING), ("user", ASCENDING), ("peer", ASCENDING), ("seq", ASCENDING)], {}),
)
BROADCAST_KEY = "#broadcast"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass
class Outgoing:
    """A one-to-one message waiting to be stored."""

    tenant: str
    sender: dict[str, str]
    to: str
    message: str
    msg_type: str
    msg_cont_type: str
    client_msg_id: str
    msg_id: str = dataclasses.field(default_factory=lambda: str(ObjectId()))
    time: int = dataclasses.field(default_factory=now_ms)
    sender_seq: int = 0
    recipient_seq: int = 0
    duplicate: bool = False
    # Span context of the request that sent it, so the batches that store and deliver it
    # join its trace. Taken when the message is created, inside that request.
    trace_context: Any = dataclasses.field(
        default_factory=telemetry.current_span_context, repr=False, compare=False
    )
    # The sending connection, which gets the reply and no push.
    origin_conn_id: str = ""
    # Resolves to the number of connections that took a push of this message.
    delivery: asyncio.Future | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def sender_id(self) -> str:
        return self.sender["userId"]

    def wire(self, seq: int) -> dict[str, Any]:
        return wire_message(
            msg_id=self.msg_id,
            seq=seq,
            time=self.time,
            sender=self.sender,
            to=self.to,
            message=self.message,
            msg_type=self.msg_type,
            msg_cont_type=self.msg_cont_type,
            client_msg_id=self.client_msg_id,
        )


@dataclasses.dataclass
class OutgoingBroadcast:
    """A broadcast waiting to be stored in its tenant's broadcast history."""

    tenant: str
    data: dict[str, Any]  # the wire fields of the message, without seq
    broadcast_seq: int = 0
    duplicate: bool = False
    trace_context: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def sender_id(self) -> str:
        return self.data["from"]["userId"]

    @property
    def client_msg_id(self) -> str:
        return self.data.get("clientMsgId", "")


Pending = Outgoing | OutgoingBroadcast


def _write_concern(raw: str) -> WriteConcern:
    """Parse the write concern of every transaction: ``majority`` or a number of members."""
    if raw == "majority":
        return WriteConcern(w="majority")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"invalid write concern {raw!r}: expected majority or a number of members (1 or more)"
        )
    return WriteConcern(w=int(raw))


def _original(item: Pending, doc: dict[str, Any]) -> Pending:
    """Rebuild the item as first stored, from its dedup record."""
    if isinstance(item, OutgoingBroadcast):
        data = {**item.data, "msgId": doc["msgId"], "time": doc["time"]}
        return dataclasses.replace(
            item, data=data, broadcast_seq=doc.get("broadcastSeq", 0), duplicate=True
        )
    return dataclasses.replace(
        item, msg_id=doc["msgId"], sender_seq=doc["seq"], time=doc["time"], duplicate=True
    )


async def _ready(value):
    return value


class MessageStore:
    """The collections above, written by one batching task.

    ``on_commit``, when set, is called with the one-to-one messages of each
    committed batch, in commit order, before the senders get their replies.
    """

    def __init__(
        self,
        url: str,
        db_name: str,
        write_concern: str,
        batch_max: int = 256,
        on_commit: Callable[[list[Outgoing]], None] | None = None,
    ):
        self.write_concern = _write_concern(write_concern)
        self.client: AsyncMongoClient = AsyncMongoClient(
            url, serverSelectionTimeoutMS=3000, maxPoolSize=64, tz_aware=True
        )
        db = self.client.get_database(db_name, write_concern=self.write_concern)
        self.timeline = db.timeline
        self.counters = db.counters
        self.dedup = db.dedup
        self.broadcasts = db.broadcasts
        self.batch_max = batch_max
        self.on_commit = on_commit
        self._pending: list[tuple[Pending, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None

    async def start(self) -> None:
        for keys, options in TIMELINE_INDEXES:
            await self.timeline.create_index(keys, **options)
        await self.broadcasts.create_index([("tenant", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.dedup.create_index("at", expireAfterSeconds=DEDUP_DAYS * 86400)
        self._writer = asyncio.create_task(self._write_loop())

    async def close(self) -> None:
        if self._writer:
            self._writer.cancel()
        await self.client.close()

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except PyMongoError:
            return False

    # One-to-one messages

    async def store(self, item: Outgoing) -> Outgoing:
        """Store ``item`` and fill in its seqs; return the original on a repeated clientMsgId."""
        (result,) = await self.store_many([item])
        if isinstance(result, Exception):
            raise result
        return result

    async def _enqueue(self, item: Pending):
        """Hand ``item`` to the writer task and wait until its batch commits."""
        future = asyncio.get_running_loop().create_future()
        item.trace_context = telemetry.current_span_context()
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def _find_duplicate(self, item: Pending) -> Pending | None:
        """Find the original of a message or broadcast whose clientMsgId was used before."""
        key = _dedup_key(item)
        try:
            doc = await self.dedup.find_one({"_id": key})
        except PyMongoError as exc:
            raise Unavailable(f"message store unavailable: {exc.__class__.__name__}") from None
        return None if doc is None else _original(item, doc)

    async def store_many(self, items: list[Outgoing]) -> list[Outgoing | Exception]:
        """:meth:`store` for each item; they join the writer's queue in the order given.

        One query looks up every clientMsgId of the batch, so a lookup's
        latency cannot let a later message be queued before an earlier one.
        """
        keys = [_dedup_key(item) for item in items if item.client_msg_id]
        docs: dict[tuple, dict] = {}
        if keys:
            try:
                async for doc in self.dedup.find({"_id": {"$in": keys}}):
                    docs[_hashable(doc["_id"])] = doc
            except PyMongoError as exc:
                error = Unavailable(f"message store unavailable: {exc.__class__.__name__}")
                return [error] * len(items)
        waits = []
        for item in items:
            doc = docs.get(_hashable(_dedup_key(item))) if item.client_msg_id else None
            if doc is not None:
                waits.append(_ready(_original(item, doc)))
            else:
                waits.append(self._enqueue(item))
        # The coroutines queue their items when gather starts them, in this order.
        return await asyncio.gather(*waits, return_exceptions=True)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.batch_max]
                del self._pending[: self.batch_max]
                # A caller whose deadline passed before the batch started has
                # already got an error reply, so its message is not stored.
                batch = [(item, future) for item, future in batch if not future.done()]
                if not batch:
                    continue
                try:
                    await self._write_batch(batch)
                except Exception:
                    # Keep the writer alive: a dead writer would hang every later send.
                    log.exception("storing a batch failed", extra={"messages": len(batch)})
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(Unavailable("message store unavailable"))

    async def _write_batch(self, batch: list[tuple[Pending, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        try:
            await self._commit(items)
        except PyMongoError as exc:
            if _is_duplicate_key(exc):
                # A repeated clientMsgId (already stored, or twice in this batch);
                # retry one by one so only the repeat resolves to the original.
                for item, future in batch:
                    await self._write_one(item, future)
                return
            log.error(
                "storing a batch failed",
                extra={"messages": len(items), "error": repr(exc)},
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable("message store unavailable"))
            return
        self._committed(items)
        for item, future in batch:
            if not future.done():
                future.set_result(item)

    def _committed(self, items: list[Pending]) -> None:
        if self.on_commit is None:
            return
        messages = [item for item in items if isinstance(item, Outgoing) and not item.duplicate]
        try:
            self.on_commit(messages)
        except Exception:
            log.exception(
                "handing stored messages to delivery failed", extra={"messages": len(messages)}
            )

    async def _write_one(self, item: Pending, future: asyncio.Future) -> None:
        try:
            try:
                await self._commit([item])
                result = item
                self._committed([item])
            except (DuplicateKeyError, BulkWriteError) as exc:
                # Only a repeated clientMsgId may collide; anything else is a failure.
                original = None
                if item.client_msg_id and _is_duplicate_key(exc):
                    original = await self._find_duplicate(item)
                if original is None:
                    raise
                result = original
        except (PyMongoError, Unavailable) as exc:
            log.error("storing a message failed", extra={"tenant": item.tenant, "error": repr(exc)})
            if not future.done():
                future.set_exception(Unavailable("message store unavailable"))
            return
        if not future.done():
            future.set_result(result)

    async def _commit(self, items: list[Pending]) -> None:
        attempts = 0

        async def commit_in(session) -> None:
            nonlocal attempts
            attempts += 1
            await self._commit_in(items, session)

        with telemetry.batch_span("store messages", [item.trace_context for item in items]):
            async with self.client.start_session() as session:
                await session.with_transaction(
                    commit_in,
                    read_concern=ReadConcern("snapshot"),
                    write_concern=self.write_concern,
                )
        if attempts > 1:
            # Another writer (usually another router replica) changed the same counters.
            log.info("transaction retried", extra={"attempts": attempts, "messages": len(items)})

    async def _commit_in(self, items: list[Pending], session) -> None:
        # Count the entries each counter gets in this batch, in batch order.
        counts: dict[str, int] = {}
        for item in items:
            for key in _counter_keys(item):
                counts[key] = counts.get(key, 0) + 1
        await self.counters.bulk_write(
            [UpdateOne({"_id": key}, {"$inc": {"seq": n}}, upsert=True) for key, n in counts.items()],
            ordered=False,
            session=session,
        )
        last = {
            doc["_id"]: doc["seq"]
            async for doc in self.counters.find({"_id": {"$in": list(counts)}}, session=session)
        }
        # Hand out seqs in batch order: the first entry gets last - count + 1.
        next_seq = {key: last[key] - n + 1 for key, n in counts.items()}
        docs, dedup_docs, broadcast_docs = _documents(items, next_seq)
        if dedup_docs:
            await self.dedup.insert_many(dedup_docs, ordered=True, session=session)
        if docs:
            await self.timeline.insert_many(docs, ordered=False, session=session)
        if broadcast_docs:
            await self.broadcasts.insert_many(broadcast_docs, ordered=False, session=session)

    # Broadcasts

    async def store_broadcast(self, tenant: str, data: dict[str, Any]) -> OutgoingBroadcast:
        """Store a broadcast and fill in its broadcastSeq; return the original on a repeated clientMsgId.

        Broadcasts go through the same batches as messages, so concurrent
        broadcasts of one tenant share a transaction instead of conflicting
        on the tenant's counter. A clientMsgId is unique per tenant and
        sender across messages and broadcasts.
        """
        item = OutgoingBroadcast(tenant, data)
        if item.client_msg_id:
            original = await self._find_duplicate(item)
            if original:
                return original
        return await self._enqueue(item)

    # Reads

    async def page(
        self,
        collection: str,
        query: dict[str, Any],
        before: int | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One ascending page by seq: the oldest ``limit`` after ``after`` when it is
        set, else the newest ``limit`` (before ``before`` when set). The flag says
        whether more exist in that direction."""
        coll = getattr(self, collection)
        if after is not None:
            query = {**query, "seq": {"$gt": after}}
            order = ASCENDING
        else:
            if before is not None:
                query = {**query, "seq": {"$lt": before}}
            order = DESCENDING
        try:
            docs = await coll.find(query, {"_id": 0}).sort("seq", order).limit(limit + 1).to_list()
        except PyMongoError as exc:
            log.error("reading messages failed", extra={"query": str(query), "error": repr(exc)})
            raise Unavailable("message store unavailable") from None
        has_more = len(docs) > limit
        docs = docs[:limit]
        if order == DESCENDING:
            docs.reverse()
        return docs, has_more


def _documents(
    items: list[Pending], next_seq: dict[str, int]
) -> tuple[list[dict], list[dict], list[dict]]:
    """Give each item its seqs from ``next_seq``, in batch order, and build its documents.

    Returns the timeline, dedup and broadcast documents to insert.
    """
    docs, dedup_docs, broadcast_docs = [], [], []
    at = datetime.datetime.now(datetime.UTC)
    for item in items:
        if isinstance(item, OutgoingBroadcast):
            key = f"{item.tenant}/{BROADCAST_KEY}"
            item.broadcast_seq = next_seq[key]
            next_seq[key] += 1
            broadcast_docs.append({**item.data, "tenant": item.tenant, "seq": item.broadcast_seq})
            if item.client_msg_id:
                dedup_docs.append(
                    {
                        "_id": _dedup_key(item),
                        "msgId": item.data["msgId"],
                        "seq": 0,
                        "broadcastSeq": item.broadcast_seq,
                        "time": item.data["time"],
                        "at": at,
                    }
                )
            continue

        for user in _timeline_users(item):
            key = f"{item.tenant}/{user}"
            seq = next_seq[key]
            next_seq[key] += 1
            if user == item.sender_id:
                item.sender_seq = seq
            if user == item.to:
                item.recipient_seq = seq
            docs.append(timeline_doc(item, user, seq))
        if item.client_msg_id:
            dedup_docs.append(
                {
                    "_id": _dedup_key(item),
                    "msgId": item.msg_id,
                    "seq": item.sender_seq,
                    "time": item.time,
                    "at": at,
                }
            )
    return docs, dedup_docs, broadcast_docs


def _is_duplicate_key(exc: PyMongoError) -> bool:
    """Check whether a write failed only on unique keys (``insert_many`` raises BulkWriteError)."""
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", []) if isinstance(exc, BulkWriteError) else []
    return bool(errors) and all(error.get("code") == 11000 for error in errors)


def _dedup_key(item: Pending) -> dict[str, str]:
    return {"t": item.tenant, "u": item.sender_id, "c": item.client_msg_id}


def _hashable(key: dict[str, str]) -> tuple:
    return (key.get("t"), key.get("u"), key.get("c"))


def _counter_keys(item: Pending) -> list[str]:
    if isinstance(item, OutgoingBroadcast):
        return [f"{item.tenant}/{BROADCAST_KEY}"]
    return [f"{item.tenant}/{user}" for user in _timeline_users(item)]


def _timeline_users(item: Outgoing) -> list[str]:
    return [item.sender_id] if item.to == item.sender_id else [item.sender_id, item.to]


def timeline_doc(item: Outgoing, user: str, seq: int) -> dict[str, Any]:
    """Build the document of ``item`` on ``user``'s timeline at ``seq``."""
    return {
        "tenant": item.tenant,
        "user": user,
        "seq": seq,
        "peer": item.to if user == item.sender_id else item.sender_id,
        "msgId": item.msg_id,
        "time": item.time,
        "from": item.sender,
        "to": item.to,
        "message": item.message,
        "msgType": item.msg_type,
        "msgContType": item.msg_cont_type,
        "clientMsgId": item.client_msg_id,
    }
