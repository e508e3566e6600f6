"""Counters that a peer server reports at ``GET /stats`` as JSON.

bench/run.py reads them after each scenario: messages a peer dropped on
purpose or after an error that it only logged, which the load generator would
otherwise see only as loss.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

COUNTERS: Counter[str] = Counter()


def snapshot() -> bytes:
    return json.dumps({"pid": os.getpid(), **COUNTERS}).encode()


class CountingHandler(logging.Handler):
    """Counts log records whose message starts with one of ``prefixes``, under its counter name."""

    def __init__(self, prefixes: dict[str, str]):
        super().__init__(logging.INFO)
        self.prefixes = prefixes

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        for prefix, counter in self.prefixes.items():
            if message.startswith(prefix):
                COUNTERS[counter] += 1


async def asgi_stats(scope, receive, send) -> None:
    """A plain ASGI app: ``GET /stats`` returns the counters, anything else 404."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/stats"
    body = snapshot() if found else b"not found"
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [(b"content-type", b"application/json" if found else b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def uvicorn_settings() -> dict:
    """Return the uvicorn settings shared by the peers.

    httptools, the sans-I/O websockets implementation and no per-message
    compression are what prim-edge runs. The event loop is uvloop, uvicorn's
    choice when it is installed. NOTE: prim's services run on asyncio's
    default loop instead, because they start with ``asyncio.run``. The backlog
    is uvicorn's default, written out because the connect storm depends on it.
    """
    return {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
        "backlog": 2048,
        "access_log": False,
        "log_level": "warning",
        "lifespan": "off",
        # prim-edge's default grace (PRIM_GRACE_SECONDS) for in-flight work on SIGTERM.
        "timeout_graceful_shutdown": 5,
    }
