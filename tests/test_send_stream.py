"""The edge's SendStream lane: against the real router for rotation, and
against a small gRPC server of its own for the failures the real router
cannot be made to show on demand (silence, a dropped call, an older router)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types

import grpc
import pytest

from prim import rpc
from prim.errors import Unavailable
from prim.pb import router_pb2, router_pb2_grpc
from prim.pb.common_pb2 import Profile
from prim.rpc import Peer
from services.edge import sending
from services.edge.sending import SendLane
from services.router.servicer import RouterServicer

pytestmark = pytest.mark.integration

TOKEN = "send-stream-test-token"


def message(index: int, tenant: str = "lanetenant") -> router_pb2.SendRequest:
    return router_pb2.SendRequest(
        tenant=tenant,
        sender=Profile(user_id="sender"),
        to="nobody",
        message=f"m{index}",
        persist=False,
    )


def router_peer(address: str, token: str) -> Peer:
    return Peer("router", address, router_pb2_grpc.RouterStub, "prim.v1.Router", service_token=token)


async def test_rotating_streams_lose_no_batch(cluster, monkeypatch):
    monkeypatch.setattr(sending, "ROTATE_SECONDS", 0.05)
    peer = router_peer(f"127.0.0.1:{cluster.router_port}", cluster.service_token)
    lane = SendLane(peer, deadline=5.0)
    try:
        msg_ids = []
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < 1.0:
            batches = [[message(index + i * 3 + j) for j in range(3)] for i in range(4)]
            index += 12
            for results in await asyncio.gather(*(lane.send(batch) for batch in batches)):
                assert [result.code for result in results] == [0, 0, 0]
                msg_ids += [result.reply.msg_id for result in results]
        assert len(set(msg_ids)) == len(msg_ids) == index
        assert lane.streams_opened >= 5
    finally:
        lane.close()
        await peer.close()


class StandInRouter(router_pb2_grpc.RouterServicer):
    """Replies to SendStream batches, or stays silent, as the test sets."""

    def __init__(self):
        self.silent = False
        self.batches = 0

    async def SendStream(self, requests, context):
        await context.send_initial_metadata(((rpc.SEND_STREAM_HEADER, "1"),))
        async for request in requests:
            self.batches += 1
            if self.silent:
                continue
            yield router_pb2.SendStreamReply(
                id=request.id,
                results=[
                    router_pb2.SendResult(reply=router_pb2.SendReply(msg_id=f"stream-{r.message}"))
                    for r in request.requests
                ],
            )


async def older_send_batch(request, context):
    """SendBatch of a router from before SendStream."""
    return router_pb2.SendBatchReply(
        results=[
            router_pb2.SendResult(reply=router_pb2.SendReply(msg_id=f"unary-{r.message}"))
            for r in request.requests
        ]
    )


def older_router(server) -> None:
    """Register a Router service with SendBatch only, as an older router had."""
    handler = grpc.unary_unary_rpc_method_handler(
        older_send_batch,
        request_deserializer=router_pb2.SendBatchRequest.FromString,
        response_serializer=router_pb2.SendBatchReply.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("prim.v1.Router", {"SendBatch": handler}),)
    )


async def serve(servicer, port: int = 0):
    server, _ = rpc.make_server(["prim.v1.Router"], TOKEN)
    if servicer is older_router:
        older_router(server)
    else:
        router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


@contextlib.asynccontextmanager
async def lane_to(servicer, deadline: float):
    """Serve ``servicer`` on a free port and yield a SendLane to it, with the server."""
    served = types.SimpleNamespace()
    served.server, served.port = await serve(servicer)
    peer = router_peer(f"127.0.0.1:{served.port}", TOKEN)
    served.lane = SendLane(peer, deadline=deadline)
    try:
        yield served
    finally:
        served.lane.close()
        await peer.close()
        await served.server.stop(0)


async def test_silent_router_batch_times_out():
    router = StandInRouter()
    async with lane_to(router, deadline=0.3) as served:
        lane = served.lane
        assert (await lane.send([message(1)]))[0].reply.msg_id == "stream-m1"
        router.silent = True
        started = time.monotonic()
        with pytest.raises(Unavailable, match="no reply within 0.3 s"):
            await lane.send([message(2)])
        assert 0.25 < time.monotonic() - started < 2.0
        router.silent = False
        assert (await lane.send([message(3)]))[0].reply.msg_id == "stream-m3"
        assert lane.streams_opened == 2


async def test_dropped_call_fails_waiting_batches():
    router = StandInRouter()
    async with lane_to(router, deadline=10.0) as served:
        lane = served.lane
        assert (await lane.send([message(1)]))[0].reply.msg_id == "stream-m1"
        router.silent = True
        waiting = asyncio.ensure_future(lane.send([message(2)]))
        while router.batches < 2:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await served.server.stop(0)
        with pytest.raises(Unavailable):
            await waiting
        assert time.monotonic() - started < 5.0
        # A router back at the same address gets the next batch on a new stream.
        router.silent = False
        served.server, _ = await serve(router, served.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert (await lane.send([message(3)]))[0].reply.msg_id == "stream-m3"
                break
            except Unavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)


async def test_older_router_gets_send_batch():
    async with lane_to(older_router, deadline=5.0) as served:
        lane = served.lane
        first, second = await asyncio.gather(lane.send([message(1)]), lane.send([message(2), message(3)]))
        assert [r.reply.msg_id for r in first] == ["unary-m1"]
        assert [r.reply.msg_id for r in second] == ["unary-m2", "unary-m3"]
        assert [r.reply.msg_id for r in await lane.send([message(4)])] == ["unary-m4"]
        assert lane.streams_opened == 1


class SlowBatches(RouterServicer):
    """The router's own SendStream and end_streams, over batches that take 20 ms each."""

    def __init__(self):
        super().__init__(None, None, None, None)
        self.seen: list[str] = []

    async def _send_batch(self, requests):
        self.seen += [r.message for r in requests]
        await asyncio.sleep(0.02)
        return [router_pb2.SendResult(reply=router_pb2.SendReply(msg_id=r.message)) for r in requests]


async def test_draining_router_loses_no_batch():
    router = SlowBatches()
    answered: list[str] = []
    failed: list[tuple[str, str]] = []
    stop = asyncio.Event()
    counter = iter(range(1_000_000))

    async def sender(lane: SendLane) -> None:
        while not stop.is_set():
            text = f"d{next(counter)}"
            request = router_pb2.SendRequest(
                tenant="lanetenant", sender=Profile(user_id="sender"), to="nobody", message=text, persist=True
            )
            try:
                (result,) = await lane.send([request])
                answered.append(result.reply.msg_id)
            except Unavailable as exc:
                failed.append((text, exc.msg))

    async with lane_to(router, deadline=5.0) as served:
        lane = served.lane
        senders = [asyncio.ensure_future(sender(lane)) for _ in range(4)]
        await asyncio.sleep(0.3)
        opened = lane.streams_opened
        router.end_streams()
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*senders)
        assert failed == []
        # Every batch reached the router once: none was lost, none sent twice.
        assert sorted(answered) == sorted(router.seen)
        assert len(set(router.seen)) == len(router.seen)
        assert lane.streams_opened > opened
