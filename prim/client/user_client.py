"""A user's long-lived session on ``/acc`` that survives reconnects.

:class:`UserClient` keeps one :class:`~prim.client.user.UserConnection` at a
time. After each login it calls ``sync`` from the last contiguous ``seq`` it
has, paging until ``hasMore`` is false, so messages stored while it was away
are received once and in order. It drops a message whose ``msgId`` it has
already received, and a pushed message that skips a ``seq`` makes it call
``sync`` first, so messages come out in ascending ``seq``.

How the connection ends decides what happens next:

* ``reconnect`` push or close code 1012 (an edge node shutting down): connect
  again at once, to the next URL of the list.
* ``kick`` push (``replaced``, ``revoked``, ``expired``): stop, and raise
  :class:`~prim.client.errors.Kicked` from the iterator, unless the reason is
  in ``reconnect_on_kick``.
* A login rejected with 1003 (token revoked or expired): stop, and raise that
  :class:`~prim.client.errors.ApiError`.
* Anything else (network failure, connection refused, heartbeat timeout):
  connect again after an exponential backoff with full jitter, trying the
  URLs in turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import msgspec
import websockets

from .errors import ApiError, ClientClosed, ClientError, Kicked
from .models import Message, SendResult, User
from .user import UserConnection

log = logging.getLogger("prim.client")

CLOSE_RESTART = 1012
CLOSE_KICK = 4001
# Login replies that end the client: 1003 unauthorized (bad, revoked or expired
# token) and 1013 forbidden (an origin the tenant does not allow).
LOGIN_REJECTED = (1003, 1013)
KICK_REASONS = ("replaced", "revoked", "expired")
# Message ids remembered for dropping duplicates. Older messages are dropped by seq instead.
SEEN_IDS_MAX = 10_000

_STOP = object()
_DISCONNECTED = (ConnectionError, websockets.ConnectionClosed)


class UserClient:
    """An end user's client: login, heartbeats, sending, receiving and reconnecting.

    ``urls`` is one ``ws://host:port/acc`` URL or a list of them (edge nodes
    to try in turn). Use it as an async context manager, or call
    :meth:`connect` and :meth:`close`. Iterate over it to receive
    :class:`~prim.client.models.Message` objects: every message of the user's
    timeline after ``last_seq`` except those sent through this client, plus
    broadcasts and online-only messages (``seq`` 0) while connected.

    With ``last_broadcast_seq`` set (0 for the tenant's whole broadcast
    history), the client also fetches the broadcasts it missed, with
    ``syncBroadcast`` after every login and whenever a pushed broadcast skips
    a ``broadcastSeq``; :attr:`last_broadcast_seq` is the position to keep.

    ``on_state`` is called with ``"connecting"``, ``"connected"``,
    ``"disconnected"`` and finally ``"closed"``.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str,
        *,
        last_seq: int = 0,
        heartbeat_seconds: float = 30.0,
        reconnect_on_kick: bool | Collection[str] = False,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        request_timeout_seconds: float = 10.0,
        send_timeout_seconds: float = 60.0,
        sync_limit: int = 100,
        last_broadcast_seq: int | None = None,
        login_fields: dict[str, str] | None = None,
        on_state: Callable[[str], None] | None = None,
    ):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("urls is empty: give at least one ws:// URL of /acc")
        self.token = token
        self.heartbeat_seconds = heartbeat_seconds
        if reconnect_on_kick is True:
            reconnect_on_kick = KICK_REASONS
        self.reconnect_on_kick = frozenset(reconnect_on_kick or ())
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self.sync_limit = sync_limit
        self.login_fields = dict(login_fields or {})
        self.on_state = on_state

        self.state = "idle"
        self.url: str | None = None
        self.user: User | None = None
        self.kick_reason: str | None = None
        self.error: BaseException | None = None
        self.reconnects = 0

        # Highest seq up to which every message of the timeline was received,
        # and the seqs received beyond it.
        self._last_seq = last_seq
        self._seqs_ahead: set[int] = set()
        # Highest broadcastSeq received; None when missed broadcasts are not fetched.
        self._last_broadcast_seq = last_broadcast_seq
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._own_client_ids: set[str] = set()
        # NOTE: unbounded, so a caller that stops reading messages makes it grow.
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._conn: UserConnection | None = None
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task | None = None

    @property
    def last_seq(self) -> int:
        """The highest seq up to which every message of the user's timeline was received."""
        return self._last_seq

    @property
    def last_broadcast_seq(self) -> int | None:
        """The highest broadcastSeq received, when missed broadcasts are fetched."""
        return self._last_broadcast_seq

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # Lifecycle

    async def __aenter__(self) -> UserClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self, timeout: float | None = 30.0) -> None:
        """Start the client and wait for the first login.

        Raises the ApiError of a rejected token, or TimeoutError when no edge
        node accepted a login within ``timeout`` seconds (the client is then closed).
        """
        if self._runner is not None:
            raise ClientError("connect() was already called on this client")
        self._runner = asyncio.create_task(self._run())
        waiters = [
            asyncio.ensure_future(self._connected.wait()),
            asyncio.ensure_future(self._stopped.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._connected.is_set():
            return
        if self._stopped.is_set():
            raise self.error or ClientClosed("client closed")
        await self.close()
        raise TimeoutError(f"no login on any of {self.urls} within {timeout} s")

    async def close(self) -> None:
        """Log out with ``exit`` and stop, which ends the iterator."""
        if self._closing:
            await self.wait_closed()
            return
        self._closing = True
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                await conn.request("exit", timeout=2.0)
            except (*_DISCONNECTED, ApiError, TimeoutError):
                pass
            await conn.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._stop(None)

    async def wait_closed(self) -> BaseException | None:
        """Wait until the client stopped, and return the error that stopped it, if any."""
        await self._stopped.wait()
        return self.error

    def _stop(self, error: BaseException | None) -> None:
        if self._stopped.is_set():
            return
        self.error = error
        self._connected.clear()
        self._inbox.put_nowait(_STOP)
        self._set_state("closed")
        self._stopped.set()

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                log.exception("on_state callback failed", extra={"state": state})

    # Receiving

    def __aiter__(self) -> UserClient:
        return self

    async def __anext__(self) -> Message:
        item = await self._inbox.get()
        if item is _STOP:
            self._inbox.put_nowait(_STOP)  # so that later calls stop too
            if self.error is not None:
                raise self.error
            raise StopAsyncIteration
        return item

    async def receive(self, timeout: float | None = None) -> Message:
        """Return the next message, or raise StopAsyncIteration, Kicked or ApiError once stopped."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    # Sending

    async def send(
        self,
        to: str,
        message: str,
        *,
        client_msg_id: str | None = None,
        msg_type: str | None = None,
        msg_cont_type: str | None = None,
        persist: bool | None = None,
    ) -> SendResult:
        """Send a message and return the reply once it is stored.

        The ``clientMsgId`` (a random one when not given) makes the send
        idempotent: when the connection drops before the reply, the message is
        sent again with the same id after reconnecting, and the edge returns the
        original reply instead of storing it twice. Raises TimeoutError after
        ``send_timeout_seconds``, ApiError for a rejected message, and the
        client's error once it stopped.
        """
        client_msg_id = client_msg_id or uuid.uuid4().hex
        data = {"to": to, "message": message, "clientMsgId": client_msg_id}
        optional = {"msgType": msg_type, "msgContType": msg_cont_type, "persist": persist}
        data.update({key: value for key, value in optional.items() if value is not None})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout_seconds
        self._own_client_ids.add(client_msg_id)
        try:
            while True:
                conn = await self._wait_connected(deadline)
                left = max(deadline - loop.time(), 0.01)
                try:
                    reply = await conn.request(
                        "msg", data, timeout=min(left, self.request_timeout_seconds)
                    )
                except (*_DISCONNECTED, TimeoutError):
                    if loop.time() >= deadline:
                        raise TimeoutError(
                            f"message to {to!r} not sent within {self.send_timeout_seconds} s"
                        ) from None
                    continue  # sent again with the same clientMsgId
                result = msgspec.convert(reply, SendResult)
                self._mark_seen(result.msg_id)
                self._note_seq(result.seq)
                return result
        finally:
            self._own_client_ids.discard(client_msg_id)

    async def request(self, cmd: str, data: dict[str, Any] | None = None) -> Any:
        """Send one request on the current connection and return its reply's data."""
        conn = self._conn
        if conn is None or not self.connected:
            raise ConnectionError("not connected")
        return await conn.request(cmd, data, timeout=self.request_timeout_seconds)

    async def _wait_connected(self, deadline: float) -> UserConnection:
        loop = asyncio.get_running_loop()
        while True:
            if self._stopped.is_set():
                raise self.error or ClientClosed("client closed")
            if self._connected.is_set() and self._conn is not None and not self._conn.closed:
                return self._conn
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("not connected")
            stopped = asyncio.ensure_future(self._stopped.wait())
            connected = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait(
                    {stopped, connected}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopped.cancel()
                connected.cancel()

    # The connection loop

    async def _run(self) -> None:
        attempt = 0
        index = 0
        try:
            while not self._closing:
                url = self.urls[index % len(self.urls)]
                self._set_state("connecting")
                try:
                    conn = await self._open(url)
                except ApiError as exc:
                    if exc.code in LOGIN_REJECTED:
                        log.warning(
                            "login rejected; stopping", extra={"url": url, "error": exc.msg}
                        )
                        self._stop(exc)
                        return
                    log.warning("login failed; retrying", extra={"url": url, "error": exc.msg})
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    log.info("connection failed; retrying", extra={"url": url, "error": repr(exc)})
                else:
                    attempt = 0
                    outcome = await self._serve(conn, url)
                    if outcome == "stop":
                        return
                    if outcome == "now":
                        index += 1
                        self.reconnects += 1
                        continue
                    self.reconnects += 1
                delay = self._backoff(attempt)
                attempt += 1
                index += 1
                log.info(
                    "reconnecting", extra={"delay_seconds": round(delay, 3), "attempt": attempt}
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("user client failed")
            self._stop(exc)

    def _backoff(self, attempt: int) -> float:
        """Return a delay with full jitter: uniform between 0 and the exponential ceiling."""
        ceiling = min(
            self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** min(attempt, 30)
        )
        return random.uniform(0, ceiling)

    async def _open(self, url: str) -> UserConnection:
        conn = await asyncio.wait_for(
            UserConnection.connect(url, open_timeout=self.request_timeout_seconds),
            self.request_timeout_seconds,
        )
        try:
            login = {"token": self.token, **self.login_fields}
            user = await conn.request("login", login, timeout=self.request_timeout_seconds)
        except BaseException:
            await conn.close()
            raise
        conn.user = user
        self.user = msgspec.convert(user, User)
        return conn

    async def _serve(self, conn: UserConnection, url: str) -> str:
        """Handle one logged-in connection until it closes.

        Returns ``"now"`` to reconnect at once, ``"later"`` to reconnect after a
        backoff, or ``"stop"`` when the client stopped.
        """
        self._conn = conn
        self.url = url
        self.kick_reason = None
        reconnect_requested = False
        self._connected.set()
        self._set_state("connected")
        log.info("connected", extra={"url": url, "user_id": self.user.user_id if self.user else ""})
        heartbeat = asyncio.create_task(self._heartbeat(conn))
        try:
            await self._sync(conn)
            await self._sync_broadcasts(conn)
            while True:
                push = await conn.receive_push()
                if push is None:
                    break
                cmd = push.get("cmd")
                data = (push.get("response") or {}).get("data")
                if cmd == "msg" and isinstance(data, dict):
                    await self._on_pushed_message(conn, data)
                elif cmd == "kick":
                    self.kick_reason = (data or {}).get("reason") or "unknown"
                elif cmd == "reconnect":
                    # The edge node is shutting down: leave now instead of waiting for its close.
                    reconnect_requested = True
                    await conn.close()
        except _DISCONNECTED:
            pass
        except (ApiError, TimeoutError) as exc:
            # sync failed, such as with 1004 while the router is unreachable, so try again later.
            log.warning("sync failed; reconnecting", extra={"url": url, "error": repr(exc)})
        finally:
            heartbeat.cancel()
            self._conn = None
            self._connected.clear()
            if not conn.closed:
                await conn.close()

        if self._closing:
            return "stop"
        code = conn.close_code
        self._set_state("disconnected")
        if self.kick_reason is not None or code == CLOSE_KICK:
            reason = self.kick_reason or "unknown"
            if reason in self.reconnect_on_kick:
                log.info("kicked; reconnecting", extra={"reason": reason})
                return "later"
            log.info("kicked; stopping", extra={"reason": reason})
            self._stop(Kicked(reason))
            return "stop"
        if reconnect_requested or code == CLOSE_RESTART:
            log.info("edge node restarting; reconnecting now", extra={"url": url})
            return "now"
        log.info("disconnected", extra={"url": url, "close_code": code})
        return "later"

    async def _heartbeat(self, conn: UserConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await conn.request("heartbeat", timeout=self.request_timeout_seconds)
            except TimeoutError:
                log.warning("heartbeat timed out; closing the connection")
                await conn.ws.close()
                return
            except _DISCONNECTED:
                return

    # Messages

    async def _sync(self, conn: UserConnection) -> None:
        """Receive the stored messages after the last contiguous seq, page by page."""
        await self._fetch_pages(conn, "sync", self._last_seq, self.sync_limit, lambda m: m.seq)

    async def _sync_broadcasts(self, conn: UserConnection) -> None:
        """Receive the stored broadcasts after the last one received, page by page."""
        if self._last_broadcast_seq is not None:
            await self._fetch_pages(
                conn,
                "syncBroadcast",
                self._last_broadcast_seq,
                min(self.sync_limit, 200),
                lambda m: m.broadcast_seq or 0,
            )

    async def _fetch_pages(
        self, conn: UserConnection, cmd: str, after: int, limit: int, position: Callable[[Message], int]
    ) -> None:
        """Deliver the pages of ``cmd`` from ``after`` on, moving on from each page's last ``position``."""
        while True:
            page = await conn.request(
                cmd, {"afterSeq": after, "limit": limit}, timeout=self.request_timeout_seconds
            )
            messages = [msgspec.convert(item, Message) for item in page["messages"]]
            for message in messages:
                self._deliver(message)
            if not page["hasMore"] or not messages:
                return
            after = position(messages[-1])

    async def _on_pushed_message(self, conn: UserConnection, data: dict[str, Any]) -> None:
        try:
            message = msgspec.convert(data, Message)
        except msgspec.ValidationError as exc:
            log.warning("invalid msg push ignored", extra={"error": str(exc)})
            return
        broadcast_seq = message.broadcast_seq or 0
        if self._last_broadcast_seq is not None and broadcast_seq > self._last_broadcast_seq + 1:
            # Broadcasts before this one were missed, so fetch them first.
            await self._sync_broadcasts(conn)
        if message.seq > self._last_seq + 1 and message.seq not in self._seqs_ahead:
            # A gap: messages before this one were missed, so fetch them first.
            await self._sync(conn)
        self._deliver(message)

    def _deliver(self, message: Message) -> None:
        broadcast_seq = message.broadcast_seq or 0
        if self._last_broadcast_seq is not None and broadcast_seq > self._last_broadcast_seq:
            self._last_broadcast_seq = broadcast_seq
        if message.msg_id in self._seen_ids:
            return
        if message.seq and (message.seq <= self._last_seq or message.seq in self._seqs_ahead):
            return
        self._mark_seen(message.msg_id)
        self._note_seq(message.seq)
        own_user_id = self.user.user_id if self.user else None
        if message.client_msg_id in self._own_client_ids and message.sender.user_id == own_user_id:
            return  # sent by this client, and send() returns it
        self._inbox.put_nowait(message)

    def _mark_seen(self, msg_id: str) -> None:
        self._seen_ids[msg_id] = None
        if len(self._seen_ids) > SEEN_IDS_MAX:
            self._seen_ids.popitem(last=False)

    def _note_seq(self, seq: int) -> None:
        if seq <= self._last_seq:
            return
        self._seqs_ahead.add(seq)
        while self._last_seq + 1 in self._seqs_ahead:
            self._last_seq += 1
            self._seqs_ahead.discard(self._last_seq)
