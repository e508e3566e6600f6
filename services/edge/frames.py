"""The frame codec of ``/acc``: parse requests, encode replies and pushes.

A request is ``{"seq": str, "cmd": str, "data": object}``; a reply echoes the
request's ``seq`` and ``cmd`` with ``{"code", "codeMsg", "data"}``. Nothing
here does I/O, so the codec is tested without sockets.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

from prim.errors import SHOWN_VALUE_MAX_CHARS, Code, PrimError, invalid

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

CODE_MESSAGES = {
    Code.OK: "ok",
    Code.NOT_LOGGED_IN: "not logged in",
    Code.INVALID_PARAMETER: "invalid parameter",
    Code.INVALID_USER_ID: "invalid user id",
    Code.UNAUTHORIZED: "unauthorized",
    Code.SERVER_ERROR: "server error",
    Code.NOT_FOUND: "not found",
    Code.OPERATION_FAILED: "operation failed",
    Code.UNKNOWN_COMMAND: "unknown command",
    Code.TOO_LARGE: "too large",
    Code.RATE_LIMITED: "rate limited",
    Code.FORBIDDEN: "forbidden",
}


class FrameError(PrimError):
    """A request that cannot be handled, with whatever seq and cmd were readable."""

    def __init__(self, code: Code, msg: str, frame_seq: str = "", cmd: str = ""):
        super().__init__(code, msg)
        self.frame_seq = frame_seq
        self.cmd = cmd


def parse_request(raw: str | bytes) -> tuple[str, str, dict[str, Any]]:
    """Return (seq, cmd, data) of a request frame or raise FrameError."""
    try:
        frame = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _decode_error(raw) from None
    if not isinstance(frame, dict):
        raise FrameError(
            Code.INVALID_PARAMETER, f"invalid frame: expected a JSON object, got {type(frame).__name__}"
        )
    # A null seq is an absent one, as null is for every optional field.
    frame_seq = frame.get("seq")
    if frame_seq is None:
        frame_seq = ""
    cmd = frame.get("cmd")
    readable_cmd = cmd if isinstance(cmd, str) else ""
    if not isinstance(frame_seq, str):
        raise _invalid_field("seq", frame_seq, "must be a string", "", readable_cmd)
    if not isinstance(cmd, str):
        raise _invalid_field("cmd", cmd, "must be a string", frame_seq)
    data = frame.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _invalid_field("data", data, "must be an object", frame_seq, cmd)
    return frame_seq, cmd, data


def _invalid_field(field: str, value: Any, why: str, frame_seq: str, cmd: str = "") -> FrameError:
    """Build the error for an invalid ``seq``, ``cmd`` or ``data``, worded as other fields' are."""
    error = invalid(field, value, why)
    return FrameError(error.code, error.msg, frame_seq, cmd)


def _decode_error(raw: str | bytes) -> FrameError:
    """Build the error for a frame msgspec could not decode.

    When one value is the fault (a lone surrogate, or a number out of
    range), the error names its field and echoes the frame's seq and cmd.
    """
    found = find_fault(raw, "frame")
    if found is None:
        return FrameError(Code.INVALID_PARAMETER, "invalid frame: not JSON")
    frame, field, detail = found
    frame_seq = cmd = ""
    if isinstance(frame, dict):
        frame_seq, cmd = _readable(frame.get("seq")), _readable(frame.get("cmd"))
        data = frame.get("data")
        # A field of data is named as in the command's other errors, without "data.".
        in_data = _fault(data, "") if isinstance(data, dict) else None
        if in_data is not None:
            field, detail = in_data
    return FrameError(Code.INVALID_PARAMETER, f"invalid {field}{detail}", frame_seq, cmd)


class _OutOfRange:
    """A JSON number msgspec rejects as out of range, kept as written."""

    def __init__(self, literal: str):
        self.literal = literal


# The most digits an integer may have: Python's and msgspec's limit alike.
_INT_MAX_DIGITS = 4300
_SURROGATE = ": not valid UTF-8 (lone surrogate escape)"


def _parse_float(literal: str) -> float | _OutOfRange:
    value = float(literal)
    return _OutOfRange(literal) if math.isinf(value) else value


def _parse_int(literal: str) -> int | _OutOfRange:
    if len(literal.lstrip("-")) > _INT_MAX_DIGITS:
        return _OutOfRange(literal)
    return int(literal)


def find_fault(raw: str | bytes, name: str) -> tuple[Any, str, str] | None:
    """Explain why msgspec rejected a document that is JSON in all but one value.

    Python's json module reads escapes of half a surrogate pair and numbers
    past a float's range, which msgspec rejects. It also reads NaN and
    Infinity, which are rejected here as msgspec rejects them. Return the
    document, the path of the first faulty value and the end of an error
    message about it, such as ``" 1e400: number out of range"``. ``name``
    is the path of a document that is not an object. Return None for a
    document that is not JSON, or has no such value.
    """
    try:
        document = json.loads(
            raw, parse_constant=_reject, parse_float=_parse_float, parse_int=_parse_int
        )
    except ValueError:
        return None
    found = _fault(document, "" if isinstance(document, dict) else name)
    return None if found is None else (document, *found)


def _fault(value: Any, path: str) -> tuple[str, str] | None:
    """Return the path of the first value in ``value`` that msgspec rejects, and why.

    Keys of nested objects are joined with dots and list positions are
    written ``[i]``.
    """
    if isinstance(value, _OutOfRange):
        shown = value.literal
        if len(shown) > SHOWN_VALUE_MAX_CHARS:
            shown = shown[:SHOWN_VALUE_MAX_CHARS] + f"... ({len(shown)} characters)"
        return path or "value", f" {shown}: number out of range"
    if isinstance(value, str):
        return None if _encodes(value) else (path or "value", _SURROGATE)
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(key):
                return path or "key", _SURROGATE
            found = _fault(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _fault(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _readable(value: object) -> str:
    """Return ``value`` when it is a string that a reply can echo, else an empty string."""
    if isinstance(value, str) and _encodes(value):
        return value
    return ""


def encode_reply(frame_seq: str, cmd: str, code: int, data: Any = None, code_msg: str | None = None) -> bytes:
    if code_msg is None:
        code_msg = CODE_MESSAGES.get(code, "error")
    return _encoder.encode(
        {"seq": frame_seq, "cmd": cmd, "response": {"code": code, "codeMsg": code_msg, "data": data}}
    )


def encode_error(error: PrimError, frame_seq: str = "", cmd: str = "") -> bytes:
    return encode_reply(frame_seq, cmd, int(error.code), None, error.msg)


def user_dict(user) -> dict[str, Any]:
    """Convert a ``prim.v1.User`` into the contract's User record."""
    return {
        "accIp": user.acc_ip,
        "accPort": user.acc_port,
        "appPlatform": user.app_platform,
        "sysAccount": user.sys_account,
        "userId": user.user_id,
        "avatar": user.avatar,
        "nickname": user.nickname,
        "clientIp": user.client_ip,
        "clientPort": user.client_port,
        "loginTime": user.login_time,
        "heartbeatTime": user.heartbeat_time,
        "logOutTime": user.log_out_time,
        "address": user.address,
        "qua": user.qua,
        "deviceInfo": user.device_info,
        "isLogoff": user.is_logoff,
    }
