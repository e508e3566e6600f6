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
    time may complete in any order.
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
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._in_flight = 0

    async def submit(self, item: T) -> R:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._send(batch)
        finally:
            self._in_flight -= 1

    async def _send(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        try:
            results = await self._send_batch([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if len(results) != len(batch):
            error = RuntimeError(f"batch call returned {len(results)} results for {len(batch)} items")
            log.error("batch result count mismatch", extra={"items": len(batch), "results": len(results)})
            results = [error] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
