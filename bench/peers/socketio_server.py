"""Peer: python-socketio ``AsyncServer`` with ``AsyncRedisManager`` under uvicorn.

``python -m bench.peers.socketio_server --port P --redis-url URL``; run two of
them on one Redis for the cross-node scenarios. A client connects with
``40{"user": U}`` and joins the room U; the event ``msg`` ``{"to", "m"}`` is
emitted as ``msg`` ``{"m"}`` to room ``to``, and ``bcast`` ``{"m"}`` to every
client. Every emit goes through Redis pub/sub to all servers, the emitting
one included, which is how python-socketio spreads events across processes.
"""

from __future__ import annotations

import argparse
import logging
import resource

import redis.asyncio
import socketio
import uvicorn

from bench.peers.stats import CountingHandler, asgi_stats, uvicorn_settings

# redis-py's asyncio ConnectionPool (8.2) raises "Too many connections" past
# its default of 100 connections instead of waiting. This pool waits for a
# free connection, and its timeouts are set so that a busy Redis is not taken
# for a dead one.
REDIS_MAX_CONNECTIONS = 256
REDIS_POOL_WAIT_SECONDS = 30.0
REDIS_SOCKET_TIMEOUT_SECONDS = 30.0
REDIS_CONNECT_TIMEOUT_SECONDS = 5.0

log = logging.getLogger("bench.socketio")


class BoundedRedisManager(socketio.AsyncRedisManager):
    """``AsyncRedisManager`` on a ``BlockingConnectionPool`` of a set size and timeouts."""

    def _redis_connect(self):
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_POOL_WAIT_SECONDS,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        )
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True


def create_app(redis_url: str) -> socketio.ASGIApp:
    # The manager gives up on a publish after one retry and only logs it:
    # count those records, since each one is a message dropped.
    log.addHandler(
        CountingHandler(
            {
                "Cannot publish to redis... giving up": "publish_dropped",
                "Cannot publish to redis... retrying": "publish_retried",
                "Cannot receive from redis": "listen_errors",
            }
        )
    )
    log.setLevel(logging.INFO)
    log.propagate = False
    manager = BoundedRedisManager(redis_url, logger=log)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"])

    @sio.event
    async def connect(sid, environ, auth):
        user = (auth or {}).get("user")
        if not user:
            return False
        await sio.enter_room(sid, user)
        return True

    @sio.on("msg")
    async def msg(sid, data):
        await sio.emit("msg", {"m": data["m"]}, room=data["to"])

    @sio.on("bcast")
    async def bcast(sid, data):
        await sio.emit("msg", {"m": data["m"]})

    return socketio.ASGIApp(sio, other_asgi_app=asgi_stats)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, required=True, help="HTTP and WebSocket port on 127.0.0.1"
    )
    parser.add_argument("--redis-url", required=True, help="Redis shared by all servers")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(create_app(args.redis_url), host="127.0.0.1", port=args.port, **uvicorn_settings())
