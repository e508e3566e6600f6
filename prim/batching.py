"""Coalescing of concurrent calls into batch calls.

Under load, one gRPC round trip per message is what limits throughput, so a
caller submits single items and a :class:`Coalescer` sends whatever gathered
while the previous batch was in flight as one batch call. With nothing in
flight an item goes out at once, so an idle system pays no added latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prim import background

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("prim.batching")


class Coalescer(Generic[T, R]):
    """Send submitted items in batches of at most ``max_batch``, with at most
    ``max_in_flight`` batch calls at once.

    ``send_batch`` takes a list of items and returns one result per item, in
    order; a result that is an exception is raised to that item's caller. If
    ``send_batch`` itself raises, every item of the batch gets the exception.
    Items are sent in submission order, but batches in flight at the same
    time may complete in any order. A group from :meth:`submit_group` goes
    out whole in one batch, so its items keep their order at the receiver
    even then.
    """

    def __init__(
        self,
        send_batch: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
    ):
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[list[T], list[asyncio.Future]]] = []
        self._in_flight = 0

    async def submit(self, item: T) -> R:
        return await self.submit_group([item])[0]

    def submit_group(self, items: list[T]) -> list[asyncio.Future]:
        """Queue ``items`` for one batch and return a future of each one's result.

        A group larger than ``max_batch`` is refused with ValueError, since it
        could not go out whole.
        """
        if len(items) > self._max_batch:
            raise ValueError(f"a group of {len(items)} items passes max_batch {self._max_batch}")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.append((items, futures))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            background.spawn(self._drain())
        return futures

    async def _drain(self) -> None:
        try:
            while self._pending:
                items: list[T] = []
                futures: list[asyncio.Future] = []
                group_count = 0
                for group_items, group_futures in self._pending:
                    if items and len(items) + len(group_items) > self._max_batch:
                        break
                    items += group_items
                    futures += group_futures
                    group_count += 1
                del self._pending[:group_count]
                await self._send(items, futures)
        finally:
            self._in_flight -= 1

    async def _send(self, items: list[T], futures: list[asyncio.Future]) -> None:
        try:
            results = await self._send_batch(items)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        if len(results) != len(items):
            error = RuntimeError(f"batch call returned {len(results)} results for {len(items)} items")
            log.error("batch result count mismatch", extra={"items": len(items), "results": len(results)})
            results = [error] * len(items)
        for future, result in zip(futures, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
