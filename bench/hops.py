"""The latency floor of each transport on this host, with no messaging code around it.

A stored prim message crosses two gRPC stream hops (edge to router, router
to edge), an online-only one crosses one (edge to edge), and a
python-socketio message crosses one Redis publish. This step
sends timestamped 200-byte payloads at the latency scenario's fixed rate
through each transport alone, between processes that do nothing else:

- ``grpc2``: source -> relay -> sink over two gRPC asyncio streams, prim's stored messages;
- ``grpc1``: source -> sink over one gRPC asyncio stream, prim's online-only messages;
- ``redis1``: a Redis PUBLISH, read by a subscriber, python-socketio's shape.

Each message's latency counts from the moment its source hands it to the
transport. The latency scenario counts from the scheduled send time
instead, which adds the pacing's lateness (uvloop's timers tick in
milliseconds). The servers and channels use prim's gRPC options, and every
process runs on uvloop. Run as ``python -m bench.hops ROLE ...`` for
one process of a chain; :func:`measure` starts the chains.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import grpc
import redis.asyncio
import uvloop

from bench.streams import percentiles
from prim import devcluster, rpc

PAYLOAD_BYTES = 200
POINTS = (50, 90, 99)
METHOD = "/bench.Hop/Stream"
CHANNEL = "bench-hops"
WARMUP_SECONDS = 1.0
ROOT = Path(__file__).resolve().parent.parent


def _identity(data: bytes) -> bytes:
    return data


def _stream_handler(behaviour) -> grpc.GenericRpcHandler:
    service, _, method = METHOD.strip("/").partition("/")
    handler = grpc.stream_stream_rpc_method_handler(behaviour, _identity, _identity)
    return grpc.method_handlers_generic_handler(service, {method: handler})


def _payload(sent: float) -> bytes:
    return struct.pack("d", sent).ljust(PAYLOAD_BYTES, b"x")


def _latency_ns(payload: bytes) -> int:
    return int((time.monotonic() - struct.unpack("d", payload[:8])[0]) * 1e9)


class Sink:
    """The latencies of the payloads received, printed as JSON once ``expected`` have arrived."""

    def __init__(self, rate: int, seconds: float):
        self.skip = int(rate * WARMUP_SECONDS)
        self.expected = self.skip + int(rate * seconds)
        self.count = 0
        self.latencies: list[int] = []
        self.done = asyncio.Event()

    def take(self, payload: bytes) -> None:
        self.count += 1
        if self.count > self.skip:
            self.latencies.append(_latency_ns(payload))
        if self.count == self.expected:
            result = {"messages": len(self.latencies), **percentiles(self.latencies, POINTS)}
            print(json.dumps(result), flush=True)
            self.done.set()


async def _serve(port: int, behaviour) -> grpc.aio.Server:
    server = grpc.aio.server(options=rpc.SERVER_OPTIONS)
    server.add_generic_rpc_handlers([_stream_handler(behaviour)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def _open_stream(port: int):
    options = rpc.channel_options("bench.Hop")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    call = channel.stream_stream(METHOD, _identity, _identity)()

    async def drain() -> None:
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError:
            pass  # the next process stops its server once its sink has reported

    return channel, call, asyncio.create_task(drain())


async def grpc_sink(port: int, rate: int, seconds: float) -> None:
    sink = Sink(rate, seconds)

    async def stream(requests, context):
        async for payload in requests:
            sink.take(payload)
            yield b"k"

    server = await _serve(port, stream)
    await sink.done.wait()
    await server.stop(0)


async def grpc_relay(port: int, out_port: int) -> None:
    channel, call, _ = _open_stream(out_port)

    async def stream(requests, context):
        async for payload in requests:
            await call.write(payload)
            yield b"k"

    server = await _serve(port, stream)
    await server.wait_for_termination()


async def _paced(rate: int, seconds: float, send) -> None:
    """Call ``send`` with a payload at each scheduled time, for the warm-up and ``seconds``."""
    total = int(rate * WARMUP_SECONDS) + int(rate * seconds)
    start = time.monotonic()
    for index in range(total):
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(_payload(time.monotonic()))


async def grpc_source(port: int, rate: int, seconds: float) -> None:
    channel, call, drain = _open_stream(port)
    await _paced(rate, seconds, call.write)
    await call.done_writing()
    await drain
    await channel.close()


async def redis_sink(url: str, rate: int, seconds: float) -> None:
    sink = Sink(rate, seconds)
    client = redis.asyncio.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    print(json.dumps({"subscribed": True}), flush=True)
    async for message in pubsub.listen():
        if message["type"] == "message":
            sink.take(message["data"])
            if sink.done.is_set():
                break
    await pubsub.aclose()
    await client.aclose()


async def redis_source(url: str, rate: int, seconds: float) -> None:
    client = redis.asyncio.Redis.from_url(url)
    await _paced(rate, seconds, lambda payload: client.publish(CHANNEL, payload))
    await client.aclose()


ROLES = {
    "grpc-sink": grpc_sink,
    "grpc-relay": grpc_relay,
    "grpc-source": grpc_source,
    "redis-sink": redis_sink,
    "redis-source": redis_source,
}


def _role(*args, report: bool = False) -> subprocess.Popen:
    """Start one process of a chain. Only the sink (``report``) prints, into a pipe."""
    command = [sys.executable, "-m", "bench.hops", *map(str, args)]
    # gRPC logs each GOAWAY of a stopped chain at INFO.
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE if report else subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _result(sink: subprocess.Popen, others: list[subprocess.Popen], timeout: float) -> dict:
    """Return the sink's report, the last JSON line it prints.

    Raise as soon as another process of the chain fails, or when the sink
    has not ended within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while sink.poll() is None:
        for other in others:
            code = other.poll()
            if code not in (None, 0):
                role = other.args[3]
                raise RuntimeError(f"{role} exited with {code}: see its error output above")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sink.args[3]} timed out: no report within {timeout:g} s")
        time.sleep(0.2)
    lines = [line for line in sink.stdout.read().splitlines() if line.startswith("{")]
    if sink.returncode != 0 or not lines:
        role, code = sink.args[3], sink.returncode
        raise RuntimeError(f"{role} exited with {code} and no report: see its error output above")
    return json.loads(lines[-1])


def _chain(shape: str, rate: int, seconds: float, redis_url: str) -> dict:
    timeout = WARMUP_SECONDS + seconds + 30
    started: list[subprocess.Popen] = []
    try:
        if shape == "redis1":
            sink = _role("redis-sink", redis_url, rate, seconds, report=True)
            started.append(sink)
            sink.stdout.readline()  # subscribed, or "" when the sink has died
            started.append(_role("redis-source", redis_url, rate, seconds))
            return _result(sink, started[1:], timeout)
        sink_port = devcluster.free_port()
        sink = _role("grpc-sink", sink_port, rate, seconds, report=True)
        started.append(sink)
        devcluster.wait_port(sink_port, sink)
        entry = sink_port
        if shape == "grpc2":
            entry = devcluster.free_port()
            relay = _role("grpc-relay", entry, sink_port)
            started.append(relay)
            devcluster.wait_port(entry, relay)
        started.append(_role("grpc-source", entry, rate, seconds))
        return _result(sink, started[1:], timeout)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
        for process in started:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass  # it was killed, and subprocess reaps it on a later call


def measure(rate: int, seconds: float, repeats: int, log_dir) -> dict:
    """Run each chain ``repeats`` times, alternating, and return every run's percentiles."""
    redis_port = devcluster.free_port()
    redis_server = devcluster.start_redis(redis_port, None, log_dir)
    url = f"redis://127.0.0.1:{redis_port}/0"
    runs: dict[str, list[dict]] = {"grpc2": [], "grpc1": [], "redis1": []}
    try:
        for _ in range(repeats):
            for shape, results in runs.items():
                try:
                    results.append(_chain(shape, rate, seconds, url))
                except Exception as exc:  # noqa: BLE001 - recorded, the other runs go on
                    results.append({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        redis_server.stop()
    return {"rate": rate, "seconds": seconds, "runs": runs}


def _argument(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def main(argv: list[str]) -> None:
    uvloop.run(ROLES[argv[0]](*map(_argument, argv[1:])))


if __name__ == "__main__":
    main(sys.argv[1:])
