"""One WebSocket on ``/acc``: login, then requests handled in arrival order."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any

from bson import ObjectId
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from prim import background, ids, telemetry
from prim.errors import Code, PrimError, invalid
from prim.messages import message_from_proto
from prim.pb import auth_pb2, common_pb2, router_pb2

from . import frames
from .frames import FrameError
from .hub import CLOSE_KICK, CLOSE_NORMAL, CLOSE_RESTART, Connection, now_ms
from .node import EdgeNode
from .ws_protocol import OVERSIZED_KEY, PROTOCOL_KEY

log = logging.getLogger("prim.edge.session")

PRE_LOGIN_COMMANDS = ("login", "ping")
# msg requests of one connection that may wait behind the ones with the
# router; past this the connection is not read until those get replies.
MSG_PIPELINE_MAX = 64
# Commands whose handler returns before its reply is sent (see cmd_msg).
PIPELINED_COMMANDS = ("msg",)
SYNC_LIMIT_MAX = 500
BROADCAST_SYNC_LIMIT_MAX = 200
CLIENT_INFO_FIELDS = {"deviceInfo": "device_info", "qua": "qua", "address": "address"}
# The third oversized WebSocket message within a minute closes the connection.
OVERSIZED_CLOSE_COUNT = 3
OVERSIZED_WINDOW_SECONDS = 60.0
CLOSE_TOO_BIG = 1009


def _optional(data: dict, field: str, default: Any) -> Any:
    """Return ``data[field]``, or ``default`` when the field is absent or null."""
    value = data.get(field)
    return default if value is None else value


def _bool(field: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(field, value, "must be true or false")
    return value


def _after_seq(data: dict) -> int:
    if data.get("afterSeq") is None:
        raise PrimError(Code.INVALID_PARAMETER, "missing afterSeq: send 0 for everything")
    return ids.check_int("afterSeq", data["afterSeq"], 0, ids.SEQ_MAX)


def _error_frame(error: PrimError, frame_seq: str, cmd: str) -> bytes:
    """Encode the error reply to a request, and count the error for telemetry."""
    telemetry.record_error(error, "websocket")
    return frames.encode_error(error, frame_seq, cmd)


async def _close_websocket(websocket: WebSocket, code: int, reason: str) -> None:
    """Close ``websocket`` unless it is already gone.

    A module function, not a Session method: the Connection holds it, and a
    bound method would tie the Session and its Connection in a reference
    cycle that only the garbage collector could free.
    """
    if websocket.application_state != WebSocketState.DISCONNECTED:
        await websocket.close(code, reason)


class Session:
    def __init__(self, node: EdgeNode, websocket: WebSocket):
        self.node = node
        self.ws = websocket
        settings = node.settings
        writer = websocket.scope.get("extensions", {}).get(PROTOCOL_KEY)
        if writer is None:
            raise RuntimeError(
                "/acc needs prim's WebSocket protocol: run uvicorn with ws=EdgeWebSocketProtocol"
            )
        self.conn = Connection(
            str(ObjectId()),
            writer,
            functools.partial(_close_websocket, websocket),
            settings.send_queue_frames,
            settings.send_queue_bytes,
        )
        self.logged_in = False
        # msg requests read while earlier ones are with the router, in arrival
        # order: (frame seq, request or the PrimError of an invalid one).
        self._msgs: list[tuple[str, router_pb2.SendRequest | PrimError]] = []
        self._msg_sender: asyncio.Task | None = None
        # Arrival times of recent oversized WebSocket messages, made when first needed.
        self._oversized_at: collections.deque[float] | None = None

    def reply(self, frame_seq: str, cmd: str, data: Any) -> None:
        self.conn.push(frames.encode_reply(frame_seq, cmd, 200, data), cmd)

    def reply_error(self, error: PrimError, frame_seq: str = "", cmd: str = "") -> None:
        self.conn.push(_error_frame(error, frame_seq, cmd), cmd)

    # Lifecycle

    async def run(self) -> None:
        await self.ws.accept()
        try:
            token = self.ws.query_params.get("token")
            if token is not None:
                if not await self._login(token, "", "login", {}):
                    return
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            self.conn.closed = True
            if self.logged_in:
                await self.node.unregister(self.conn)
                log.info("disconnected", extra=self._ids())

    def _ids(self) -> dict[str, str]:
        return {"conn_id": self.conn.conn_id, "tenant": self.conn.tenant, "user_id": self.conn.user_id}

    async def _receive_loop(self) -> None:
        receive = self.ws.receive
        while not self.conn.closed:
            if self.logged_in:
                # The node's sweep closes a logged-in connection that goes
                # silent, so no timer per receive is needed here.
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.node.settings.login_timeout_seconds)
                except TimeoutError:
                    await self.conn.close(CLOSE_NORMAL, "login timeout")
                    return
            if message["type"] == "websocket.disconnect":
                return
            self.conn.last_seen = time.monotonic()
            if OVERSIZED_KEY in message:
                await self._reject_oversized(message[OVERSIZED_KEY])
                continue
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            with telemetry.frame_span(self._ids):
                await self._handle(raw)

    async def _reject_oversized(self, size: int) -> None:
        """Reply 1011 to a WebSocket message over the limit; close with 1009 on repeated ones."""
        limit = self.node.settings.max_message_bytes
        await self._msgs_answered()  # replies keep the order of the requests
        self.reply_error(
            PrimError(Code.TOO_LARGE, f"WebSocket message too large: {size} bytes, maximum {limit}")
        )
        now = time.monotonic()
        if self._oversized_at is None:
            self._oversized_at = collections.deque()
        self._oversized_at.append(now)
        while self._oversized_at[0] <= now - OVERSIZED_WINDOW_SECONDS:
            self._oversized_at.popleft()
        if len(self._oversized_at) >= OVERSIZED_CLOSE_COUNT:
            log.info("closing connection after oversized messages", extra=self._ids())
            await self.conn.close(CLOSE_TOO_BIG, "too many oversized messages")

    async def _handle(self, raw: str | bytes) -> None:
        frame_seq, cmd = "", ""
        try:
            frame_seq, cmd, data = frames.parse_request(raw)
            telemetry.name_frame(cmd if cmd in HANDLERS else "unknown")
            if not self.logged_in and cmd not in PRE_LOGIN_COMMANDS:
                if cmd not in HANDLERS:
                    raise FrameError(Code.UNKNOWN_COMMAND, f"unknown cmd {cmd!r}")
                raise FrameError(Code.NOT_LOGGED_IN, f"not logged in: send login before {cmd!r}")
            handler = HANDLERS.get(cmd)
            if handler is None:
                raise FrameError(Code.UNKNOWN_COMMAND, f"unknown cmd {cmd!r}")
            if cmd not in PIPELINED_COMMANDS:
                # A request waits for the msg requests before it, so replies
                # keep the order of the requests.
                await self._msgs_answered()
            await handler(self, frame_seq, cmd, data)
        except FrameError as exc:
            await self._msgs_answered()
            self.reply_error(exc, exc.frame_seq or frame_seq, exc.cmd or cmd)
        except PrimError as exc:
            await self._msgs_answered()
            self.reply_error(exc, frame_seq, cmd)
        except Exception:
            log.exception("request failed", extra={**self._ids(), "cmd": cmd})
            await self._msgs_answered()
            self.reply_error(PrimError(Code.SERVER_ERROR, "server error"), frame_seq, cmd)

    # Commands

    async def cmd_login(self, frame_seq: str, cmd: str, data: dict) -> None:
        if self.logged_in:
            raise PrimError(Code.OPERATION_FAILED, "already logged in on this connection")
        for key in CLIENT_INFO_FIELDS:
            if data.get(key) is not None and not isinstance(data[key], str):
                raise invalid(key, data[key], "must be a string")
        token = data.get("token")
        if not isinstance(token, str) or not token:
            # A missing token is a bad token: reply 1003 and close with 4001.
            error = PrimError(Code.UNAUTHORIZED, "invalid token: missing or not a string")
            self.reply_error(error, frame_seq, cmd)
            await self.conn.close(CLOSE_KICK, "unauthorized")
            return
        await self._login(token, frame_seq, cmd, data)

    async def _login(self, token: str, frame_seq: str, cmd: str, data: dict) -> bool:
        """Verify the token and record the connection; on failure reply 1003 and close 4001."""
        try:
            info = await self.node.verify_token(token)
            self._check_origin(info)
        except PrimError as exc:
            if exc.code not in (Code.UNAUTHORIZED, Code.FORBIDDEN):
                self.reply_error(exc, frame_seq, cmd)
                return False
            self.reply_error(exc, frame_seq, cmd)
            await self.conn.close(CLOSE_KICK, "unauthorized")
            return False
        if self.node.draining:
            self.conn.push(frames.encode_reply("", "reconnect", 200, {"reason": "server restart"}), "reconnect")
            await self.conn.close(CLOSE_RESTART, "server restart")
            return False
        self._fill_connection(info, data)
        await self.node.register(self.conn, info.device_policy, info.max_devices)
        self.logged_in = True
        log.info("logged in", extra={**self._ids(), "app_platform": info.app_platform})
        self.reply(frame_seq, cmd, frames.user_dict(self.conn.user))
        return True

    def _check_origin(self, info: auth_pb2.TokenInfo) -> None:
        origin = self.ws.headers.get("origin")
        if info.allowed_origins and origin is not None and origin not in info.allowed_origins:
            raise PrimError(Code.FORBIDDEN, f"origin {origin!r} is not allowed for this tenant")

    def _fill_connection(self, info: auth_pb2.TokenInfo, data: dict) -> None:
        client = self.ws.client
        now = now_ms()
        user = common_pb2.User(
            acc_ip=self.node.http_host,
            acc_port=self.node.http_port,
            app_platform=info.app_platform,
            sys_account=info.tenant,
            user_id=info.user_id,
            avatar=info.avatar,
            nickname=info.nickname,
            client_ip=client.host if client else "",
            client_port=str(client.port) if client else "",
            login_time=now,
            heartbeat_time=now,
            node_id=self.node.node_id,
            conn_id=self.conn.conn_id,
        )
        for key, attr in CLIENT_INFO_FIELDS.items():
            value = data.get(key)
            if isinstance(value, str):
                setattr(user, attr, value[:256])
        self.conn.user = user
        self.conn.tenant = info.tenant
        self.conn.user_id = info.user_id
        self.conn.token_id = info.token_id
        self.conn.expires_at = info.expires_at

    async def cmd_ping(self, frame_seq: str, cmd: str, data: dict) -> None:
        self.reply(frame_seq, cmd, "pong")

    async def cmd_heartbeat(self, frame_seq: str, cmd: str, data: dict) -> None:
        now = now_ms()
        self.conn.user.heartbeat_time = now
        self.reply(frame_seq, cmd, {"heartbeatTime": now})

    # msg requests are pipelined: the receive loop goes on reading while
    # they are with the router. The ones read meanwhile go to the router
    # together, in one batch call, once the earlier ones have replies, so
    # the router stores a connection's messages in the order it sent them.

    async def cmd_msg(self, frame_seq: str, cmd: str, data: dict) -> None:
        try:
            request: router_pb2.SendRequest | PrimError = self._send_request(data)
        except PrimError as exc:
            request = exc
        self._msgs.append((frame_seq, request))
        if self._msg_sender is None:
            self._msg_sender = background.spawn(self._send_msgs())
        elif len(self._msgs) >= MSG_PIPELINE_MAX:
            await self._msgs_answered()

    async def _msgs_answered(self) -> None:
        """Wait until every msg request read so far has its reply."""
        if self._msg_sender is not None:
            await asyncio.shield(self._msg_sender)

    async def _send_msgs(self) -> None:
        # NOTE: msg requests read before a kick are still sent after it,
        # because they arrived while the token was valid.
        try:
            while self._msgs:
                group, self._msgs = self._msgs, []
                requests = [r for _, r in group if isinstance(r, router_pb2.SendRequest)]
                replies = iter(self.node.send_messages(requests) if requests else ())
                # The group went out in one batch, so its replies come back
                # together and leave in one socket write, in request order.
                out: list[bytes] = []
                for frame_seq, request in group:
                    if isinstance(request, PrimError):
                        out.append(_error_frame(request, frame_seq, "msg"))
                        continue
                    try:
                        reply = await next(replies)
                    except PrimError as exc:
                        out.append(_error_frame(exc, frame_seq, "msg"))
                    except Exception:
                        log.exception("request failed", extra={**self._ids(), "cmd": "msg"})
                        out.append(_error_frame(PrimError(Code.SERVER_ERROR, "server error"), frame_seq, "msg"))
                    else:
                        data = {"msgId": reply.msg_id, "seq": reply.seq, "time": reply.time}
                        out.append(frames.encode_reply(frame_seq, "msg", 200, data))
                self.conn.push_frames(out, "msg")
        finally:
            self._msg_sender = None

    def _send_request(self, data: dict) -> router_pb2.SendRequest:
        """Check a msg request's fields and make its SendRequest."""
        settings = self.node.settings
        to = ids.check_user_id("to", data.get("to"))
        message = ids.check_text("message", data.get("message"), settings.max_message_bytes)
        # null in an optional field means absent, as in a REST body.
        msg_type = ids.check_choice("msgType", _optional(data, "msgType", "info"), ids.MSG_TYPES)
        cont_type = ids.check_choice(
            "msgContType", _optional(data, "msgContType", "text"), ids.MSG_CONT_TYPES
        )
        client_msg_id = _optional(data, "clientMsgId", "")
        if not isinstance(client_msg_id, str) or len(client_msg_id) > 128:
            raise invalid("clientMsgId", client_msg_id, "must be a string of at most 128 characters")
        persist = _bool("persist", data.get("persist"), True)
        user = self.conn.user
        return router_pb2.SendRequest(
            tenant=self.conn.tenant,
            sender=common_pb2.Profile(user_id=user.user_id, nickname=user.nickname, avatar=user.avatar),
            to=to,
            message=message,
            msg_type=msg_type,
            msg_cont_type=cont_type,
            client_msg_id=client_msg_id,
            persist=persist,
            origin_conn_id=self.conn.conn_id,
        )

    async def cmd_sync(self, frame_seq: str, cmd: str, data: dict) -> None:
        after = _after_seq(data)
        limit = ids.check_int("limit", _optional(data, "limit", 100), 1, SYNC_LIMIT_MAX)
        page = await self.node.router.call(
            "Sync",
            router_pb2.SyncRequest(
                tenant=self.conn.tenant, user_id=self.conn.user_id, after_seq=after, limit=limit
            ),
        )
        self.reply(
            frame_seq,
            cmd,
            {"messages": [message_from_proto(m) for m in page.messages], "hasMore": page.has_more},
        )

    async def cmd_sync_broadcast(self, frame_seq: str, cmd: str, data: dict) -> None:
        """Reply with the tenant's stored broadcasts after ``afterSeq``, for a client that missed pushes."""
        after = _after_seq(data)
        limit = ids.check_int("limit", _optional(data, "limit", 50), 1, BROADCAST_SYNC_LIMIT_MAX)
        page = await self.node.router.call(
            "BroadcastHistory",
            router_pb2.BroadcastHistoryRequest(tenant=self.conn.tenant, after_seq=after, limit=limit),
        )
        self.reply(
            frame_seq,
            cmd,
            {"messages": [message_from_proto(m) for m in page.messages], "hasMore": page.has_more},
        )

    async def cmd_exit(self, frame_seq: str, cmd: str, data: dict) -> None:
        self.reply(frame_seq, cmd, None)
        await self.conn.close(CLOSE_NORMAL, "exit")
        await self.node.unregister(self.conn)


HANDLERS = {
    "login": Session.cmd_login,
    "ping": Session.cmd_ping,
    "heartbeat": Session.cmd_heartbeat,
    "msg": Session.cmd_msg,
    "sync": Session.cmd_sync,
    "syncBroadcast": Session.cmd_sync_broadcast,
    "exit": Session.cmd_exit,
}
