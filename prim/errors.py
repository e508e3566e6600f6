"""Errors with the contract's numeric codes.

A :class:`PrimError` carries the contract code, the HTTP status and the gRPC
status that stand for it, so one exception crosses every boundary: a service
aborts a gRPC call with it, the edge turns the call's failure back into it,
and then into a REST reply or a WebSocket error reply.
"""

from __future__ import annotations

import enum
import reprlib

import grpc
import orjson

from prim import telemetry


class Code(enum.IntEnum):
    OK = 200
    NOT_LOGGED_IN = 1000
    INVALID_PARAMETER = 1001
    INVALID_USER_ID = 1002
    UNAUTHORIZED = 1003
    SERVER_ERROR = 1004
    NOT_FOUND = 1005
    OPERATION_FAILED = 1009
    UNKNOWN_COMMAND = 1010
    TOO_LARGE = 1011
    RATE_LIMITED = 1012
    FORBIDDEN = 1013


# Contract code -> (HTTP status, gRPC status).
_STATUS = {
    Code.NOT_LOGGED_IN: (401, grpc.StatusCode.UNAUTHENTICATED),
    Code.INVALID_PARAMETER: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Code.INVALID_USER_ID: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Code.UNAUTHORIZED: (401, grpc.StatusCode.UNAUTHENTICATED),
    Code.SERVER_ERROR: (500, grpc.StatusCode.INTERNAL),
    Code.NOT_FOUND: (404, grpc.StatusCode.NOT_FOUND),
    Code.OPERATION_FAILED: (409, grpc.StatusCode.ALREADY_EXISTS),
    Code.UNKNOWN_COMMAND: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Code.TOO_LARGE: (413, grpc.StatusCode.INVALID_ARGUMENT),
    Code.RATE_LIMITED: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Code.FORBIDDEN: (403, grpc.StatusCode.PERMISSION_DENIED),
}

# gRPC status -> contract code, for failures that carry no "prim-code".
_FROM_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: Code.INVALID_PARAMETER,
    grpc.StatusCode.UNAUTHENTICATED: Code.UNAUTHORIZED,
    grpc.StatusCode.NOT_FOUND: Code.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: Code.OPERATION_FAILED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Code.RATE_LIMITED,
    grpc.StatusCode.PERMISSION_DENIED: Code.FORBIDDEN,
}

CODE_METADATA_KEY = "prim-code"
# Characters of an invalid value that an error message repeats.
SHOWN_VALUE_MAX_CHARS = 100
RETRY_AFTER_METADATA_KEY = "prim-retry-after"


class PrimError(Exception):
    """A failure the caller can act on, with the contract's code."""

    def __init__(
        self,
        code: Code,
        msg: str,
        *,
        http_status: int | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(msg)
        self.code = Code(code)
        self.msg = msg
        default_http, self.grpc_status = _STATUS.get(self.code, (500, grpc.StatusCode.INTERNAL))
        self.http_status = http_status or default_http
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"PrimError({self.code.value}, {self.msg!r})"


class Unimplemented(PrimError):
    """A peer lacks the method called, such as a version older than the caller during an upgrade."""

    def __init__(self, msg: str):
        super().__init__(Code.SERVER_ERROR, msg)


class Unavailable(PrimError):
    """A dependency (a peer service, MongoDB, Redis) cannot be reached."""

    def __init__(self, msg: str):
        super().__init__(Code.SERVER_ERROR, msg, http_status=503)
        self.grpc_status = grpc.StatusCode.UNAVAILABLE


# A repr for values nested too deeply for repr(): three levels, then "[...]".
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3


def _json_text(value: object) -> str:
    """Return ``value`` as JSON text, or as its repr when orjson cannot encode it."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # An integer past 64 bits, or a value nested deeper than orjson's limit.
        try:
            return repr(value)
        except RecursionError:
            return _SHORT_REPR.repr(value)


def invalid(field: str, value: object, why: str, code: Code = Code.INVALID_PARAMETER) -> PrimError:
    """Build an invalid-parameter error whose message names the field and value.

    A value longer than ``SHOWN_VALUE_MAX_CHARS`` is cut, so a large input
    does not come back whole in the reply and in the logs.
    """
    if value is None:
        # An absent field, or JSON null: Python's None would mean nothing to a client.
        return PrimError(code, f"missing {field}")
    # Strings keep Python's quotes ('a b'). Other values are shown as JSON, so a
    # client reads true and {"a":1} as it sent them. A value orjson cannot encode,
    # such as an integer past 64 bits, falls back to Python's repr.
    value_text = repr(value) if isinstance(value, str) else _json_text(value)
    return PrimError(code, f"invalid {field} {shorten(value_text)}: {why}")


def shorten(text: str) -> str:
    """Return ``text`` cut to ``SHOWN_VALUE_MAX_CHARS``, followed by its full length when cut."""
    if len(text) <= SHOWN_VALUE_MAX_CHARS:
        return text
    return text[:SHOWN_VALUE_MAX_CHARS] + f"... ({len(text)} characters)"


async def abort(context: grpc.aio.ServicerContext, error: PrimError) -> None:
    """End a gRPC call with the error's status, code and message."""
    telemetry.record_error(error, "grpc")
    metadata = [(CODE_METADATA_KEY, str(error.code.value))]
    if error.retry_after is not None:
        metadata.append((RETRY_AFTER_METADATA_KEY, str(error.retry_after)))
    context.set_trailing_metadata(tuple(metadata))
    await context.abort(error.grpc_status, error.msg)


def from_rpc_error(exc: grpc.aio.AioRpcError, peer: str) -> PrimError:
    """Turn a failed gRPC call back into the error the callee raised."""
    status = exc.code()
    trailing = dict(exc.trailing_metadata() or ())
    raw_code = trailing.get(CODE_METADATA_KEY)
    if raw_code is not None:
        retry_after = trailing.get(RETRY_AFTER_METADATA_KEY)
        error = PrimError(
            Code(int(raw_code)),
            exc.details() or "",
            retry_after=int(retry_after) if retry_after else None,
        )
        return error
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"{peer} unavailable: {status.name.lower()}")
    if status == grpc.StatusCode.UNIMPLEMENTED:
        return Unimplemented(f"{peer} failed: unimplemented")
    code = _FROM_GRPC.get(status, Code.SERVER_ERROR)
    return PrimError(code, f"{peer} failed: {status.name.lower()}")
