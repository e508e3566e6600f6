"""gRPC channel and server options: gRPC reads every name, and servers accept clients' pings.

gRPC ignores an option whose name it does not recognize, so a misspelt
name leaves gRPC's default in place without any error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prim import rpc

pytestmark = pytest.mark.integration

# Seconds between the keepalive pings of the test's client: above the
# servers' minimum, and short enough that three pings fit in a test.
TEST_KEEPALIVE_SECONDS = 6
# A gRPC server sends GOAWAY "too_many_pings" at the third ping that comes
# too soon (grpc.http2.max_ping_strikes, 2 by default).
PINGS_TO_GOAWAY = 3


def grpc_core_library() -> bytes:
    """Return the text of gRPC's core library, which contains every option name it reads."""
    library = next(Path(grpc.__file__).parent.glob("_cython/cygrpc*.so"))
    return library.read_bytes()


def test_option_names_known():
    library = grpc_core_library()
    names = {name for name, _ in rpc.SERVER_OPTIONS + rpc.channel_options("prim.v1.Router")}
    # Each name ends with a NUL byte in the library, so a prefix of a known name does not pass.
    unknown = sorted(name for name in names if name.encode() + b"\0" not in library)
    assert unknown == []


async def test_idle_keepalive_accepted():
    server, health = rpc.make_server([], "")
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = dict(rpc.channel_options("grpc.health.v1.Health"))
    options["grpc.keepalive_time_ms"] = TEST_KEEPALIVE_SECONDS * 1000
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=list(options.items()))
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        # The stream stays idle while the client pings, often enough for the
        # server to send GOAWAY if it took the pings as too frequent.
        await asyncio.sleep(TEST_KEEPALIVE_SECONDS * (PINGS_TO_GOAWAY + 0.5))
        assert not watch.done()
        await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        second = await asyncio.wait_for(watch.read(), 5)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    finally:
        await channel.close()
        await server.stop(0)
