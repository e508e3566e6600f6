"""A router's cache of where users are connected, kept fresh by presence's change feed.

Reading presence's Redis costs a round trip per dispatch round, about half a
millisecond of a message's way at low load. The cache returns repeated
lookups from memory instead. It is correct only while it receives every change:

* Presence's scripts publish ``tenant, user`` on every connect, move and
  removal (see ``prim.presence.redis_scripts``), and each one drops that
  user's entry.
* An entry lives no longer than the first of its connections' TTLs and
  ``max_age``, so an entry whose connection expired unseen, a node that died
  without a word, ends on its own.
* Nothing is cached until the subscription is confirmed, and everything is
  dropped when it breaks, since the changes in between are lost.
* A user whose change was heard while a read of them was on its way is not
  cached from that read: the reply may predate the change. Each change gets
  a number, and the last ``RECENT_CHANGES`` are kept with their users, so a
  read keeps the users of its reply that no change touched meanwhile. A read
  that spanned more changes than that, or a subscription made or lost, keeps
  nothing.

Like a read of Redis, the cache can miss a connection made a moment before
the push. Such a recipient finds the message with ``sync`` if it was stored.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence

from prim import background
from prim.config import Settings
from prim.errors import PrimError
from prim.metrics import count_location_lookups
from prim.pb.common_pb2 import Location
from prim.presence.server import MEMORY_URL, redacted_url
from prim.presence.store_redis import RedisStore

log = logging.getLogger("prim.router.locations")

# Maximum number of users whose locations are kept. Past it, the oldest entries go first.
MAX_USERS = 100_000
# Maximum age of an entry, which bounds how long an offline user is remembered.
MAX_AGE_SECONDS = 60.0
# Changes remembered with their users, for reads still on their way. A read
# lasts one Redis round trip, and keeps nothing only if this many changes
# arrive meanwhile.
RECENT_CHANGES = 4096
# First and longest wait before subscribing again after the feed broke.
RETRY_SECONDS = (0.1, 5.0)


class LocationCache:
    """Users' live connections, read from presence's Redis and kept until they change."""

    def __init__(
        self,
        store: RedisStore,
        *,
        max_users: int = MAX_USERS,
        max_age: float = MAX_AGE_SECONDS,
        logger: logging.Logger = log,
    ):
        self.log = logger
        self.store = store
        self.max_users = max_users
        self.max_age = max_age
        # (tenant, user_id) -> (monotonic expiry, locations)
        self._entries: dict[tuple[str, str], tuple[float, list[Location]]] = {}
        # Number of the last change heard, and the recent ones with their users.
        self._changes = 0
        self._recent: collections.deque[tuple[int, tuple[str, str]]] = collections.deque(
            maxlen=RECENT_CHANGES
        )
        # Subscriptions made or lost: a read spanning one keeps nothing.
        self._epoch = 0
        self._following = False
        self._retry_in = RETRY_SECONDS[0]
        self._follower: asyncio.Task | None = None

    def start(self) -> None:
        self._follower = background.spawn(self._follow(), name="presence changes")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        await self.store.close()

    @property
    def following(self) -> bool:
        """Whether the change feed is subscribed, which is when the cache is used."""
        return self._following

    def __len__(self) -> int:
        return len(self._entries)

    async def locate(self, tenant: str, user_ids: Sequence[str]) -> list[Location]:
        """Return the live connections of ``user_ids`` in ``tenant``. Errors of the store propagate."""
        now = time.monotonic()
        found: list[Location] = []
        missing: list[str] = []
        unique_ids = dict.fromkeys(user_ids)
        for user_id in unique_ids:
            entry = self._entries.get((tenant, user_id))
            if entry is not None and entry[0] > now:
                found += entry[1]
            else:
                missing.append(user_id)
        count_location_lookups(hits=len(unique_ids) - len(missing), misses=len(missing))
        if not missing:
            return found
        changes, epoch = self._changes, self._epoch
        located = await self.store.locate_expiring(tenant, missing)
        if self._following and epoch == self._epoch:
            self._keep_unchanged(tenant, missing, located, now, changes)
        found += [location for location, _ in located]
        return found

    def _keep_unchanged(
        self, tenant: str, user_ids: list[str], located, read_at: float, mark: int
    ) -> None:
        """Keep what a read found for the users no change touched after change number ``mark``."""
        if mark != self._changes:
            if not self._recent or self._recent[0][0] > mark + 1:
                return  # the read spanned more changes than are remembered
            changed = set()
            for number, key in reversed(self._recent):
                if number <= mark:
                    break
                changed.add(key)
            user_ids = [user_id for user_id in user_ids if (tenant, user_id) not in changed]
            located = [entry for entry in located if (tenant, entry[0].user_id) not in changed]
        self._keep(tenant, user_ids, located, read_at)

    def _keep(self, tenant: str, user_ids: list[str], located, read_at: float) -> None:
        by_user: dict[str, list[Location]] = collections.defaultdict(list)
        expires = {user_id: read_at + self.max_age for user_id in user_ids}
        for location, seconds_left in located:
            by_user[location.user_id].append(location)
            expires[location.user_id] = min(expires[location.user_id], read_at + seconds_left)
        for user_id in user_ids:
            key = (tenant, user_id)
            # Re-inserted at the end, so the dict's order is the order of writes.
            self._entries.pop(key, None)
            self._entries[key] = (expires[user_id], by_user.get(user_id, []))
        while len(self._entries) > self.max_users:
            del self._entries[next(iter(self._entries))]

    def _changed(self, tenant: str, user_id: str) -> None:
        self._changes += 1
        self._recent.append((self._changes, (tenant, user_id)))
        self._entries.pop((tenant, user_id), None)

    def _subscribed(self) -> None:
        self._forget()
        self._following = True
        self._retry_in = RETRY_SECONDS[0]
        self.log.info("following presence changes; caching locations")

    def _forget(self) -> None:
        self._epoch += 1
        self._following = False
        self._entries.clear()

    async def _follow(self) -> None:
        while True:
            try:
                await self.store.follow_changes(self._subscribed, self._changed)
            except PrimError as exc:
                self.log.warning(
                    "lost presence's change feed; reading every location from Redis",
                    extra={"error": exc.msg, "retry_in_seconds": self._retry_in},
                )
            except Exception:
                self.log.exception(
                    "following presence changes failed; reading every location from Redis",
                    extra={"retry_in_seconds": self._retry_in},
                )
            finally:
                self._forget()
            await asyncio.sleep(self._retry_in)
            self._retry_in = min(self._retry_in * 2, RETRY_SECONDS[1])


def start_location_cache(settings: Settings, logger: logging.Logger = log) -> LocationCache | None:
    """Build and start a cache of presence's Redis store, to locate users without calling presence.

    Return None when PRIM_PRESENCE_REDIS_URL is unset or memory://, which is
    presence's own in-process store that only presence reads.
    """
    if not settings.presence_redis_url or settings.presence_redis_url == MEMORY_URL:
        logger.info("locating recipients through presence")
        return None
    logger.info(
        "locating recipients in presence's Redis",
        extra={"redis_url": redacted_url(settings.presence_redis_url)},
    )
    cache = LocationCache(
        RedisStore(
            settings.presence_redis_url,
            max_connections=64,
            timeout_seconds=settings.grpc_deadline_seconds,
            pool_wait_seconds=settings.grpc_deadline_seconds,
        ),
        logger=logger,
    )
    cache.start()
    return cache
