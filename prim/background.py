"""Tasks that run on their own, kept referenced until they end.

The event loop holds only weak references to tasks. A task that waits for a
gRPC call or a future that nothing else reaches can be garbage-collected
before it finishes, and its work is lost without an error. :func:`spawn`
keeps each task in a set until it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_running: set[asyncio.Task] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task:
    """Start ``coro`` as a task that stays referenced until it ends."""
    task = asyncio.create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def cancelling() -> bool:
    """Return whether the running task is being cancelled.

    A gRPC call that was cancelled raises CancelledError in the task that
    awaits it too; this tells that case from a cancellation of the task.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
