"""The edge's batches of messages to the router, over one long-lived SendStream call.

A unary SendBatch call costs both processes more than a message on an open
stream: a new call, its metadata, the interceptors and a task on the router.
At 1,000 messages/s every batch contains one message, and a py-spy profile
put the unary call at about a third of the sending edge's CPU time.
:class:`SendLane` writes each batch on one stream with an id and matches the
replies by id.

It keeps the unary call's promises:

* A batch that gets no reply within the deadline fails with Unavailable,
  like a call past its deadline, and the stream is retired: batches after it
  go on a new one. A reply that comes later is dropped.
* When the stream breaks, the batches waiting on it fail with Unavailable.
  Neither is retried, since the router may have sent them (SendBatch is not
  retried either).
* A stopping router reads no more batches and ends its calls cleanly once
  it has replied to the batches it read. The batches still waiting at a clean
  end, and those whose write found the call ended, were never received, so
  each goes once more on a new call.
* A router without SendStream (an older version during a rolling upgrade)
  returns UNIMPLEMENTED and sends nothing. The lane then sends every batch
  with SendBatch, those on the failed call included.

A stream lives at most ``ROTATE_SECONDS``, less than the grace the router's
gRPC server gives a connection past its maximum age, so a stream is retired
and drained before the server would cut it with batches in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import grpc

from prim import background, telemetry
from prim.errors import Unavailable
from prim.pb import router_pb2
from prim.rpc import SEND_STREAM_HEADER, Peer

log = logging.getLogger("prim.edge.sending")

ROTATE_SECONDS = 20.0


class _Stream:
    """One SendStream call and the batches waiting for its replies."""

    def __init__(self, call, opened_at: float):
        self.call = call
        self.opened_at = opened_at
        self.waiting: dict[int, asyncio.Future] = {}
        # gRPC takes one write at a time on a call.
        self.writing = asyncio.Lock()
        self.retired = False
        self.answered = False  # the router sent the call's headers


class SendLane:
    def __init__(self, router: Peer, deadline: float):
        self.router = router
        self.deadline = deadline
        self._ids = itertools.count(1)
        self._stream: _Stream | None = None
        self._unary = False
        self._closed = False
        self.streams_opened = 0

    async def send(self, requests: list[router_pb2.SendRequest]) -> list[router_pb2.SendResult]:
        """Send one batch and return its results, one per request; raise PrimError on failure."""
        if self._unary:
            return await self._send_unary(requests)
        try:
            return await self._send_on_stream(requests)
        except _NotWritten:
            # The call failed before this batch was written, or ended cleanly
            # with it unread. Either way the router never saw the batch, so a
            # new call gets it once more.
            try:
                return await self._send_on_stream(requests)
            except _NotWritten as exc:
                raise Unavailable(f"router unavailable: {exc.error}") from None

    async def _send_on_stream(self, requests) -> list[router_pb2.SendResult]:
        stream = self._current()
        batch_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        stream.waiting[batch_id] = future
        request = router_pb2.SendStreamRequest(
            id=batch_id,
            requests=requests,
            trace=telemetry.trace_carrier([telemetry.current_span_context()]),
        )
        try:
            async with asyncio.timeout(self.deadline):
                try:
                    async with stream.writing:
                        if not stream.answered:
                            await self._handshake(stream)
                        await stream.call.write(request)
                except asyncio.InvalidStateError:
                    # grpc raises this before sending when the call has ended.
                    self._drop(stream)
                    raise _NotWritten() from None
                except (Exception, asyncio.CancelledError) as exc:
                    # A write on a call that broke can raise CancelledError. Only
                    # a cancellation of this task (or the timeout) ends the send.
                    if background.cancelling():
                        raise
                    self._broken(stream, exc)
                return await future
        except TimeoutError:
            stream.waiting.pop(batch_id, None)
            log.warning(
                "router reply timed out; retiring the send stream",
                extra={"batch": batch_id, "messages": len(requests), "deadline": self.deadline},
            )
            self._retire(stream)
            raise Unavailable(f"router unavailable: no reply within {self.deadline} s") from None
        except _Unimplemented:
            return await self._send_unary(requests)
        finally:
            stream.waiting.pop(batch_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved here when this send raised something else

    async def _handshake(self, stream: _Stream) -> None:
        """Wait for the router's headers on a new call before its first write.

        The router sends ``SEND_STREAM_HEADER`` at once; a router without
        SendStream ends the call with UNIMPLEMENTED and no headers instead.
        Writing before knowing could turn that status into INTERNAL, which
        would not tell that the router sent nothing.
        """
        headers = await stream.call.initial_metadata()
        if any(key == SEND_STREAM_HEADER for key, _ in headers or ()):
            stream.answered = True
            return
        raise _EndedEarly(await stream.call.code(), await stream.call.details())

    async def _send_unary(self, requests) -> list[router_pb2.SendResult]:
        reply = await self.router.call("SendBatch", router_pb2.SendBatchRequest(requests=requests))
        return list(reply.results)

    def _current(self) -> _Stream:
        """Return the stream to write on, opening one when there is none or it is due for rotation."""
        now = time.monotonic()
        stream = self._stream
        if stream is not None and now - stream.opened_at > ROTATE_SECONDS:
            self._retire(stream)
            stream = None
        if stream is None:
            stream = self._stream = _Stream(self.router.open_stream("SendStream"), now)
            self.streams_opened += 1
            background.spawn(self._read(stream), name="send stream reader")
        return stream

    def _retire(self, stream: _Stream) -> None:
        """Stop writing on ``stream``. It ends once its waiting batches have their replies."""
        if self._stream is stream:
            self._stream = None
        if not stream.waiting:
            # Also ends a retired stream whose last waiting batch timed out.
            stream.retired = True
            stream.call.cancel()
        elif not stream.retired:
            stream.retired = True
            background.spawn(_half_close(stream))

    async def _read(self, stream: _Stream) -> None:
        try:
            while True:
                reply = await stream.call.read()
                if reply is grpc.aio.EOF:
                    # A clean end: the router replies to every batch it read
                    # before it ends a call, so those still waiting were not read.
                    self._drop(stream)
                    self._unread(stream)
                    return
                if reply.draining:
                    # The router is stopping. It still replies to the batches it has read.
                    log.info("router is stopping; retiring the send stream", extra={"waiting": len(stream.waiting)})
                    self._retire(stream)
                    if stream.call.cancelled():
                        return
                    continue
                future = stream.waiting.pop(reply.id, None)
                if future is not None and not future.done():
                    future.set_result(list(reply.results))
                if stream.retired and not stream.waiting:
                    stream.call.cancel()
                    return
        except asyncio.CancelledError as exc:
            if background.cancelling():
                raise
            self._broken(stream, exc)
        except Exception as exc:
            self._broken(stream, exc)

    def _drop(self, stream: _Stream) -> None:
        """Forget a stream that ended, so the next batch opens a new one."""
        if self._stream is stream:
            self._stream = None
        stream.retired = True

    def _unread(self, stream: _Stream) -> None:
        """Send the batches a cleanly ended call left unread on a new call."""
        waiting = list(stream.waiting.values())
        stream.waiting.clear()
        if waiting:
            log.info("router ended the send stream; sending its unread batches again", extra={"batches": len(waiting)})
        for future in waiting:
            if not future.done():
                future.set_exception(_NotWritten())

    def _broken(self, stream: _Stream, exc: BaseException) -> None:
        """Fail the batches waiting on a stream that broke, so the next batch opens a new one."""
        self._drop(stream)
        stream.call.cancel()
        if isinstance(exc, (grpc.aio.AioRpcError, _EndedEarly)):
            status = exc.code()
            error = f"{status.name}: {exc.details()}"
        else:
            status = None
            error = str(exc) or repr(exc)
        waiting = list(stream.waiting.values())
        stream.waiting.clear()
        if status == grpc.StatusCode.UNIMPLEMENTED and not stream.answered:
            if not self._unary:
                log.warning("router has no SendStream; sending with SendBatch", extra={"error": error})
            self._unary = True
            failure: BaseException = _Unimplemented()
        elif not stream.answered and not self._closed:
            # The call failed before the router's headers, so no batch was
            # written on it (see _handshake). They may go once more.
            failure = _NotWritten(error)
            log.info("send stream to router failed to open", extra={"error": error, "batches": len(waiting)})
        else:
            failure = Unavailable(f"router unavailable: {error}")
            if waiting:
                log.warning(
                    "send stream to router broke", extra={"error": error, "batches_failed": len(waiting)}
                )
            elif not self._closed:
                log.info("send stream to router ended", extra={"error": error})
        for future in waiting:
            if not future.done():
                future.set_exception(failure)

    def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._broken(self._stream, ConnectionError("the edge is stopping"))


class _EndedEarly(Exception):
    """A new SendStream call ended before the router's headers."""

    def __init__(self, status: grpc.StatusCode, details: str | None):
        super().__init__(f"{status.name}: {details}")
        self._status, self._details = status, details

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str | None:
        return self._details


class _NotWritten(Exception):
    """The router never received the batch: the call ended before it was written or read."""

    def __init__(self, error: str = "the send stream ended"):
        super().__init__(error)
        self.error = error


class _Unimplemented(Exception):
    """The router has no SendStream method, so the batch goes by SendBatch instead."""


async def _half_close(stream: _Stream) -> None:
    # Behind the lock: a batch that took this stream before it was retired
    # may still be waiting to write, and goes first.
    try:
        async with stream.writing:
            await stream.call.done_writing()
    except (Exception, asyncio.CancelledError):
        stream.call.cancel()
