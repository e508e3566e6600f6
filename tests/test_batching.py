"""The Coalescer batches concurrent submissions and keeps each caller's result."""

from __future__ import annotations

import asyncio

import pytest

from prim.batching import Coalescer


async def test_idle_item_goes_alone():
    batches = []

    async def send(items):
        batches.append(list(items))
        return [item * 2 for item in items]

    coalescer = Coalescer(send, max_batch=10, max_in_flight=1)
    assert await coalescer.submit(3) == 6
    assert batches == [[3]]


async def test_concurrent_items_share_batches_in_order():
    batches = []
    release = asyncio.Event()

    async def send(items):
        batches.append(list(items))
        await release.wait()
        return [f"r{item}" for item in items]

    coalescer = Coalescer(send, max_batch=4, max_in_flight=1)
    calls = [asyncio.create_task(coalescer.submit(i)) for i in range(9)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*calls) == [f"r{i}" for i in range(9)]
    # Submitted before the drain task ran, so they fill batches in order.
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


async def test_per_item_errors_reach_their_callers():
    async def send(items):
        return [ValueError(item) if item % 2 else item for item in items]

    coalescer = Coalescer(send, max_batch=8, max_in_flight=1)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0
    assert isinstance(results[1], ValueError)
    assert results[2] == 2
    assert isinstance(results[3], ValueError)


async def test_failed_batch_fails_every_item():
    async def send(items):
        raise ConnectionError("down")

    coalescer = Coalescer(send, max_batch=8, max_in_flight=2)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    # The coalescer recovers for later submissions.
    with pytest.raises(ConnectionError):
        await coalescer.submit(9)


async def test_in_flight_bound_respected():
    in_flight = 0
    peak = 0

    async def send(items):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return list(items)

    coalescer = Coalescer(send, max_batch=2, max_in_flight=3)
    await asyncio.gather(*(coalescer.submit(i) for i in range(40)))
    assert peak == 3
