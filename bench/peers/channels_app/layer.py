"""channels_redis's ``RedisChannelLayer`` with a bounded, waiting pool and drop counters."""

from __future__ import annotations

import logging

import redis.asyncio
from channels.exceptions import ChannelFull
from channels_redis.core import BoundedQueue, RedisChannelLayer

from bench.peers.stats import COUNTERS

# See bench/peers/socketio_server.py: redis-py's asyncio pool raises past 100
# connections by default. The socket timeout must also stay above
# channels_redis's 5 s BRPOP, or every idle receive fails.
REDIS_MAX_CONNECTIONS = 256
REDIS_POOL_WAIT_SECONDS = 30.0
REDIS_SOCKET_TIMEOUT_SECONDS = 30.0
REDIS_CONNECT_TIMEOUT_SECONDS = 5.0


class CountingQueue(BoundedQueue):
    """The per-channel receive buffer; it drops the oldest message when full."""

    def put_nowait(self, item):
        if self.full():
            COUNTERS["receive_buffer_dropped"] += 1
        return super().put_nowait(item)


class OverCapacityCounter(logging.Handler):
    """Adds up the channels that ``group_send`` skipped because they were at capacity."""

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("%s of %s channels over capacity"):
            COUNTERS["group_send_dropped"] += int(record.args[0])


class CountingRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.receive_buffer.default_factory = lambda: CountingQueue(self.capacity)
        logger = logging.getLogger("channels_redis.core")
        logger.addHandler(OverCapacityCounter())
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def create_pool(self, index):
        host = dict(self.hosts[index])
        return redis.asyncio.BlockingConnectionPool.from_url(
            host.pop("address"),
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_POOL_WAIT_SECONDS,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
            **host,
        )

    async def send(self, channel, message):
        try:
            await super().send(channel, message)
        except ChannelFull:
            COUNTERS["send_channel_full"] += 1
            raise
