"""The raw insert rate of a Mongo server, as a yardstick for prim's stored messages."""

from __future__ import annotations

import time

from bson import ObjectId
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

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


def measure(url: str, seconds: float) -> dict:
    """Insert for ``seconds`` with insert_one, then with insert_many batches; return documents/s."""
    client = MongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        collection = client["bench_insert"].get_collection("messages", write_concern=WRITE_CONCERN)
        collection.drop()
        insert_one_rate = _loop(lambda n: collection.insert_one(message_document(n)) and 1, seconds)
        insert_many_rate = _loop(
            lambda n: len(
                collection.insert_many([message_document(n + i) for i in range(BATCH)]).inserted_ids
            ),
            seconds,
        )
        collection.drop()
    finally:
        client.close()
    return {
        "insert_one_per_second": insert_one_rate,
        "insert_many_per_second": insert_many_rate,
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
