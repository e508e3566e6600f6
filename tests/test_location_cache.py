"""The router's location cache against a real redis-server: presence's scripts
publish every change, and the cache must never return a connection that
is gone or miss one that exists, across expiry, tenants and a broken feed."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import pytest
import redis.asyncio

from prim import metrics
from prim.pb.common_pb2 import User
from prim.presence.store_redis import RedisStore
from prim.router.locations import LocationCache

pytestmark = pytest.mark.integration

TTL = 30


def make_store(url: str) -> RedisStore:
    return RedisStore(url, max_connections=8, timeout_seconds=2.0, pool_wait_seconds=2.0)


def user(tenant: str, user_id: str, conn_id: str, node_id: str = "n1", platform: str = "web") -> User:
    return User(
        sys_account=tenant,
        user_id=user_id,
        conn_id=conn_id,
        node_id=node_id,
        app_platform=platform,
        login_time=int(time.time() * 1000),
    )


def conns(locations) -> set[str]:
    return {location.conn_id for location in locations}


async def until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def await_change(cache: LocationCache, write) -> None:
    """Run a presence write and wait until the cache has heard its change."""
    changes = cache._changes
    await write
    await until(lambda: cache._changes > changes)


def cached_lookups() -> float:
    return metrics.LOCATION_LOOKUPS.labels("cache")._value.get()


@pytest.fixture
async def presence_and_cache(redis_server):
    presence = make_store(redis_server)
    cache = LocationCache(make_store(redis_server))
    cache.start()
    await until(lambda: cache.following)
    await presence._redis.flushdb()
    yield presence, cache
    await cache.close()
    await presence.close()


async def test_cache_follows_changes(presence_and_cache):
    presence, cache = presence_and_cache
    await await_change(cache, presence.connect(user("acme", "u1", "c1"), "multi", 5, TTL))
    assert conns(await cache.locate("acme", ["u1"])) == {"c1"}

    before = cached_lookups()
    assert conns(await cache.locate("acme", ["u1", "u1"])) == {"c1"}
    assert cached_lookups() == before + 1

    # A second device, on another node: the change drops the entry.
    await await_change(cache, presence.connect(user("acme", "u1", "c2", node_id="n2", platform="ios"), "multi", 5, TTL))
    await until(lambda: ("acme", "u1") not in cache._entries)
    located = await cache.locate("acme", ["u1"])
    assert {(loc.conn_id, loc.node_id) for loc in located} == {("c1", "n1"), ("c2", "n2")}

    await await_change(cache, presence.disconnect("acme", "u1", "c1"))
    await until(lambda: ("acme", "u1") not in cache._entries)
    assert conns(await cache.locate("acme", ["u1"])) == {"c2"}

    # An offline user is remembered as offline until they connect.
    assert await cache.locate("acme", ["u2"]) == []
    await await_change(cache, presence.connect(user("acme", "u2", "c3"), "multi", 5, TTL))
    await until(lambda: ("acme", "u2") not in cache._entries)
    assert conns(await cache.locate("acme", ["u2"])) == {"c3"}


async def test_replaced_device_leaves_the_cache(presence_and_cache):
    presence, cache = presence_and_cache
    await await_change(cache, presence.connect(user("acme", "u1", "old"), "single", 1, TTL))
    assert conns(await cache.locate("acme", ["u1"])) == {"old"}
    await await_change(cache, presence.connect(user("acme", "u1", "new", node_id="n2"), "single", 1, TTL))
    await until(lambda: ("acme", "u1") not in cache._entries)
    assert conns(await cache.locate("acme", ["u1"])) == {"new"}


async def test_entries_keep_the_tenant(presence_and_cache):
    presence, cache = presence_and_cache
    await await_change(cache, presence.connect(user("acme", "u1", "acme-conn"), "multi", 5, TTL))
    assert conns(await cache.locate("acme", ["u1"])) == {"acme-conn"}
    assert await cache.locate("globex", ["u1"]) == []
    await await_change(cache, presence.connect(user("globex", "u1", "globex-conn"), "multi", 5, TTL))
    await until(lambda: ("globex", "u1") not in cache._entries)
    assert conns(await cache.locate("globex", ["u1"])) == {"globex-conn"}
    assert conns(await cache.locate("acme", ["u1"])) == {"acme-conn"}


async def test_entry_ends_with_ttl(presence_and_cache):
    presence, cache = presence_and_cache
    await await_change(cache, presence.connect(user("acme", "u1", "c1"), "multi", 5, 1))
    assert conns(await cache.locate("acme", ["u1"])) == {"c1"}
    # No refresh and no sweep runs: no change is published, yet the
    # cached entry must end when the connection's TTL does.
    await asyncio.sleep(1.2)
    assert await cache.locate("acme", ["u1"]) == []

    # A refresh that brings the expired entry back is a change.
    assert await presence.refresh("n1", [user("acme", "u1", "c1")], TTL) == 1
    await until(lambda: ("acme", "u1") not in cache._entries)
    assert conns(await cache.locate("acme", ["u1"])) == {"c1"}

    # A refresh of a live entry changes nothing, and keeps the entry cached.
    await presence.refresh("n1", [user("acme", "u1", "c1")], TTL)
    await asyncio.sleep(0.1)
    assert ("acme", "u1") in cache._entries


async def test_node_drain_and_sweep_publish(presence_and_cache):
    presence, cache = presence_and_cache
    await await_change(cache, presence.connect(user("acme", "u1", "c1", node_id="n1"), "multi", 5, TTL))
    await await_change(cache, presence.connect(user("acme", "u2", "c2", node_id="n1"), "multi", 5, 1))
    assert conns(await cache.locate("acme", ["u1", "u2"])) == {"c1", "c2"}
    await asyncio.sleep(1.1)
    assert await presence.sweep() == 1
    await until(lambda: ("acme", "u2") not in cache._entries)
    await presence.unregister_node("n1")
    await until(lambda: ("acme", "u1") not in cache._entries)
    assert await cache.locate("acme", ["u1", "u2"]) == []


class ChangingStore(RedisStore):
    """Makes real changes in Redis while the first read is on its way back:
    a connection "late" for the read's first user, or "late-USER" for each user in ``to_change``."""

    presence: RedisStore
    cache: LocationCache
    changed = False
    to_change: list[str] = []

    async def locate_expiring(self, tenant, user_ids):
        reply = await super().locate_expiring(tenant, user_ids)
        if self.changed:
            return reply
        self.changed = True
        changes = self.cache._changes
        conn_ids = {user_id: f"late-{user_id}" for user_id in self.to_change} or {user_ids[0]: "late"}
        for user_id, conn_id in conn_ids.items():
            await self.presence.connect(user(tenant, user_id, conn_id), "multi", 5, TTL)
        await until(lambda: self.cache._changes >= changes + len(conn_ids))
        return reply


@pytest.fixture
async def changing(redis_server):
    """A cache whose store changes presence during its first read, and a presence store."""
    presence = make_store(redis_server)
    store = ChangingStore(redis_server, max_connections=8, timeout_seconds=2.0, pool_wait_seconds=2.0)
    cache = LocationCache(store)
    store.presence, store.cache = presence, cache
    cache.start()
    await until(lambda: cache.following)
    await presence._redis.flushdb()
    yield presence, store, cache
    await cache.close()
    await presence.close()


async def test_overlapping_read_keeps_only_unchanged_users(changing):
    presence, store, cache = changing
    store.to_change = ["r1", "other"]
    await await_change(cache, presence.connect(user("acme", "r2", "c2"), "multi", 5, TTL))
    # Changes to r1 and to a user the read did not ask for arrive while it is on its way.
    assert conns(await cache.locate("acme", ["r1", "r2"])) == {"c2"}
    assert ("acme", "r1") not in cache._entries
    assert ("acme", "r2") in cache._entries
    assert conns(await cache.locate("acme", ["r1", "r2"])) == {"late-r1", "c2"}


async def test_read_spanning_forgotten_changes_keeps_nothing(changing):
    presence, store, cache = changing
    store.to_change = ["x1", "x2"]
    cache._recent = collections.deque(maxlen=1)
    assert conns(await cache.locate("acme", ["r1"])) == set()
    # Only the last of the two changes is remembered, so the read cannot tell
    # whether the first touched r1.
    assert len(cache) == 0


async def test_read_spanning_remembered_changes_keeps_users(changing):
    presence, store, cache = changing
    store.to_change = ["x1", "x2"]
    cache._recent = collections.deque(maxlen=2)
    # Both changes of the read are remembered, and neither touched r1.
    assert conns(await cache.locate("acme", ["r1"])) == set()
    assert ("acme", "r1") in cache._entries


async def test_overlapping_read_not_kept(changing):
    presence, _, cache = changing
    await await_change(cache, presence.connect(user("acme", "r1", "early"), "multi", 5, TTL))
    # The reply predates the connection "late" and is returned as read...
    assert conns(await cache.locate("acme", ["r1"])) == {"early"}
    # ...but not kept, so the next lookup reads again and finds both.
    assert ("acme", "r1") not in cache._entries
    assert conns(await cache.locate("acme", ["r1"])) == {"early", "late"}
    assert ("acme", "r1") in cache._entries


async def test_broken_feed_empties_cache(presence_and_cache, redis_server, caplog):
    presence, cache = presence_and_cache
    await await_change(cache, presence.connect(user("acme", "u1", "c1"), "multi", 5, TTL))
    assert conns(await cache.locate("acme", ["u1"])) == {"c1"}
    assert len(cache) == 1

    admin = redis.asyncio.Redis.from_url(redis_server)
    try:
        with caplog.at_level(logging.WARNING, logger="prim.router.locations"):
            await admin.client_kill_filter(_type="pubsub")
            await until(lambda: "lost presence's change feed" in caplog.text)
        # Changes made while no subscriber listens are lost. The cache is empty,
        # so the next lookups read Redis and see them.
        assert len(cache) == 0
        await presence.connect(user("acme", "u1", "c2", node_id="n2", platform="ios"), "multi", 5, TTL)
        assert conns(await cache.locate("acme", ["u1"])) == {"c1", "c2"}
        await until(lambda: cache.following)
        assert conns(await cache.locate("acme", ["u1"])) == {"c1", "c2"}
        await await_change(cache, presence.disconnect("acme", "u1", "c2"))
        await until(lambda: ("acme", "u1") not in cache._entries)
        assert conns(await cache.locate("acme", ["u1"])) == {"c1"}
    finally:
        await admin.aclose()


async def test_cache_stays_bounded(redis_server):
    cache = LocationCache(make_store(redis_server), max_users=50)
    cache.start()
    try:
        await until(lambda: cache.following)
        for start in range(0, 200, 20):
            await cache.locate("acme", [f"b{i}" for i in range(start, start + 20)])
        assert len(cache) == 50
        assert ("acme", "b199") in cache._entries
        assert ("acme", "b0") not in cache._entries
    finally:
        await cache.close()
