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
commit in one transaction: a failed batch leaves no trace. Messages are
written in batches: while one transaction commits, the next batch gathers,
so the write rate is not bound by one round trip per message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from prim.errors import Unavailable
from prim.messages import wire_message

log = logging.getLogger("prim.router.store")

DEDUP_DAYS = 2
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


def _write_concern(raw: str) -> WriteConcern:
    return WriteConcern(w=int(raw) if raw.isdigit() else raw)


class MessageStore:
    def __init__(self, url: str, db_name: str, write_concern: str, batch_max: int = 256):
        self.client: AsyncMongoClient = AsyncMongoClient(
            url, serverSelectionTimeoutMS=3000, maxPoolSize=64, tz_aware=True
        )
        self.write_concern = _write_concern(write_concern)
        db = self.client.get_database(db_name, write_concern=self.write_concern)
        self.timeline = db.timeline
        self.counters = db.counters
        self.dedup = db.dedup
        self.broadcasts = db.broadcasts
        self.batch_max = batch_max
        self._pending: list[tuple[Outgoing, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None

    async def start(self) -> None:
        await self.timeline.create_index(
            [("tenant", ASCENDING), ("user", ASCENDING), ("seq", ASCENDING)], unique=True
        )
        await self.timeline.create_index(
            [("tenant", ASCENDING), ("user", ASCENDING), ("peer", ASCENDING), ("seq", ASCENDING)]
        )
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
        if item.client_msg_id:
            original = await self._find_duplicate(item)
            if original:
                return original
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def _find_duplicate(self, item: Outgoing) -> Outgoing | None:
        key = {"t": item.tenant, "u": item.sender_id, "c": item.client_msg_id}
        try:
            doc = await self.dedup.find_one({"_id": key})
        except PyMongoError as exc:
            raise Unavailable(f"message store unavailable: {exc.__class__.__name__}") from None
        if doc is None:
            return None
        return dataclasses.replace(
            item, msg_id=doc["msgId"], sender_seq=doc["seq"], time=doc["time"], duplicate=True
        )

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.batch_max]
                del self._pending[: self.batch_max]
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[tuple[Outgoing, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        try:
            await self._commit(items)
        except DuplicateKeyError:
            # Another sender raced us with the same clientMsgId; retry one by one so
            # only the repeated message resolves to the original.
            for item, future in batch:
                await self._write_one(item, future)
            return
        except PyMongoError as exc:
            log.error(
                "storing a batch failed",
                extra={"messages": len(items), "error": repr(exc)},
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable("message store unavailable"))
            return
        for item, future in batch:
            if not future.done():
                future.set_result(item)

    async def _write_one(self, item: Outgoing, future: asyncio.Future) -> None:
        try:
            try:
                await self._commit([item])
                result = item
            except DuplicateKeyError:
                result = await self._find_duplicate(item) or item
        except (PyMongoError, Unavailable) as exc:
            log.error("storing a message failed", extra={"msg_id": item.msg_id, "error": repr(exc)})
            if not future.done():
                future.set_exception(Unavailable("message store unavailable"))
            return
        if not future.done():
            future.set_result(result)

    async def _commit(self, items: list[Outgoing]) -> None:
        async with self.client.start_session() as session:
            await session.with_transaction(
                lambda s: self._commit_in(items, s),
                read_concern=ReadConcern("snapshot"),
                write_concern=self.write_concern,
            )

    async def _commit_in(self, items: list[Outgoing], session) -> None:
        # Count the entries each timeline gets in this batch, in batch order.
        counts: dict[str, int] = {}
        for item in items:
            for user in _timeline_users(item):
                key = f"{item.tenant}/{user}"
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
        docs, dedup_docs = [], []
        at = datetime.datetime.now(datetime.UTC)
        for item in items:
            users = _timeline_users(item)
            for user in users:
                key = f"{item.tenant}/{user}"
                seq = next_seq[key]
                next_seq[key] += 1
                if user == item.sender_id:
                    item.sender_seq = seq
                if user == item.to:
                    item.recipient_seq = seq
                docs.append(_timeline_doc(item, user, seq))
            if item.client_msg_id:
                dedup_docs.append(
                    {
                        "_id": {"t": item.tenant, "u": item.sender_id, "c": item.client_msg_id},
                        "msgId": item.msg_id,
                        "seq": item.sender_seq,
                        "time": item.time,
                        "at": at,
                    }
                )
        if dedup_docs:
            await self.dedup.insert_many(dedup_docs, ordered=True, session=session)
        await self.timeline.insert_many(docs, ordered=False, session=session)

    # Broadcasts

    async def store_broadcast(self, tenant: str, data: dict[str, Any]) -> int:
        """Store a broadcast and return its broadcastSeq."""
        async def commit(session):
            counter = await self.counters.find_one_and_update(
                {"_id": f"{tenant}/{BROADCAST_KEY}"},
                {"$inc": {"seq": 1}},
                upsert=True,
                return_document=True,
                session=session,
            )
            seq = counter["seq"]
            await self.broadcasts.insert_one({**data, "tenant": tenant, "seq": seq}, session=session)
            return seq

        try:
            async with self.client.start_session() as session:
                return await session.with_transaction(commit, write_concern=self.write_concern)
        except PyMongoError as exc:
            log.error("storing a broadcast failed", extra={"tenant": tenant, "error": repr(exc)})
            raise Unavailable("message store unavailable") from None

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


def _timeline_users(item: Outgoing) -> list[str]:
    return [item.sender_id] if item.to == item.sender_id else [item.sender_id, item.to]


def _timeline_doc(item: Outgoing, user: str, seq: int) -> dict[str, Any]:
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
