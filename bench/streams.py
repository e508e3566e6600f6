"""Counting of what receivers get: loss, duplicates, order and latency.

A payload is ``STREAM|N|T|padding``. STREAM is a sender/receiver pair, or
``b`` for broadcasts, and N the sequence number of the message in its stream,
from 1. T is ``time.monotonic_ns()`` in the load generator when the message
was sent or was due. Sender and receiver live in the same process, so T and
the receive time come from the same clock. A pair's tracker also notes when
each message was handed to the client, so a run at a fixed rate gives its
latency from the due time and from the actual send.
"""

from __future__ import annotations

import asyncio
import time

PAYLOAD_BYTES = 64


def make_payload(stream: str | int, n: int, sent_ns: int) -> str:
    head = f"{stream}|{n}|{sent_ns}|"
    return head + "x" * max(0, PAYLOAD_BYTES - len(head))


def parse_payload(payload: str) -> tuple[str, int, int]:
    stream, n, sent_ns, _ = payload.split("|", 3)
    return stream, int(n), int(sent_ns)


def percentiles(values_ns: list[int], points) -> dict[str, float | None]:
    """Return the given percentiles (nearest rank) of nanosecond values, in milliseconds."""
    ordered = sorted(values_ns)
    result: dict[str, float | None] = {}
    for point in points:
        key = f"p{point:g}"
        if not ordered:
            result[key] = None
            continue
        index = min(len(ordered) - 1, max(0, round(point / 100 * len(ordered)) - 1))
        result[key] = ordered[index] / 1e6
    return result


class StreamTracker:
    """One sender/receiver pair: what was sent, and what the receiver got."""

    def __init__(self) -> None:
        self.sent = 0
        self.unique = 0
        self.duplicated = 0
        self.reordered = 0
        self.misrouted = 0
        self.stalls = 0
        self.written_off = 0  # in-flight messages given up on after a stall
        self.max_seen = 0
        self.seen: set[int] = set()
        self.window = (float("inf"), float("inf"))  # monotonic seconds of the measured window
        self.in_window = 0
        self.latencies_ns: list[int] = []
        # Time each message was handed to the client, indexed by N - 1, and the
        # latencies inside the window counted from it.
        self.handed_ns: list[int] = []
        self.from_send_ns: list[int] = []
        self.progress = asyncio.Event()
        self.stream = ""

    def payload(self, stream: int, n: int, sent_ns: int) -> str:
        """Build message ``n``'s payload, stamped ``sent_ns``, and note the time it is sent."""
        self.stream = str(stream)
        self.handed_ns.append(time.monotonic_ns())
        return make_payload(stream, n, sent_ns)

    def on_payload(self, payload: str, order: int | None = None) -> None:
        now_ns = time.monotonic_ns()
        stream, n, sent_ns = parse_payload(payload)
        if stream != self.stream:
            self.misrouted += 1
            return
        if n in self.seen:
            self.duplicated += 1
            return
        self.seen.add(n)
        self.unique += 1
        if n < self.max_seen:
            self.reordered += 1
        else:
            self.max_seen = n
        if self.window[0] <= now_ns / 1e9 < self.window[1]:
            self.in_window += 1
            self.latencies_ns.append(now_ns - sent_ns)
            if n <= len(self.handed_ns):
                self.from_send_ns.append(now_ns - self.handed_ns[n - 1])
        self.progress.set()


class BroadcastTracker:
    """Broadcasts to ``receivers`` clients; a broadcast is done when every client has it."""

    def __init__(self, receivers: int) -> None:
        self.receivers = receivers
        self.sent = 0
        self.done = 0
        self.stalls = 0
        self.abandoned = 0  # broadcasts given up on after a stall
        self.got: dict[int, int] = {}
        self.seen = [set() for _ in range(receivers)]
        self.last = [0] * receivers
        self.unique = 0
        self.duplicated = 0
        self.reordered = 0
        self.misrouted = 0
        self.window = (float("inf"), float("inf"))
        self.in_window = 0
        self.latencies_ns: list[int] = []
        self.progress = asyncio.Event()

    def payload(self, n: int, sent_ns: int) -> str:
        return make_payload("b", n, sent_ns)

    def receiver(self, index: int):
        def on_payload(payload: str, order: int | None = None) -> None:
            self.on_payload(index, payload, order)

        return on_payload

    def on_payload(self, index: int, payload: str, order: int | None = None) -> None:
        """Count one delivery; ``order``, if given, replaces ``n`` as the order to check."""
        now_ns = time.monotonic_ns()
        stream, n, sent_ns = parse_payload(payload)
        if stream != "b":
            self.misrouted += 1
            return
        seen = self.seen[index]
        if n in seen:
            self.duplicated += 1
            return
        seen.add(n)
        self.unique += 1
        position = n if order is None else order
        if position < self.last[index]:
            self.reordered += 1
        else:
            self.last[index] = position
        if self.window[0] <= now_ns / 1e9 < self.window[1]:
            self.in_window += 1
            self.latencies_ns.append(now_ns - sent_ns)
        count = self.got.get(n, 0) + 1
        self.got[n] = count
        if count == self.receivers:
            self.done += 1
            self.progress.set()

    async def wait_all_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.got.get(n, 0) >= self.receivers for n in range(1, self.sent + 1)):
                return
            await asyncio.sleep(0.05)

    def summary(self, duration: float) -> dict:
        expected = self.sent * self.receivers
        return {
            "connections": self.receivers,
            "broadcasts": self.sent,
            "expected_deliveries": expected,
            "received": self.unique,
            "deliveries_per_second": self.in_window / duration,
            "latency_ms": percentiles(self.latencies_ns, (50, 99)),
            "lost": expected - self.unique,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "misrouted": self.misrouted,
            "stalls": self.stalls,
        }
