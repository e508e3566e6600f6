"""Load generator: one process of picows WebSocket clients on uvloop.

``python -m bench.loadgen CONFIG.json`` (from the repository root) runs one scenario against one system
and writes JSON lines on stdout: progress events (``{"event": "ready"}`` and
the like, which bench/run.py waits for) and, last, ``{"event": "result", ...}``.
The config names the scenario (``pairs``, ``idle``, ``storm``, ``broadcast``),
the client protocol (``prim``, ``socketio``, ``channels``, ``relay``, see
bench/protocols.py), the server URLs and the credentials of every client.

Every payload carries its stream id, a sequence number and a timestamp, so
each receiver counts lost, duplicated and reordered messages and measures
latency with the monotonic clock of this process. Every loop stops after the
configured duration or count.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from bench.protocols import PROTOCOLS, Protocol
from bench.streams import BroadcastTracker, StreamTracker, percentiles

HANDSHAKE_TIMEOUT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0
# Time receivers get after the last send for what is still in flight.
# Whatever has not arrived by then is counted as lost.
DRAIN_SECONDS = 15.0
# Connections opened at once outside the connect storm, so that setting up a
# scenario does not turn into a storm of its own.
SETUP_CONCURRENCY = 64


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Client(WSListener):
    """One WebSocket client: logs in with its protocol and hands pushes to ``on_push``."""

    def __init__(self, protocol: Protocol, credential: dict, on_push=None):
        self.protocol = protocol
        self.credential = credential
        self.on_push = on_push
        self.transport: WSTransport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.rejected: list[int] = []  # sequence numbers the server replied to with an error
        self.errors = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.protocol.on_open(self)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        self.protocol.on_text(self, frame.get_payload_as_utf8_text())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str) -> None:
        self.transport.send(WSMsgType.TEXT, text.encode())

    def mark_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(time.monotonic())

    def fail_ready(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))


async def open_client(protocol: Protocol, base_url: str, credential: dict, on_push=None) -> Client:
    """Connect and wait until the server has registered the client (login reply or ready frame)."""
    url = protocol.url(base_url, credential)
    _, client = await ws_connect(
        lambda: Client(protocol, credential, on_push),
        url,
        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
    )
    try:
        await asyncio.wait_for(client.ready, READY_TIMEOUT_SECONDS)
    except BaseException:
        client.transport.disconnect(graceful=False)
        raise
    return client


async def open_many(protocol, urls_and_credentials, on_push_for=None) -> tuple[list, list[str]]:
    """Open clients with at most SETUP_CONCURRENCY handshakes in flight; return clients and errors."""
    semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)
    errors: list[str] = []

    async def one(index: int, base_url: str, credential: dict):
        async with semaphore:
            on_push = on_push_for(index) if on_push_for else None
            try:
                return await open_client(protocol, base_url, credential, on_push)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    tasks = [one(i, url, cred) for i, (url, cred) in enumerate(urls_and_credentials)]
    clients = await asyncio.gather(*tasks)
    return clients, errors


async def close_all(clients) -> None:
    live = [c for c in clients if c is not None and c.transport is not None]
    for client in live:
        client.transport.disconnect()
    if live:
        await asyncio.wait([c.closed for c in live], timeout=10)


# Scenario 1: cross-node pairs


async def run_pairs(config: dict, protocol: Protocol) -> dict:
    """Run sender/receiver pairs, either saturating (``window``) or at a fixed ``rate``."""
    pairs = config["pairs"]
    trackers = [StreamTracker() for _ in pairs]
    receivers, receive_errors = await open_many(
        protocol,
        [(config["receiver_url"], p["receiver"]) for p in pairs],
        lambda i: trackers[i].on_payload,
    )
    senders, send_errors = await open_many(
        protocol, [(config["sender_url"], p["sender"]) for p in pairs]
    )
    errors = receive_errors + send_errors
    if errors:
        await close_all(receivers + senders)
        return {"setup_errors": len(errors), "error_samples": errors[:5]}

    warmup = config["warmup_seconds"]
    duration = config["duration_seconds"]
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + duration
    for tracker in trackers:
        tracker.window = (measure_from, measure_to)
    emit("measuring", seconds=warmup + duration)

    if config.get("rate"):
        per_pair = config["rate"] / len(pairs)
        tasks = [
            send_at_rate(
                protocol,
                senders[i],
                pairs[i]["to"],
                i,
                trackers[i],
                per_pair,
                start + i / config["rate"],
                measure_to,
                config,
            )
            for i in range(len(pairs))
        ]
    else:
        tasks = [
            send_windowed(
                protocol,
                senders[i],
                pairs[i]["to"],
                i,
                trackers[i],
                config["window"],
                measure_to,
                config,
            )
            for i in range(len(pairs))
        ]
    await asyncio.gather(*tasks)
    await drain(trackers, senders, config.get("drain_seconds", DRAIN_SECONDS))

    result = summarize_pairs(trackers, senders, duration)
    if config.get("rate"):
        # A server slower than the offered rate builds a backlog, and its
        # latency then measures the backlog, not the system at that rate.
        result["offered_per_second"] = config["rate"]
        result["overloaded"] = result["delivered_per_second"] < 0.95 * config["rate"]
    await close_all(receivers + senders)
    return result


async def send_windowed(
    protocol,
    sender: Client,
    to: str,
    stream: int,
    tracker: StreamTracker,
    window: int,
    until: float,
    config: dict,
) -> None:
    """Keep at most ``window`` messages of this pair in flight (sent, not yet received)."""
    stall_seconds = config.get("stall_seconds", 2.0)
    while time.monotonic() < until:
        in_flight = tracker.sent - tracker.unique - len(sender.rejected) - tracker.written_off
        if in_flight < window:
            for _ in range(window - in_flight):
                tracker.sent += 1
                payload = tracker.payload(stream, tracker.sent, time.monotonic_ns())
                protocol.send_message(sender, to, payload, tracker.sent, config)
            await asyncio.sleep(0)
            continue
        tracker.progress.clear()
        try:
            await asyncio.wait_for(tracker.progress.wait(), stall_seconds)
        except TimeoutError:
            # Nothing arrived for a while: write the window off so one loss
            # does not stop this pair for the rest of the run. The loss itself
            # is still counted at the end.
            tracker.stalls += 1
            tracker.written_off += in_flight


async def send_at_rate(
    protocol,
    sender: Client,
    to: str,
    stream: int,
    tracker: StreamTracker,
    rate: float,
    first_at: float,
    until: float,
    config: dict,
) -> None:
    """Send on a fixed schedule; the payload carries the scheduled time, not the actual one.

    Using the scheduled time keeps a stalled sender from hiding latency
    (coordinated omission): a message sent late counts its wait.
    """
    interval = 1.0 / rate
    due = first_at
    while due < until:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        due_ns = int(due * 1e9)
        tracker.sent += 1
        protocol.send_message(
            sender, to, tracker.payload(stream, tracker.sent, due_ns), tracker.sent, config
        )
        due += interval


async def drain(trackers, senders, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = sum(t.sent - t.unique - len(s.rejected) for t, s in zip(trackers, senders))
        if missing <= 0:
            return
        await asyncio.sleep(0.05)


def summarize_pairs(trackers, senders, duration: float) -> dict:
    latencies = [ns for t in trackers for ns in t.latencies_ns]
    sent = sum(t.sent for t in trackers)
    rejected = sum(len(s.rejected) for s in senders)
    unique = sum(t.unique for t in trackers)
    windowed = sum(t.in_window for t in trackers)
    return {
        "sent": sent,
        "rejected": rejected,
        "received": unique,
        "delivered_per_second": windowed / duration,
        "latency_ms": percentiles(latencies, (50, 90, 99, 99.9)),
        # From the moment each message was handed to its client, so without
        # the pacing's lateness (uvloop's timers tick in milliseconds).
        "latency_from_send_ms": percentiles(
            [ns for t in trackers for ns in t.from_send_ns], (50, 90, 99, 99.9)
        ),
        "latency_samples": len(latencies),
        "lost": sent - rejected - unique,
        "duplicated": sum(t.duplicated for t in trackers),
        "reordered": sum(t.reordered for t in trackers),
        "misrouted": sum(t.misrouted for t in trackers),
        "stalls": sum(t.stalls for t in trackers),
        "client_errors": sum(s.errors for s in senders),
    }


# Scenario 2: idle connections


async def run_idle(config: dict, protocol: Protocol) -> dict:
    """Hold ``credentials`` logged in until stdin says ``release`` (or ``hold_seconds`` pass)."""
    start = time.monotonic()
    clients, errors = await open_many(
        protocol, [(config["url"], cred) for cred in config["credentials"]]
    )
    connected = sum(c is not None for c in clients)
    emit("ready", connected=connected, failed=len(errors), seconds=time.monotonic() - start)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.run_in_executor(None, sys.stdin.readline), config.get("hold_seconds", 120)
        )
    except TimeoutError:
        pass
    dropped = sum(c is not None and c.closed.done() for c in clients)
    await close_all(clients)
    return {
        "connected": connected,
        "failed": len(errors),
        "dropped_while_idle": dropped,
        "error_samples": errors[:5],
    }


# Scenario 3: connect storm


async def run_storm(config: dict, protocol: Protocol) -> dict:
    """Open every client at once and time until the last one is registered."""
    started: dict[int, float] = {}

    async def one(index: int, credential: dict):
        started[index] = time.monotonic()
        client = await open_client(protocol, config["url"], credential)
        return client, time.monotonic() - started[index]

    emit("measuring")
    start = time.monotonic()
    outcomes = await asyncio.gather(
        *(one(i, c) for i, c in enumerate(config["credentials"])), return_exceptions=True
    )
    elapsed = time.monotonic() - start
    clients = [o[0] for o in outcomes if not isinstance(o, BaseException)]
    seconds = [o[1] for o in outcomes if not isinstance(o, BaseException)]
    errors = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    await close_all(clients)
    return {
        "clients": len(outcomes),
        "connected": len(clients),
        "failed": len(errors),
        "seconds": elapsed,
        "connects_per_second": len(clients) / elapsed if elapsed else 0.0,
        "connect_ms": percentiles([int(s * 1e9) for s in seconds], (50, 99)),
        "error_samples": errors[:5],
    }


# Scenario 4: broadcast


async def run_broadcast(config: dict, protocol: Protocol) -> dict:
    """Keep ``window`` broadcasts in flight; one counts as done when every client has it."""
    urls = config["urls"]
    credentials = config["credentials"]
    tracker = BroadcastTracker(len(credentials))
    clients, errors = await open_many(
        protocol,
        [(urls[i % len(urls)], cred) for i, cred in enumerate(credentials)],
        lambda i: tracker.receiver(i),
    )
    if errors:
        await close_all(clients)
        return {"setup_errors": len(errors), "error_samples": errors[:5]}

    sender = await protocol.broadcast_sender(config, clients)
    warmup, duration = config["warmup_seconds"], config["duration_seconds"]
    start = time.monotonic()
    tracker.window = (start + warmup, start + warmup + duration)
    emit("measuring", seconds=warmup + duration)
    send_errors = await send_broadcasts(sender, tracker, config["window"], tracker.window[1])
    await tracker.wait_all_done(config.get("drain_seconds", DRAIN_SECONDS))
    await sender.close()
    result = tracker.summary(duration)
    result["send_errors"] = send_errors
    await close_all(clients)
    return result


async def send_broadcasts(sender, tracker: BroadcastTracker, window: int, until: float) -> int:
    errors = 0
    in_flight: set[asyncio.Task] = set()
    while time.monotonic() < until:
        while tracker.sent - tracker.done - tracker.abandoned < window and len(in_flight) < window:
            tracker.sent += 1
            payload = tracker.payload(tracker.sent, time.monotonic_ns())
            task = asyncio.ensure_future(sender.send(payload))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        tracker.progress.clear()
        try:
            await asyncio.wait_for(tracker.progress.wait(), 2.0)
        except TimeoutError:
            # Give up on the missing deliveries; the summary counts them as lost.
            tracker.stalls += 1
            tracker.abandoned = tracker.sent - tracker.done
    for task in list(in_flight):
        try:
            await task
        except Exception:  # noqa: BLE001 - counted and reported
            errors += 1
    return errors


SCENARIOS = {"pairs": run_pairs, "idle": run_idle, "storm": run_storm, "broadcast": run_broadcast}


async def main(config: dict) -> None:
    protocol = PROTOCOLS[config["protocol"]]()
    result = await SCENARIOS[config["scenario"]](config, protocol)
    emit("result", **result)


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        scenario_config = json.load(file)
    raise_open_file_limit()
    uvloop.run(main(scenario_config))
