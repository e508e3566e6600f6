"""Lifecycle of a gRPC service: start, report health, stop on SIGTERM.

A service hands :func:`serve` its servicers, a readiness check (are MongoDB,
Redis and its peers reachable?) and a cleanup coroutine. The health status
follows the check every ``CHECK_INTERVAL`` seconds; SIGTERM or SIGINT turns
health to NOT_SERVING, lets in-flight calls finish within the grace time, then
runs the cleanup.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prim import metrics, rpc, telemetry
from prim.config import Settings

CHECK_INTERVAL = 2.0
# Allocations between the collector's youngest passes. See settle_heap.
GC_GEN0_THRESHOLD = 5000

log = logging.getLogger("prim.service")


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def settle_heap() -> None:
    """Move everything allocated while starting out of the collector's way.

    A full collection walks every tracked object, and a started service
    contains hundreds of thousands of them (modules, protobuf descriptors,
    gRPC and telemetry state) that live as long as the process. Walking
    them took 12-25 ms in the router and edges: a stall that every message
    in flight waits out. Frozen objects are never walked, so full passes
    cover only what the service allocated since. Fewer, larger young
    passes cost less than many small ones at the same allocation rate.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    log.info("heap settled", extra={"frozen_objects": gc.get_freeze_count()})


async def serve(
    name: str,
    settings: Settings,
    listen: str,
    servicers: Iterable[tuple[Callable[[Any, Any], None], Any]],
    service_names: list[str],
    check: Callable[[], Awaitable[bool]],
    cleanup: Callable[[], Awaitable[None]],
    end_streams: Callable[[], None] | None = None,
) -> None:
    """Run the server until SIGTERM or SIGINT, then stop it within the grace time.

    ``end_streams`` ends the service's long-lived stream calls once health
    turns NOT_SERVING, since they would otherwise hold the stop for all of
    the grace time and then be cut.
    """
    server, health = rpc.make_server(service_names, settings.service_token)
    for add, servicer in servicers:
        add(servicer, server)
    port = rpc.add_port(server, listen)
    if port == 0:
        raise SystemExit(f"{name}: cannot listen on {listen}")
    await server.start()
    metrics.start_server(settings, listen)
    settle_heap()
    log.info("started", extra={"service": name, "listen": listen, "settings": settings.redacted()})

    stop = asyncio.Event()
    install_stop_signals(stop)
    watcher = asyncio.create_task(watch_health(name, health, service_names, check, stop))
    await stop.wait()

    log.info("stopping", extra={"service": name, "grace_seconds": settings.grace_seconds})
    await rpc.set_health(health, service_names, serving=False)
    watcher.cancel()
    if end_streams is not None:
        end_streams()
    await server.stop(settings.grace_seconds)
    await cleanup()
    log.info("stopped", extra={"service": name})


async def watch_health(name, health, service_names, check, stop: asyncio.Event) -> None:
    """Set the health status from ``check()`` every CHECK_INTERVAL seconds until ``stop`` is set."""
    serving: bool | None = None
    while not stop.is_set():
        try:
            # A check every 2 s on every replica would bury the request traces.
            with telemetry.untraced():
                ok = await check()
        except Exception:
            log.exception("readiness check failed", extra={"service": name})
            ok = False
        if ok != serving:
            await rpc.set_health(health, service_names, serving=ok)
            log.log(
                logging.INFO if ok else logging.WARNING,
                "serving" if ok else "not serving: a dependency is unreachable",
                extra={"service": name},
            )
            serving = ok
        try:
            await asyncio.wait_for(stop.wait(), CHECK_INTERVAL)
        except TimeoutError:
            pass
