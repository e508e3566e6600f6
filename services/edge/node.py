"""The edge node: its peers, its hub and the loops that keep presence true.

Every third of the presence TTL the node re-registers itself and refreshes
the full records of all its connections, so entries of a dead node expire
and entries lost by a Redis restart come back. Every second it closes
connections that went silent and kicks those whose token expired.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time

from prim import background
from prim.batching import Coalescer
from prim.config import Settings
from prim.errors import Code, PrimError, Unimplemented
from prim.messages import push_frame
from prim.pb import (
    auth_pb2,
    auth_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from prim.rpc import Peer

from .direct import DirectSender
from .hub import CLOSE_KICK, CLOSE_NORMAL, CLOSE_RESTART, Connection, Hub, now_ms
from .sending import SendLane

log = logging.getLogger("prim.edge")

REFRESH_CHUNK = 1000
# Messages in one batch to the router.
SEND_BATCH_MAX = 256
# After presence returned UNIMPLEMENTED for DisconnectBatch (a version older
# than this edge), removals use one Disconnect call each for this long, and
# then DisconnectBatch is tried again.
DISCONNECT_BATCH_RETRY_SECONDS = 60.0


def _pass_on(reply: asyncio.Future, sent: asyncio.Future) -> None:
    """Give ``reply`` the outcome of ``sent``."""
    if reply.done():
        return
    if sent.cancelled():
        reply.cancel()
    elif sent.exception() is not None:
        reply.set_exception(sent.exception())
    else:
        reply.set_result(sent.result())


def _batch_outcomes(results, field: str) -> list:
    """Turn the per-item results of a batch call into values or PrimErrors, in order.

    Each result carries either ``field`` (code 0) or a contract code and message.
    """
    return [
        getattr(result, field) if result.code == 0 else PrimError(Code(result.code), result.msg)
        for result in results
    ]


class EdgeNode:
    def __init__(self, settings: Settings):
        self.settings = settings
        host, _, port = settings.http_listen.rpartition(":")
        self.http_host, self.http_port = host, port
        self.node_id = settings.node_id or f"{socket.gethostname()}-{port}"
        self.grpc_addr = settings.advertise_addr or settings.listen
        self.started_at = now_ms()
        self.hub = Hub()
        self.draining = False
        token, deadline = settings.service_token, settings.grpc_deadline_seconds
        self.auth = Peer("auth", settings.auth_addr, auth_pb2_grpc.AuthStub, "prim.v1.Auth", service_token=token, deadline=deadline)
        self.presence = Peer(
            "presence", settings.presence_addr, presence_pb2_grpc.PresenceStub, "prim.v1.Presence", service_token=token, deadline=deadline
        )
        self.router = Peer(
            "router", settings.router_addr, router_pb2_grpc.RouterStub, "prim.v1.Router", service_token=token, deadline=deadline
        )
        # Messages that arrive while a batch is in flight to the router go out
        # together in the next batch, on one SendStream call.
        self._send_lane = SendLane(self.router, deadline)
        self._sends: Coalescer[router_pb2.SendRequest, router_pb2.SendReply] = Coalescer(
            self._send_batch, max_batch=SEND_BATCH_MAX, max_in_flight=4
        )
        # Sender of the online-only messages that skip the router (see direct.py).
        self.direct: DirectSender | None = None
        if settings.direct_live:
            self.direct = DirectSender(self.hub, self.node_id, self.presence, settings)
        # Logins of a connect storm share VerifyTokens calls the same way.
        self._token_checks: Coalescer[str, auth_pb2.TokenInfo] = Coalescer(
            self._verify_batch, max_batch=256, max_in_flight=4
        )
        self._connects: Coalescer[presence_pb2.ConnectRequest, presence_pb2.ConnectReply] = (
            Coalescer(self._connect_batch, max_batch=256, max_in_flight=4)
        )
        # So do the removals of a closing storm, such as a network drop.
        self._disconnects: Coalescer[presence_pb2.DisconnectRequest, presence_pb2.DisconnectReply] = (
            Coalescer(self._disconnect_batch, max_batch=256, max_in_flight=4)
        )
        self._single_disconnects_until = 0.0
        self._tasks: list[asyncio.Task] = []
        self._refresh_task: asyncio.Task | None = None
        # Set when the node drains: the refresh loop ends after its current round.
        self._stopping = asyncio.Event()

    async def _connect_batch(
        self, requests: list[presence_pb2.ConnectRequest]
    ) -> list[presence_pb2.ConnectReply | PrimError]:
        reply = await self.presence.call(
            "ConnectBatch", presence_pb2.ConnectBatchRequest(requests=requests)
        )
        return _batch_outcomes(reply.results, "reply")

    async def _disconnect_batch(
        self, requests: list[presence_pb2.DisconnectRequest]
    ) -> list[presence_pb2.DisconnectReply | PrimError]:
        if time.monotonic() >= self._single_disconnects_until:
            try:
                reply = await self.presence.call(
                    "DisconnectBatch", presence_pb2.DisconnectBatchRequest(requests=requests)
                )
                return _batch_outcomes(reply.results, "reply")
            except Unimplemented:
                log.warning(
                    "presence has no DisconnectBatch; removing connections with Disconnect",
                    extra={"retry_in_seconds": DISCONNECT_BATCH_RETRY_SECONDS},
                )
                self._single_disconnects_until = time.monotonic() + DISCONNECT_BATCH_RETRY_SECONDS
        return await asyncio.gather(*(self._disconnect_one(request) for request in requests))

    async def _disconnect_one(
        self, request: presence_pb2.DisconnectRequest
    ) -> presence_pb2.DisconnectReply | PrimError:
        try:
            return await self.presence.call("Disconnect", request)
        except PrimError as exc:
            return exc

    async def verify_token(self, token: str) -> auth_pb2.TokenInfo:
        """Return the identity of a token; raise PrimError 1003 when it is not valid."""
        return await self._token_checks.submit(token)

    async def _verify_batch(self, tokens: list[str]) -> list[auth_pb2.TokenInfo | PrimError]:
        reply = await self.auth.call(
            "VerifyTokens",
            auth_pb2.VerifyTokensRequest(
                requests=[auth_pb2.VerifyTokenRequest(token=token) for token in tokens]
            ),
        )
        return _batch_outcomes(reply.results, "info")

    async def send_counted(self, request: router_pb2.SendRequest) -> router_pb2.SendReply:
        """Send one message and return its reply with the connections it reached now.

        Raise PrimError on failure. A stored message goes through the router's
        Send call, not the batched stream, because this reply waits for the
        deliveries, which a batch reply does not.
        """
        direct = self.direct
        if direct is None:
            return await self.router.call("Send", request)
        if direct.takes([request]):
            return await direct.send_counted(request)
        resent = direct.resent(request)
        if resent is not None:
            return resent
        earlier = direct.in_flight([request])
        if earlier:
            await self._wait_confirmed(earlier)
        sent = asyncio.ensure_future(self.router.call("Send", request))
        sent.add_done_callback(functools.partial(direct.routed, request))
        return await sent

    def send_messages(self, requests: list[router_pb2.SendRequest]) -> list[asyncio.Future]:
        """Send messages of one connection in one batch call and return a future of each reply.

        One call keeps their order at the router. A failed message's future has a PrimError.
        A group of online-only messages that this node may send itself goes out without the router.
        """
        if self.direct is None:
            return self._sends.submit_group(requests)
        if self.direct.takes(requests):
            return self.direct.send(requests)
        return self._route(requests)

    def _route(self, requests: list[router_pb2.SendRequest]) -> list[asyncio.Future]:
        """Send a group through the router, behind its sender's direct deliveries on their way."""
        loop = asyncio.get_running_loop()
        replies = [loop.create_future() for _ in requests]
        sends = []
        for request, reply in zip(requests, replies, strict=True):
            resent = self.direct.resent(request)
            if resent is not None:
                reply.set_result(resent)
            else:
                sends.append((request, reply))
        if not sends:
            return replies
        earlier = self.direct.in_flight([request for request, _ in sends])
        if earlier:
            background.spawn(self._route_after(earlier, sends))
        else:
            self._submit_routed(sends)
        return replies

    async def _route_after(self, earlier: list[asyncio.Future], sends) -> None:
        try:
            await self._wait_confirmed(earlier)
        except asyncio.CancelledError:
            for _, reply in sends:
                reply.cancel()
            raise
        self._submit_routed(sends)

    def _submit_routed(self, sends) -> None:
        sent_group = self._sends.submit_group([request for request, _ in sends])
        for (request, reply), sent in zip(sends, sent_group, strict=True):
            sent.add_done_callback(functools.partial(self._routed_reply, request, reply))

    def _routed_reply(
        self, request: router_pb2.SendRequest, reply: asyncio.Future, sent: asyncio.Future
    ) -> None:
        self.direct.routed(request, sent)
        _pass_on(reply, sent)

    async def _wait_confirmed(self, earlier: list[asyncio.Future]) -> None:
        """Wait until the nodes confirmed (or failed) these direct deliveries.

        A routed message waits for them, so that it does not overtake them.
        """
        _, pending = await asyncio.wait(earlier, timeout=self.direct.confirm_wait)
        if pending:
            log.warning(
                "direct deliveries still unconfirmed; sending through the router anyway",
                extra={
                    "node_id": self.node_id,
                    "deliveries": len(pending),
                    "waited_seconds": self.direct.confirm_wait,
                },
            )

    async def _send_batch(
        self, requests: list[router_pb2.SendRequest]
    ) -> list[router_pb2.SendReply | PrimError]:
        return _batch_outcomes(await self._send_lane.send(requests), "reply")

    async def start(self) -> None:
        self._refresh_task = asyncio.create_task(self._refresh_loop())
        self._tasks = [self._refresh_task, asyncio.create_task(self._sweep_loop())]

    async def ready(self) -> bool:
        if self.draining:
            return False
        checks = await asyncio.gather(
            self.auth.check_health(), self.presence.check_health(), self.router.check_health()
        )
        return all(checks)

    # Presence

    def _node(self) -> presence_pb2.Node:
        return presence_pb2.Node(
            node_id=self.node_id,
            grpc_addr=self.grpc_addr,
            http_addr=self.settings.http_listen,
            ttl_seconds=self.settings.presence_ttl_seconds,
            started_at=self.started_at,
        )

    async def refresh_presence(self) -> None:
        await self.presence.call("RegisterNode", self._node())
        users = [conn.user for conn in self.hub if conn.user is not None and not conn.closed]
        for start in range(0, len(users), REFRESH_CHUNK):
            await self.presence.call(
                "Refresh",
                presence_pb2.RefreshRequest(
                    node_id=self.node_id,
                    users=users[start : start + REFRESH_CHUNK],
                    ttl_seconds=self.settings.presence_ttl_seconds,
                ),
            )

    async def _refresh_loop(self) -> None:
        interval = max(1.0, self.settings.presence_ttl_seconds / 3)
        while not self._stopping.is_set():
            try:
                await self.refresh_presence()
            except PrimError as exc:
                log.warning("presence refresh failed; retrying", extra={"node_id": self.node_id, "error": exc.msg})
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
            except TimeoutError:
                pass

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._sweep()
            except Exception:
                log.exception("connection sweep failed", extra={"node_id": self.node_id})

    async def _sweep(self) -> None:
        idle_limit = time.monotonic() - self.settings.heartbeat_timeout_seconds
        now = now_ms()
        for conn in self.hub:
            if conn.closed:
                continue
            if conn.last_seen < idle_limit:
                log.info("closing idle connection", extra={"conn_id": conn.conn_id, "user_id": conn.user_id, "tenant": conn.tenant})
                await conn.close(CLOSE_NORMAL, "heartbeat timeout")
            elif conn.expires_at and conn.expires_at <= now:
                background.spawn(self._check_expiry(conn))
        if self.direct is not None:
            self.direct.forget_expired()

    async def _check_expiry(self, conn: Connection) -> None:
        """Kick a connection whose token expired, unless its lifetime was extended."""
        try:
            info = await self.auth.call("VerifyToken", auth_pb2.VerifyTokenRequest(token_id=conn.token_id))
            conn.expires_at = info.expires_at
        except PrimError as exc:
            if exc.code == 1003:
                await self.kick(conn, "expired")
            else:
                log.warning("token check failed", extra={"conn_id": conn.conn_id, "error": exc.msg})

    async def register(self, conn: Connection, device_policy: str, max_devices: int) -> None:
        """Record a new connection in presence and kick the ones it replaces."""
        self.hub.add(conn)
        reply = await self._connects.submit(
            presence_pb2.ConnectRequest(
                user=conn.user,
                device_policy=device_policy,
                max_devices=max_devices,
                ttl_seconds=self.settings.presence_ttl_seconds,
            )
        )
        if reply.replaced:
            await self.router.call(
                "Kick",
                router_pb2.KickRequest(tenant=conn.tenant, targets=list(reply.replaced), reason="replaced"),
            )

    async def unregister(self, conn: Connection) -> None:
        if not self.hub.remove(conn):
            return
        try:
            await self._disconnects.submit(
                presence_pb2.DisconnectRequest(tenant=conn.tenant, user_id=conn.user_id, conn_id=conn.conn_id)
            )
        except PrimError as exc:
            # The entry expires with its TTL instead.
            log.warning("presence removal failed", extra={"conn_id": conn.conn_id, "error": exc.msg})

    async def kick(self, conn: Connection, reason: str) -> None:
        log.info("kicking connection", extra={"conn_id": conn.conn_id, "tenant": conn.tenant, "user_id": conn.user_id, "reason": reason})
        conn.push(push_frame("kick", {"reason": reason}), "kick")
        await conn.close(CLOSE_KICK, reason)
        await self.unregister(conn)

    # Shutdown

    async def drain(self) -> None:
        """Send every client ``reconnect``, close with 1012 and remove presence."""
        self.draining = True
        self._stopping.set()
        conns = list(self.hub)
        log.info("draining", extra={"node_id": self.node_id, "connections": len(conns)})
        frame = push_frame("reconnect", {"reason": "server restart"})
        for conn in conns:
            conn.push(frame, "reconnect")
        await asyncio.gather(
            *(conn.close(CLOSE_RESTART, "server restart", flush_timeout=2.0) for conn in conns),
            return_exceptions=True,
        )
        # A refresh round still in flight would register the node again after
        # UnregisterNode, so it finishes first.
        if self._refresh_task is not None:
            await asyncio.wait([self._refresh_task])
        try:
            await self.presence.call(
                "UnregisterNode", presence_pb2.UnregisterNodeRequest(node_id=self.node_id)
            )
        except PrimError as exc:
            log.warning("unregistering node failed", extra={"node_id": self.node_id, "error": exc.msg})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._send_lane.close()
        if self.direct is not None:
            await self.direct.close()
        for peer in (self.auth, self.presence, self.router):
            await peer.close()
