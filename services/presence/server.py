"""Assembly of the presence service: the store, the servicer and the sweeper task."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from prim import service, telemetry
from prim.config import ConfigError, Settings
from prim.errors import PrimError
from prim.pb import presence_pb2, presence_pb2_grpc

from .servicer import PresenceServicer
from .store import PresenceStore
from .store_memory import MemoryStore
from .store_redis import RedisStore

log = logging.getLogger("prim.presence")

SERVICE_NAME = presence_pb2.DESCRIPTOR.services_by_name["Presence"].full_name
MEMORY_URL = "memory://"
REDIS_SCHEMES = ("redis", "rediss", "unix")


class Sweeper:
    """A task that runs ``store.sweep`` every interval and logs its failures."""

    def __init__(self, store: PresenceStore, interval_seconds: float):
        self._store = store
        self._interval = interval_seconds
        self._failures = 0
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="presence-sweeper")

    async def stop(self) -> None:
        """Stop the task and wait for it to end."""
        self._stopping.set()
        self._task.cancel()
        # NOTE: on Python 3.11, asyncio.wait_for (which redis-py uses for reads) can return a
        # result and drop a cancellation that arrives at the same moment, so the loop also
        # checks _stopping instead of relying on cancel() alone.
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._sweep_once()
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            except TimeoutError:
                pass

    async def _sweep_once(self) -> None:
        try:
            removed = await self._store.sweep()
        except PrimError as exc:
            self._failures += 1
            # The first failure and every 60th after it, so an outage does not flood the log.
            if self._failures % 60 == 1:
                fields = {"error": exc.msg, "failures": self._failures}
                log.warning("sweep failed", extra=fields)
            return
        except Exception:
            self._failures += 1
            log.exception("sweep failed", extra={"failures": self._failures})
            return
        if self._failures:
            log.info("sweep recovered", extra={"failures": self._failures})
            self._failures = 0
        if removed:
            log.debug("swept expired connections", extra={"removed": removed})


@dataclasses.dataclass
class App:
    """The parts that ``prim.service.serve`` runs, and the sweeper beside them."""

    store: PresenceStore
    servicers: list[tuple[Callable[[Any, Any], None], Any]]
    service_names: list[str]
    sweeper: Sweeper
    _reachable: bool | None = None

    async def check(self) -> bool:
        """Return whether the backend replies to a PING."""
        try:
            await self.store.ping()
        except PrimError as exc:
            if self._reachable is not False:
                fields = {"backend": self.store.backend, "error": exc.msg}
                log.warning("backend unreachable", extra=fields)
            self._reachable = False
            return False
        self._reachable = True
        return True

    async def close(self) -> None:
        await self.sweeper.stop()
        await self.store.close()


def redacted_url(url: str) -> str:
    """Return ``url`` without its password, for log lines."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:<hidden>@" if parts.username else ":<hidden>@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


def make_store(settings: Settings) -> PresenceStore:
    """Build the backend that ``redis_url`` selects, or raise ConfigError for an unknown scheme."""
    url = settings.redis_url
    if url == MEMORY_URL:
        log.warning(
            "presence backend: memory, valid only when a single presence replica runs",
            extra={"backend": "memory"},
        )
        return MemoryStore()
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"invalid PRIM_REDIS_URL scheme {scheme!r}: use redis://, rediss://, unix:// "
            f"or {MEMORY_URL}"
        )
    log.info("presence backend: redis", extra={"backend": "redis", "redis_url": redacted_url(url)})
    return RedisStore(
        url,
        max_connections=settings.redis_max_connections,
        timeout_seconds=settings.redis_timeout_seconds,
        pool_wait_seconds=settings.grpc_deadline_seconds,
    )


async def build(settings: Settings) -> App:
    """Build the store and the servicer, and start the sweeper task."""
    store = make_store(settings)
    sweeper = Sweeper(store, settings.sweep_interval_seconds)
    servicers = [(presence_pb2_grpc.add_PresenceServicer_to_server, PresenceServicer(store))]
    return App(store, servicers, [SERVICE_NAME], sweeper)


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    app = await build(settings)
    try:
        await service.serve(
            "prim-presence",
            settings,
            settings.listen,
            app.servicers,
            app.service_names,
            app.check,
            app.close,
        )
    except BaseException:
        await app.close()
        raise
