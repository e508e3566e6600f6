"""The raw insert rate of a Mongo server, as a yardstick for prim's stored messages.

Besides the raw rate of plain documents, it measures how fast the server
takes the documents prim writes for each message: one on the sender's and
one on the recipient's timeline, into a collection with the router's
timeline indexes. That is the part of a stored message's cost that lies in
the server's index maintenance, before prim's seq counters and transaction.
"""

from __future__ import annotations

import time

from bson import ObjectId
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from prim.router.store import TIMELINE_INDEXES, Outgoing, timeline_doc

# prim-router stores with write concern "majority" (PRIM_MONGO_WRITE_CONCERN's
# default) and at most 256 messages per transaction (PRIM_STORE_BATCH_MAX).
WRITE_CONCERN = WriteConcern("majority")
BATCH = 256
MAX_DOCUMENTS = 2_000_000


def message_document(n: int) -> dict:
    """Build a document of about the size and shape of a stored message."""
    return {
        "_id": ObjectId(),
        "tenant": "bench",
        "from": {"userId": f"s{n % 100}", "nickname": "", "avatar": ""},
        "to": f"r{n % 100}",
        "seq": n,
        "time": int(time.time() * 1000),
        "message": f"{n}|{time.monotonic_ns()}|".ljust(64, "x"),
        "msgType": "info",
        "msgContType": "text",
        "clientMsgId": "",
    }


def timeline_documents(n: int) -> list[dict]:
    """Build the two timeline documents that prim's router writes for one stored message."""
    item = Outgoing(
        tenant="bench",
        sender={"userId": f"s{n % 100}", "nickname": "", "avatar": ""},
        to=f"r{n % 100}",
        message=f"{n}|{time.monotonic_ns()}|".ljust(64, "x"),
        msg_type="info",
        msg_cont_type="text",
        client_msg_id="",
    )
    # Each pair's seqs grow by one a message, as the router's counters hand them out.
    seq = n // 100 + 1
    return [timeline_doc(item, item.sender_id, seq), timeline_doc(item, item.to, seq)]


def measure(url: str, seconds: float) -> dict:
    """Insert for ``seconds`` in each of three ways and return the rates.

    insert_one and insert_many of plain documents give documents/s; insert_many
    of prim's timeline documents, ``BATCH`` messages a call, gives messages/s.
    """
    client = MongoClient(url, serverSelectionTimeoutMS=10_000)
    database = client["bench_insert"]
    try:
        collection = database.get_collection("messages", write_concern=WRITE_CONCERN)
        collection.drop()
        insert_one_rate = _loop(lambda n: collection.insert_one(message_document(n)) and 1, seconds)
        insert_many_rate = _loop(
            lambda n: len(
                collection.insert_many([message_document(n + i) for i in range(BATCH)]).inserted_ids
            ),
            seconds,
        )
        collection.drop()
        timeline = database.get_collection("timeline", write_concern=WRITE_CONCERN)
        timeline.drop()
        for keys, options in TIMELINE_INDEXES:
            timeline.create_index(keys, **options)
        timeline_rate = _loop(
            lambda n: timeline.insert_many(
                [doc for i in range(BATCH) for doc in timeline_documents(n + i)]
            )
            and BATCH,
            seconds,
        )
        timeline.drop()
    finally:
        client.close()
    return {
        "insert_one_per_second": insert_one_rate,
        "insert_many_per_second": insert_many_rate,
        "timeline_messages_per_second": timeline_rate,
        "batch": BATCH,
        "write_concern": "majority",
        "seconds": seconds,
    }


def _loop(insert, seconds: float) -> float:
    inserted = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds and inserted < MAX_DOCUMENTS:
        inserted += insert(inserted)
    return inserted / (time.monotonic() - start)
