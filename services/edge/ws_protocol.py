"""uvicorn's WebSocket protocol with a message size limit that keeps the connection open.

uvicorn (0.55, ``websockets_sansio_impl``) closes a connection with 1009 as
soon as a message passes ``ws_max_size``. The edge must instead reply to an
oversized message with an error reply and close only after repeated offences.
:class:`EdgeWebSocketProtocol` parses frames with :class:`LimitedServerProtocol`,
which discards the payload of an oversized message as it arrives (whether it
comes in one frame or in many continuation frames) and then reports the
message's size to the application as a ``websocket.receive`` event that has
the ``OVERSIZED_KEY`` key.

Memory use per connection stays at most ``ws_max_size`` (the fragments read
before the limit was passed) plus one socket read.

Per-message compression is not offered, so the limit applies to the bytes on
the wire and a compressed message cannot expand past it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import socket
import struct
from collections.abc import Generator, Sequence

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol

# Key of a ``websocket.receive`` event that stands for a discarded message;
# its value is the size of the message in bytes.
OVERSIZED_KEY = "prim.oversized_bytes"
# Key in the connection scope's "extensions" whose value is the connection's
# EdgeWebSocketProtocol, for writing frames without the ASGI send path.
PROTOCOL_KEY = "prim.websocket"

# Headers of unmasked, final text frames (RFC 6455 section 5.2) whose payload
# fits the 7-bit length field, by payload length.
_SHORT_TEXT_HEADERS = [bytes((0x81, length)) for length in range(126)]


def text_frame_header(length: int) -> bytes:
    """Header of a server's unfragmented text frame with ``length`` bytes of payload."""
    if length < 126:
        return _SHORT_TEXT_HEADERS[length]
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)

_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
# RFC 6455 section 5.5: control frames carry at most 125 bytes of payload.
_CONTROL_MAX_BYTES = 125


@dataclasses.dataclass(frozen=True)
class OversizedMessage:
    """Event of a data message whose payload passed the limit and was discarded."""

    size: int


@dataclasses.dataclass(frozen=True)
class _Header:
    first_byte: int
    opcode: Opcode
    fin: bool
    length: int
    size: int  # bytes of the header itself, mask included


class _MessageLimit(Protocol):
    """Frame parsing that skips the rest of a message once it passes ``max_message_size``."""

    _skipped: int | None = None  # bytes of the message being discarded, if any

    def parse(self) -> Generator[None]:
        try:
            while True:
                if (yield from self.reader.at_eof()):
                    raise EOFError("unexpected end of stream")
                header = yield from self._peek_header()
                if header.opcode in _DATA_OPCODES and self._over_limit(header):
                    yield from self._skip_frame(header)
                    continue
                frame = yield from Frame.parse(
                    self.reader.read_exact,
                    mask=True,
                    max_size=None,  # checked by _over_limit before the payload is read
                    extensions=self.extensions,
                )
                self.recv_frame(frame)
        except ProtocolError as exc:
            self.fail(CloseCode.PROTOCOL_ERROR, str(exc))
            self.parser_exc = exc
        except EOFError as exc:
            self.fail(CloseCode.ABNORMAL_CLOSURE, str(exc))
            self.parser_exc = exc
        except UnicodeDecodeError as exc:
            self.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            self.parser_exc = exc
        except PayloadTooBig as exc:  # pragma: no cover - only raised by extensions
            self.fail(CloseCode.MESSAGE_TOO_BIG, str(exc))
            self.parser_exc = exc
        except Exception as exc:
            self.logger.exception("parser failed")
            self.fail(CloseCode.INTERNAL_ERROR)
            self.parser_exc = exc
        # fail() replaced this parser by discard(); step no further.
        yield
        raise AssertionError("parse() shouldn't step after error")

    def _over_limit(self, header: _Header) -> bool:
        if self._skipped is not None:
            return True
        if self.max_message_size is None:
            return False
        return (self.current_size or 0) + header.length > self.max_message_size

    def _peek_header(self) -> Generator[None, None, _Header]:
        """Wait for a whole frame header and decode it without consuming it."""
        buffer = self.reader.buffer
        while True:
            if len(buffer) >= 2:
                length = buffer[1] & 0x7F
                size = 2 + {126: 2, 127: 8}.get(length, 0) + (4 if buffer[1] & 0x80 else 0)
                if len(buffer) >= size:
                    break
            if self.reader.eof:
                raise EOFError(f"stream ends after {len(buffer)} bytes, inside a frame header")
            yield
        try:
            opcode = Opcode(buffer[0] & 0x0F)
        except ValueError:
            raise ProtocolError("invalid opcode") from None
        if not buffer[1] & 0x80:
            raise ProtocolError("incorrect masking")
        if length == 126:
            length = int.from_bytes(buffer[2:4], "big")
        elif length == 127:
            length = int.from_bytes(buffer[2:10], "big")
        if opcode not in _DATA_OPCODES and length > _CONTROL_MAX_BYTES:
            raise ProtocolError("control frame too long")
        return _Header(buffer[0], opcode, bool(buffer[0] & 0x80), length, size)

    def _skip_frame(self, header: _Header) -> Generator[None]:
        """Consume a data frame of an oversized message and drop its payload as it arrives."""
        in_message = self.current_size is not None or self._skipped is not None
        if header.opcode is Opcode.CONT and not in_message:
            raise ProtocolError("unexpected continuation frame")
        if header.opcode is not Opcode.CONT and in_message:
            raise ProtocolError("expected a continuation frame")
        if header.first_byte & 0x70:
            raise ProtocolError("reserved bits must be 0")  # no extension is negotiated
        yield from self.reader.read_exact(header.size)
        if self._skipped is None:
            self._skipped = self.current_size or 0
            # Not None while the message lasts, so a close frame inside it is an error.
            self.current_size = 0

        remaining = header.length
        buffer = self.reader.buffer
        while remaining:
            if not buffer:
                if self.reader.eof:
                    raise EOFError("stream ends inside an oversized frame")
                yield
                continue
            dropped = min(len(buffer), remaining)
            del buffer[:dropped]
            remaining -= dropped
        self._skipped += header.length

        if header.fin:
            self.events.append(OversizedMessage(self._skipped))
            self._skipped = None
            self.current_size = None


class LimitedServerProtocol(ServerProtocol, _MessageLimit):
    """websockets' server protocol whose data frames go through :class:`_MessageLimit`.

    ``ServerProtocol.parse`` reads the opening handshake and then calls
    ``super().parse()``, which this base order resolves to ``_MessageLimit.parse``.
    """


class _Inbox:
    """The part of ``asyncio.Queue`` that uvicorn's protocol uses, for one reader.

    An ``asyncio.Queue`` takes about 3 KiB (measured with tracemalloc on
    Python 3.11), mostly empty deques, and every idle connection keeps one.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list = []
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self):
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag:
    """The part of ``asyncio.Event`` that uvicorn's protocol uses, without an event's deque."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


def _drop_tracebacks(error: BaseException | None) -> None:
    """Clear the tracebacks of ``error`` and of every exception in its cause and context chain.

    websockets keeps a failed handshake's exception on the protocol, and its
    traceback's frames refer back to the protocols, a cycle that only the
    garbage collector could free.
    """
    errors, seen = [error], set()
    while errors:
        error = errors.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        errors += (error.__cause__, error.__context__)


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with :class:`LimitedServerProtocol` inside.

    Pass it as ``uvicorn.Config(ws=EdgeWebSocketProtocol, ws_max_size=...)``.

    It also bounds what a client that stops reading can hold up. uvicorn's
    ``send`` waits while the transport is paused (more than 64 KiB unsent), so
    a stuck client stops the connection's writer and its send queue grows
    until the hub closes it as a slow consumer. The kernel buffers in front of
    the transport are capped by ``send_buffer_bytes``, since the kernel's
    automatic sizing (up to ``net.ipv4.tcp_wmem``, often 4 MiB) would let a
    stuck client absorb thousands of frames before the writer ever waits.
    """

    # SO_SNDBUF of each WebSocket, in bytes (Linux doubles it); 0 keeps the
    # kernel's automatic sizing. prim-edge sets it from its settings at start.
    send_buffer_bytes = 0

    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Slimmer stand-ins for uvicorn's asyncio.Queue and asyncio.Event.
        self.queue = _Inbox()
        self.writable = _Flag()
        self.conn = LimitedServerProtocol(
            max_size=config.ws_max_size, logger=logging.getLogger("uvicorn.error")
        )

    def connection_made(self, transport) -> None:
        # During the upgrade the transport still names uvicorn's HTTP protocol, whose
        # parser refers back to it in a cycle. No HTTP is parsed here again.
        http = transport.get_protocol()
        if http is not self and getattr(http, "parser", None) is not None:
            http.parser = None
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if self.send_buffer_bytes and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # The scope and this protocol refer to each other through the entry
        # handle_connect made. Removing it lets reference counting free both
        # once the session ends, instead of the garbage collector.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(PROTOCOL_KEY, None)
        _drop_tracebacks(self.conn.handshake_exc)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][PROTOCOL_KEY] = self

    # Direct frame writes. The hub writes text frames here instead of through
    # ASGI send, which costs an await, a dict and a pass through websockets'
    # frame serializer per frame. A server's frames are unmasked and the edge
    # negotiates no extension, so a frame is a header and the payload. The
    # websockets state machine has nothing to track for them.

    def can_write(self) -> bool:
        """Return whether frames written now go out: the connection is open and the transport not paused."""
        return self.writable.is_set() and self.is_open()

    def is_open(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        )

    def write_text_frames(self, payloads: Sequence[bytes]) -> bool:
        """Write each UTF-8 payload as one text frame; return False when the connection is not open.

        Writing ignores a paused transport (the caller checks :meth:`can_write`
        and waits with :meth:`wait_writable`), so the transport buffers what
        the kernel does not take.
        """
        if not self.is_open():
            return False
        if len(payloads) == 1:
            payload = payloads[0]
            self.transport.write(text_frame_header(len(payload)) + payload)
            return True
        parts = []
        for payload in payloads:
            parts.append(text_frame_header(len(payload)))
            parts.append(payload)
        self.transport.write(b"".join(parts))
        return True

    async def wait_writable(self) -> None:
        """Wait until the transport takes more data or the connection is gone."""
        await self.writable.wait()

    async def send(self, message) -> None:
        if message["type"] == "websocket.accept":
            await super().send(message)
            # The handshake request and response are not read again; an idle
            # connection should not hold them.
            self.request = self.response = None
            return
        if message["type"] != "websocket.close" or self.writable.is_set() or self.disconnected:
            await super().send(message)
            return
        # The peer stopped reading, so the transport stays paused and uvicorn
        # would hold this close until the peer reads again. Queue the close
        # frame behind the unsent data at once. If the peer does not read it
        # and send its own close frame within close_timeout, drop the
        # connection, because a graceful close would wait for the unsent
        # data forever.
        self.writable.set()
        await super().send(message)
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            if isinstance(event, OversizedMessage):
                self.handle_oversized(event)
            elif isinstance(event, Request):
                self.handle_connect(event)
            elif event.opcode == Opcode.CONT:
                self.handle_cont(event)
            elif event.opcode == Opcode.TEXT:
                self.handle_text(event)
            elif event.opcode == Opcode.BINARY:
                self.handle_bytes(event)
            elif event.opcode == Opcode.PING:
                self.handle_ping()
            elif event.opcode == Opcode.PONG:
                self.handle_pong(event)
            elif event.opcode == Opcode.CLOSE:
                self.handle_close(event)

    def handle_oversized(self, event: OversizedMessage) -> None:
        # Drop the fragments kept from before the limit was passed.
        self.frames = []
        if self.close_sent:
            return
        self.queue.put_nowait(
            {"type": "websocket.receive", "bytes": b"", OVERSIZED_KEY: event.size}
        )
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
